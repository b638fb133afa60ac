"""ASE calculator for a packaged PolyfidModel: one explicitly chosen level of theory (head), no default head."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from polyfid.data_shards.record import Record, normalize_level
from polyfid.data_shards.stream.batch import Batch, collate
from polyfid.models.heads import UnknownHeadError
from polyfid.models.package import LoadedPackage, load_package

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class BaselineRequiredError(UnknownHeadError):
    """A Delta-learning head was asked for without the calculator of the method it corrects."""


class StressNotAvailableError(PropertyNotImplementedError):
    """Stress was asked for a structure with no periodic direction (no cell volume)."""


def atoms_to_record(atoms: Atoms, rid: str = "ase") -> Record:
    """An unlabelled Record of `atoms` (cell and pbc kept only when some direction is periodic); total charge and
    spin multiplicity from `atoms.info["charge"]` and `atoms.info["spin"]` (fairchem's keys; absent: a neutral
    singlet)."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    periodic = bool(pbc.any())
    charge, multiplicity = _state(atoms)
    return Record(
        id=rid,
        dataset="ase",
        numbers=np.asarray(atoms.numbers, dtype=np.int64),
        positions=np.asarray(atoms.positions, dtype=np.float64),
        cell=np.array(atoms.cell.array, dtype=np.float64) if periodic else None,
        pbc=pbc.copy() if periodic else None,
        charge=charge,
        multiplicity=multiplicity,
    )


def _state(atoms: Atoms) -> tuple[int, int]:
    """(total charge, spin multiplicity) of `atoms` (fairchem's info keys; absent: a neutral singlet)."""
    return int(atoms.info.get("charge", 0)), int(atoms.info.get("spin", 1))


def atoms_to_batch(atoms_list: Sequence[Atoms]) -> Batch:
    """Collate structures (no labels) into a Batch with data_shards' collate."""
    return collate([atoms_to_record(a, f"ase/{k}") for k, a in enumerate(atoms_list)], [], ["ase"])


