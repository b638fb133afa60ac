"""The canonical record: one geometry with every level of theory it was computed at."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
from pydantic import AfterValidator


def normalize_level(name: str) -> str:
    """Canonical level-of-theory name: lower case, no spaces (``'wB97X/6-31G*'`` -> ``'wb97x/6-31g*'``)."""
    out = re.sub(r"\s+", "", str(name)).lower()
    if not out:
        raise ValueError("empty level-of-theory name")
    return out


# A level name in any config: normalised on load, so `MP2/cc-pVDZ` means the level sources.yaml calls mp2/cc-pvdz.
LevelName = Annotated[str, AfterValidator(normalize_level)]


@dataclass
class LevelLabels:
    """Labels at one level of theory. Energy in eV (total energy), forces in eV/Angstrom or None."""

    energy: float | None = None
    forces: np.ndarray | None = None


@dataclass
class Record:
    """One structure. Positions in Angstrom; `labels` maps a normalised level name to its labels."""

    id: str
    dataset: str
    numbers: np.ndarray  # (N,) int
    positions: np.ndarray  # (N, 3) float64, Angstrom
    labels: dict[str, LevelLabels] = field(default_factory=dict)
    cell: np.ndarray | None = None  # (3, 3) float64, Angstrom
    pbc: np.ndarray | None = None  # (3,) bool
    charge: int | None = None
    multiplicity: int | None = None

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])
