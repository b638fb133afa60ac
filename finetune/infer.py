"""`polyfid predict`: energies, forces (stress for cells) and, for a committee, their spread, for every frame of
any file ase.io reads, written as extxyz."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from tqdm import tqdm

from polyfid.core.atomic import atomic_path
from polyfid.core.errors import PolyfidError
from polyfid.models.calculator import PolyfidCalculator, has_stress
from polyfid.models.package import LoadedPackage


class InputFileError(PolyfidError, ValueError):
    """A structure file ase.io cannot read, or one with no frames."""


def read_frames(path: Path, index: str = ":", fmt: str | None = None) -> list[Atoms]:
    """Every frame of `path` (any ase.io format; `index` as ase.io.read's), refused in one line naming the file."""
    import ase.io

    if not path.is_file():
        raise InputFileError(f"{path}: no such structure file")
    try:
        frames = ase.io.read(path, index=index, format=fmt)
    except Exception as exc:  # ase.io raises anything from ValueError to StopIteration on a bad file
        raise InputFileError(f"{path}: ase.io cannot read it: {type(exc).__name__}: {exc}") from None
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise InputFileError(f"{path}: no frames (index {index!r})")
    return frames


def predict_frames(
    members: list[LoadedPackage],
    level: str,
    frames: list[Atoms],
    *,
    max_atoms: int = 4096,
    device: str = "cpu",
    dtype: str | None = None,
    show_progress: bool = True,
) -> list[Atoms]:
    """Labelled copies of `frames`: energy and forces (and stress, for frames with a periodic cell) from `level`'s
    head; with a committee also ``energy_std`` (info), ``forces_std`` (per-atom array) and ``stress_std``."""
    calc = PolyfidCalculator(members, level, device=device, dtype=dtype)
    cells = [k for k, a in enumerate(frames) if has_stress(a)]
    molecules = [k for k, a in enumerate(frames) if not has_stress(a)]
    results: dict[int, dict[str, Any]] = {}
    with tqdm(total=len(frames), unit="frame", desc=f"predict {level}", disable=None if show_progress else True) as bar:
        for indices, stress in ((molecules, False), (cells, True)):
            out = calc.predict([frames[k] for k in indices], 1 << 30, stress, max_atoms, bar.update)
            results.update(zip(indices, out, strict=True))
    labelled = []
    for k, atoms in enumerate(frames):
        res = results[k]
        copy = atoms.copy()
        copy.calc = SinglePointCalculator(
            copy, **{p: res[p] for p in ("energy", "free_energy", "forces", "stress") if p in res}
        )
        copy.info["polyfid_level"] = level
        if "energy_std" in res:
            copy.info["energy_std"] = res["energy_std"]
            copy.arrays["forces_std"] = np.asarray(res["forces_std"])
        if "stress_std" in res:
            copy.info["stress_std"] = np.asarray(res["stress_std"])
        labelled.append(copy)
    return labelled


def write_extxyz(path: Path, frames: list[Atoms]) -> Path:
    """`frames` written atomically as extxyz (their calculators' results as energy/forces/stress)."""
    import ase.io

    with atomic_path(path) as tmp:
        ase.io.write(tmp, frames, format="extxyz")
    return path