class PolyfidCalculator(Calculator):
    """energy / free_energy (eV), forces (eV/A) and, for periodic cells, stress (eV/A^3, Voigt, ASE sign:
    (1/V) dE/d(strain)) from one head of a polyfid model package.

    `level` is required and must be one of the package's heads. `dtype` (e.g. torch.float64 for MD) casts the
    model; per-head E0 stays float64 and energies are always float64. A head fitted as a correction to a baseline
    method (Delta-learning, `model.heads.baselines`) needs `baseline`, an ASE calculator of that method (e.g.
    tblite's GFN2-xTB): its results are added to the head's.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]  # noqa: RUF012 (ASE's interface)

    def __init__(
        self,
        package: str | Path | LoadedPackage,
        level: str,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        baseline: Calculator | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        loaded = package if isinstance(package, LoadedPackage) else load_package(package, map_location=device)
        model = loaded.model
        dtype = _DTYPES[dtype] if isinstance(dtype, str) else dtype
        device = torch.device(device)
        ref = next(model.parameters())
        if (dtype is not None and dtype != model.dtype) or ref.device != device:
            if isinstance(package, LoadedPackage):
                model = copy.deepcopy(model)  # do not cast the caller's model in place
            model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
        self.package = loaded
        self.model = model.eval()
        self.device = device
        if not isinstance(level, str) or normalize_level(level) not in self.model.head_names:
            raise UnknownHeadError(
                f"level {level!r} is not a head of this package; choose one of {self.model.head_names}"
            )
        self.level = normalize_level(level)
        method = self.model.heads.baselines.get(self.level)
        if method is not None and baseline is None:
            raise BaselineRequiredError(
                f"head {self.level!r} predicts {self.level} minus {method} (Delta-learning): pass baseline=, an ASE "
                f"calculator of {method}, whose energy and forces are added"
            )
        self.baseline = baseline if method is not None else None

    @property
    def heads(self) -> list[str]:
        return self.model.head_names

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's changes, plus "charge_spin" when `atoms.info`'s charge or spin differs from the last calculation's
        (ASE compares no `info`, so a new charge on the same geometry would return the old results)."""
        changes = list(super().check_state(atoms, tol))
        if self.atoms is not None and _state(atoms) != _state(self.atoms):
            changes.append("charge_spin")
        return changes

    def _evaluate(self, atoms_list: Sequence[Atoms], stress: bool) -> tuple[Batch, Any]:
        batch = atoms_to_batch(atoms_list).to(self.device)
        with torch.no_grad():
            out = self.model(batch, [self.level], compute_forces=True, compute_stress=stress)
        return batch, out

    @staticmethod
    def _check_stress(atoms: Atoms, where: str = "") -> None:
        if not np.asarray(atoms.pbc).any():
            raise StressNotAvailableError(f"stress needs a periodic cell{where}; this structure has pbc=False")
        if abs(atoms.cell.volume) < 1e-12:
            raise StressNotAvailableError(f"stress needs a cell with a volume{where}; the cell volume is 0")

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        want_stress = "stress" in properties
        if want_stress:
            self._check_stress(self.atoms)
        _, out = self._evaluate([self.atoms], want_stress)
        energy = float(out.energy[0, 0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out.forces[:, 0].detach().cpu().double().numpy(),
        }
        if want_stress:
            self.results["stress"] = full_3x3_to_voigt_6_stress(out.stress[0, 0].detach().cpu().double().numpy())
        self._add_baseline(self.atoms, self.results, want_stress)

    def _add_baseline(self, atoms: Atoms, results: dict[str, Any], stress: bool) -> None:
        """Add the baseline method's energy, forces (and stress) to a Delta-learning head's results, in place."""
        if self.baseline is None:
            return
        atoms = atoms.copy()
        atoms.calc = self.baseline
        results["energy"] += atoms.get_potential_energy()
        results["free_energy"] = results["energy"]
        results["forces"] = results["forces"] + atoms.get_forces()
        if stress:
            results["stress"] = results["stress"] + atoms.get_stress()

    def predict(self, atoms_list: Sequence[Atoms], batch_size: int = 64, stress: bool = False) -> list[dict[str, Any]]:
        """Evaluate many structures in batches of `batch_size` with this calculator's level.

        Returns one dict per structure: ``energy``/``free_energy`` (float, eV), ``forces`` ((N, 3) eV/A) and,
        with `stress`, ``stress`` (Voigt, eV/A^3; every structure must then be periodic).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        atoms_list = list(atoms_list)
        if stress:
            for k, a in enumerate(atoms_list):
                self._check_stress(a, f" (structure {k})")
        results: list[dict[str, Any]] = []
        for start in range(0, len(atoms_list), batch_size):
            chunk = atoms_list[start : start + batch_size]
            batch, out = self._evaluate(chunk, stress)
            energy = out.energy[:, 0].detach().cpu().numpy()
            forces = out.forces[:, 0].detach().cpu().double().numpy()
            bounds = np.concatenate(([0], np.cumsum(batch.n_atoms.cpu().numpy())))
            for i in range(len(chunk)):
                res: dict[str, Any] = {
                    "energy": float(energy[i]),
                    "free_energy": float(energy[i]),
                    "forces": forces[bounds[i] : bounds[i + 1]].copy(),
                }
                if stress:
                    res["stress"] = full_3x3_to_voigt_6_stress(out.stress[i, 0].detach().cpu().double().numpy())
                self._add_baseline(chunk[i], res, stress)
                results.append(res)
        return results


def predict(
    package: str | Path | LoadedPackage,
    atoms_list: Sequence[Atoms],
    level: str,
    batch_size: int = 64,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    stress: bool = False,
) -> list[dict[str, Any]]:
    """Batched evaluation of many structures at one `level` (see :meth:`PolyfidCalculator.predict`)."""
    return PolyfidCalculator(package, level, device=device, dtype=dtype).predict(atoms_list, batch_size, stress)
