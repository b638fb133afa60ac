"""Which structures each level labels: nested prefixes of one seeded permutation per molecule, cut into chunks
of fixed positions, so raising a level's count later reuses every full chunk already computed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from polyfid.data_shards.corpus.config import LevelPlan
from polyfid.data_shards.corpus.molecules import Molecule


@dataclass(frozen=True)
class LabelChunk:
    """One labelling task: `level` on structures `indices` of one molecule's structure set."""

    molecule: Molecule
    structure_set: str  # "sampled" or "scan"
    level: str
    forces: bool
    block: int  # position of the chunk in the permutation, in units of chunk_size
    indices: tuple[int, ...]


def permutation(molecule: Molecule, n: int, seed: int) -> np.ndarray:
    """The order in which a molecule's n structures receive labels; the same for every level (nesting)."""
    rng = np.random.default_rng([seed, molecule.index, molecule.role == "heldout"])
    return rng.permutation(n)


def selected(plan: LevelPlan, molecule: Molecule, n: int) -> int:
    """How many of the permutation's first structures `plan` labels for this molecule."""
    if plan.max_heavy_atoms is not None and molecule.heavy_atoms > plan.max_heavy_atoms:
        return 0
    return n if plan.per_molecule is None else min(plan.per_molecule, n)


def label_chunks(
    molecule: Molecule, structure_set: str, n: int, plans: tuple[LevelPlan, ...], seed: int, chunk_size: int
) -> list[LabelChunk]:
    """Every labelling task of one structure set (scans: all structures, in order, at every planned level)."""
    order = np.arange(n) if structure_set == "scan" else permutation(molecule, n, seed)
    out = []
    for plan in plans:
        k = n if structure_set == "scan" else selected(plan, molecule, n)
        for block, start in enumerate(range(0, k, chunk_size)):
            idx = tuple(int(i) for i in order[start : min(start + chunk_size, k)])
            out.append(LabelChunk(molecule, structure_set, plan.level, plan.forces, block, idx))
    return out
