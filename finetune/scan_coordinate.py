"""The coordinate a scan varies, found from its geometries: the dihedral, bond or angle that changes most along it,
so scan plots read in degrees or Angstrom instead of point numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase.data import chemical_symbols, covalent_radii

MIN_DIHEDRAL_RANGE = 10.0  # degrees: a dihedral that moves less than this is not what the scan drives
MIN_BOND_RANGE = 0.02  # Angstrom
MIN_ANGLE_RANGE = 2.0  # degrees


@dataclass
class ScanCoordinate:
    values: np.ndarray  # one per geometry (dihedrals unwrapped along the scan)
    label: str  # e.g. "H3-O2-C1-C0 dihedral (degrees)"


def _bonds(numbers: np.ndarray, positions: np.ndarray) -> list[tuple[int, int]]:
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    r = covalent_radii[numbers]
    i, j = np.nonzero(np.triu(d < 1.25 * (r[:, None] + r[None]), 1))
    return list(zip(i.tolist(), j.tolist(), strict=True))


def _dihedral(p: np.ndarray, a: int, b: int, c: int, d: int) -> np.ndarray:
    """Dihedral angles (degrees) a-b-c-d over frames `p` (F, N, 3)."""
    b0, b1, b2 = p[:, a] - p[:, b], p[:, c] - p[:, b], p[:, d] - p[:, c]
    b1n = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - (b0 * b1n).sum(-1, keepdims=True) * b1n
    w = b2 - (b2 * b1n).sum(-1, keepdims=True) * b1n
    x = (v * w).sum(-1)
    y = (np.cross(b1n, v) * w).sum(-1)
    return np.degrees(np.arctan2(y, x))


def _angle(p: np.ndarray, a: int, b: int, c: int) -> np.ndarray:
    u, v = p[:, a] - p[:, b], p[:, c] - p[:, b]
    cos = (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def scan_coordinate(numbers: np.ndarray, frames: Sequence[np.ndarray]) -> ScanCoordinate | None:
    """The driven coordinate of a scan of one molecule (`frames` in scan order), or None when nothing moves
    enough (or the frames are not one molecule): dihedrals first, then bonds, then angles."""
    if len(frames) < 3 or len({f.shape for f in frames}) != 1:
        return None
    p = np.stack(frames)
    bonds = _bonds(numbers, p[0])
    neighbours: dict[int, set[int]] = {}
    for i, j in bonds:
        neighbours.setdefault(i, set()).add(j)
        neighbours.setdefault(j, set()).add(i)
    name = lambda *atoms: "-".join(f"{chemical_symbols[numbers[k]]}{k}" for k in atoms)  # noqa: E731
    best: tuple[float, np.ndarray, str] | None = None
    for b, c in bonds:
        for a in neighbours[b] - {c}:
            for d in neighbours[c] - {b, a}:
                values = np.degrees(np.unwrap(np.radians(_dihedral(p, a, b, c, d))))
                values -= 360.0 * np.round(values.mean() / 360.0)  # the turn nearest zero: e.g. -110..240, not -470
                spread = float(np.ptp(values))
                if spread >= MIN_DIHEDRAL_RANGE and (best is None or spread > best[0]):
                    best = (spread, values, f"{name(a, b, c, d)} dihedral (degrees)")
    if best is None:
        for i, j in bonds:
            values = np.linalg.norm(p[:, i] - p[:, j], axis=-1)
            spread = float(np.ptp(values))
            if spread >= MIN_BOND_RANGE and (best is None or spread > best[0]):
                best = (spread, values, f"{name(i, j)} distance (Angstrom)")
    if best is None:
        for b, around in neighbours.items():
            for a in around:
                for c in around - {a}:
                    values = _angle(p, a, b, c)
                    spread = float(np.ptp(values))
                    if a < c and spread >= MIN_ANGLE_RANGE and (best is None or spread > best[0]):
                        best = (spread, values, f"{name(a, b, c)} angle (degrees)")
    return None if best is None else ScanCoordinate(best[1], best[2])
