"""Starting geometries of real molecules (ASE's G2 set): the pretraining set and the held-out target."""

from __future__ import annotations

import numpy as np
from ase import Atoms

#: Pretraining molecules (G2 names): small H/C/N/O species around ethanol's chemistry.
PRETRAIN: tuple[str, ...] = ("CH3OH", "CH3CHO", "H3CNH2", "HCOOH", "CH3CN", "H2CO", "C2H4", "H2O")

#: Target molecule, absent from pretraining: ethanol.
TARGET: str = "CH3CH2OH"


def get(name: str) -> Atoms:
    """A fresh copy of the G2 geometry of `name` (Angstrom), centred at the origin."""
    from ase.build import molecule  # here, not at the top: ~0.3 s, and every `polyfid` start imports this module

    atoms = molecule(name)
    atoms.positions -= atoms.positions.mean(axis=0)
    atoms.pbc = False
    return atoms


def hoc_c_dihedral(atoms: Atoms) -> tuple[int, int, int, int]:
    """Indices (H, O, C, C) of ethanol's hydroxyl torsion H-O-C-C, found from connectivity."""
    z = atoms.numbers
    d = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
    o = int(np.flatnonzero(z == 8)[0])
    h = _closest(d[o], z, 1)
    c1 = _closest(d[o], z, 6)
    c2 = _closest(d[c1], z, 6, exclude=c1)
    return h, o, c1, c2


def _closest(row: np.ndarray, z: np.ndarray, element: int, exclude: int = -1) -> int:
    """Index of the atom of `element` nearest to the atom whose distance row is `row`."""
    idx = [i for i in np.flatnonzero(z == element) if i != exclude]
    return int(min(idx, key=lambda i: row[i]))
