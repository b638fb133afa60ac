"""Real structures for model tests: the demo corpus' GFN2-xTB MD frames (shipped with polyfid) and small periodic
cells."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

import h5py
import numpy as np

from polyfid.data_shards.manifest import LevelStats
from polyfid.data_shards.record import LevelLabels, Record
from polyfid.data_shards.reference_energies import accumulate
from polyfid.data_shards.stream.batch import Batch, collate

MD_XTB = resources.files("polyfid.data_shards") / "demo_corpus" / "md_xtb.h5"
LEVEL = "gfn2-xtb"
LEVELS = ["b3lyp/def2-svp", "gfn2-xtb"]  # sorted, as a manifest's level axis
ELEMENTS = [1, 6, 7, 8]


@lru_cache(maxsize=4)
def demo_records(frames: tuple[int, ...] = (0,), molecules: tuple[str, ...] | None = None) -> tuple[Record, ...]:
    """Frames of each demo MD molecule with their GFN2-xTB energies and forces."""
    out = []
    with h5py.File(MD_XTB, "r") as f:
        for name in molecules or sorted(f):
            g = f[name]
            numbers = g["atomic_numbers"][:].astype(np.int64)
            for k in frames:
                out.append(
                    Record(
                        id=f"{name}/{k}",
                        dataset="md",
                        numbers=numbers,
                        positions=g["positions"][k].astype(np.float64),
                        labels={LEVEL: LevelLabels(float(g["gfn2_xtb/energy"][k]), g["gfn2_xtb/forces"][k])},
                    )
                )
    return tuple(out)


def make_batch(records: Sequence[Record]) -> Batch:
    datasets = sorted({r.dataset for r in records})
    return collate(list(records), LEVELS, datasets)


def record(numbers: Sequence[int], positions: np.ndarray, cell: np.ndarray | None = None, rid: str = "x") -> Record:
    pbc = None if cell is None else np.ones(3, dtype=bool)
    return Record(
        id=rid,
        dataset="md",
        numbers=np.asarray(numbers, dtype=np.int64),
        positions=np.asarray(positions, float),
        cell=None if cell is None else np.asarray(cell, float),
        pbc=pbc,
    )


@lru_cache(maxsize=1)
def level_stats() -> dict[str, LevelStats]:
    """Real least-squares E0 for gfn2-xtb (all demo molecules, frame 0..4) and a shifted copy for a second head."""
    stats = accumulate(list(demo_records((0, 1, 2, 3, 4))))[LEVEL].fit(["md"])
    other = LevelStats(
        e0={z: v + 0.5 * int(z) for z, v in stats.e0.items()},
        n_energy=1,
        n_forces=0,
        residual_per_atom_mean=0.0,
        residual_per_atom_std=0.02,
        force_rms=None,
    )
    return {"gfn2-xtb": stats, "b3lyp/def2-svp": other}


def diamond_record(rattle: float = 0.05, seed: int = 0) -> Record:
    """Primitive (non-orthogonal, 2-atom) diamond cell, slightly rattled; cell smaller than the cutoff."""
    from ase.build import bulk

    atoms = bulk("C", "diamond", a=3.567)
    atoms.rattle(rattle, seed=seed)
    return record(atoms.numbers, atoms.positions, np.array(atoms.cell), "diamond")


def water_box_record(seed: int = 0) -> Record:
    """Two water molecules in a periodic 4 A box (images within the cutoff)."""
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    w = molecule("H2O")
    offsets = np.array([[0.8, 0.9, 1.0], [2.6, 2.7, 2.9]])
    pos = np.concatenate([w.positions + off for off in offsets]) + rng.normal(0, 0.05, (6, 3))
    return record(np.concatenate([w.numbers, w.numbers]), pos, np.diag([4.0, 4.2, 4.4]), "water_box")


def supercell(rec: Record, reps: tuple[int, int, int]) -> Record:
    from ase import Atoms

    atoms = Atoms(numbers=rec.numbers, positions=rec.positions, cell=rec.cell, pbc=True).repeat(reps)
    return record(atoms.numbers, atoms.positions, np.array(atoms.cell), rec.id + f"x{reps}")
