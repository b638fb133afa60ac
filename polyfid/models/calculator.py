"""ASE calculator for a packaged PolyfidModel: one explicitly chosen level of theory (head), no default head."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from polyfid.data_shards.record import Record, normalize_level
from polyfid.data_shards.stream.batch import Batch, collate
from polyfid.models.compiled import load_exported
from polyfid.models.heads import UnknownHeadError
from polyfid.models.hipnn import DTYPES
from polyfid.models.model import PolyfidModel
from polyfid.models.package import LoadedPackage, load_members

STD_PROPERTIES = ("energy_std", "forces_std", "stress_std")  # a committee's spread over its members
ModelSource = str | Path | LoadedPackage | Sequence[LoadedPackage]


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


def has_stress(atoms: Atoms) -> bool:
    """Whether stress is defined for `atoms`: some periodic direction and a cell with a volume."""
    return bool(np.asarray(atoms.pbc).any()) and abs(atoms.cell.volume) >= 1e-12


def load_models(package: ModelSource, device: str | torch.device = "cpu") -> list[LoadedPackage]:
    """The members of `package`: a package or committee file, a LoadedPackage, or a list of them (a committee)."""
    if isinstance(package, LoadedPackage):
        return [package]
    if isinstance(package, str | Path):
        return load_members(package, map_location=device)
    members = list(package)
    if not members or not all(isinstance(m, LoadedPackage) for m in members):
        raise TypeError("package must be a path, a LoadedPackage, or a non-empty list of LoadedPackage")
    return members


class PolyfidCalculator(Calculator):
    """energy / free_energy (eV), forces (eV/A) and, for periodic cells, stress (eV/A^3, Voigt, ASE sign:
    (1/V) dE/d(strain)) from one head of a polyfid model package.

    `level` is required and must be one of the package's heads. `dtype` (e.g. torch.float64 for MD) casts the
    model; per-head E0 stays float64 and energies are always float64. A head fitted as a correction to a baseline
    method (Delta-learning, `model.heads.baselines`) needs `baseline`, an ASE calculator of that method (e.g.
    tblite's GFN2-xTB): its results are added to the head's.

    A committee (a committee file, or a list of packages) gives the members' mean as energy, forces and stress,
    and their spread (population std over members) as ``energy_std``, ``forces_std`` (per atom and component) and
    ``stress_std``: the uncertainty MD and active learning read.

    A package file with an exported head beside it (`polyfid export`, for this level and dtype) runs energy and
    forces through that program (`exported=False`: always eager; `compile=True`: through torch.compile too);
    stress, committees and charge/spin models run eager.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", *STD_PROPERTIES]  # noqa: RUF012 (ASE)

    def __init__(
        self,
        package: ModelSource,
        level: str,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        baseline: Calculator | None = None,
        exported: bool = True,
        compile: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        members = load_models(package, device)
        dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        device = torch.device(device)
        self.models = [_placed(m.model, device, dtype, copy_first=not isinstance(package, str | Path)) for m in members]
        self.package = members[0]
        self.members = members
        self.model = self.models[0]
        self.device = device
        if not isinstance(level, str) or normalize_level(level) not in self.model.head_names:
            raise UnknownHeadError(
                f"level {level!r} is not a head of this package; choose one of {self.model.head_names}"
            )
        self.level = normalize_level(level)
        for k, model in enumerate(self.models[1:], 1):
            if model.head_names != self.model.head_names:
                raise UnknownHeadError(f"committee member {k} has heads {model.head_names}, member 0 {self.heads}")
        method = self.model.heads.baselines.get(self.level)
        if method is not None and baseline is None:
            raise BaselineRequiredError(
                f"head {self.level!r} predicts {self.level} minus {method} (Delta-learning): pass baseline=, an ASE "
                f"calculator of {method}, whose energy and forces are added"
            )
        self.baseline = baseline if method is not None else None
        self.exported = None
        if exported and isinstance(package, str | Path) and len(self.models) == 1 and not self.model.charge_spin:
            name = str(self.model.dtype).removeprefix("torch.")
            self.exported = load_exported(Path(package), self.level, name, compile, device)

    @property
    def heads(self) -> list[str]:
        return self.model.head_names

    @property
    def committee_size(self) -> int:
        return len(self.models)

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's changes, plus "charge_spin" when `atoms.info`'s charge or spin differs from the last calculation's
        (ASE compares no `info`, so a new charge on the same geometry would return the old results)."""
        changes = list(super().check_state(atoms, tol))
        if self.atoms is not None and _state(atoms) != _state(self.atoms):
            changes.append("charge_spin")
        return changes

    def _evaluate(self, atoms_list: Sequence[Atoms], stress: bool) -> list[dict[str, Any]]:
        """Per structure: energy, forces (and stress) of the head, the committee's mean and std when it has one."""
        batch = atoms_to_batch(atoms_list).to(self.device)
        energies, forces, stresses = [], [], []
        for model in self.models:
            if self.exported is not None and not stress:  # the exported program: energy and forces only
                energy, force = self.exported(model, batch)
                energies.append(energy.detach().cpu().double())
                forces.append(force.detach().cpu().double())
                continue
            with torch.no_grad():
                out = model(batch, [self.level], compute_forces=True, compute_stress=stress)
            energies.append(out.energy[:, 0].detach().cpu().double())
            forces.append(out.forces[:, 0].detach().cpu().double())
            if stress:
                stresses.append(out.stress[:, 0].detach().cpu().double())
        columns = {"energy": torch.stack(energies), "forces": torch.stack(forces)}
        if stress:
            columns["stress"] = torch.stack(stresses)
        bounds = np.concatenate(([0], np.cumsum(batch.n_atoms.cpu().numpy())))
        results = []
        for i in range(len(atoms_list)):
            per = {"energy": columns["energy"][:, i], "forces": columns["forces"][:, bounds[i] : bounds[i + 1]]}
            if stress:
                per["stress"] = columns["stress"][:, i]
            res: dict[str, Any] = {"energy": float(per["energy"].mean())}
            res["free_energy"] = res["energy"]
            res["forces"] = per["forces"].mean(0).numpy()
            if stress:
                res["stress"] = full_3x3_to_voigt_6_stress(per["stress"].mean(0).numpy())
            if len(self.models) > 1:
                res["energy_std"] = float(per["energy"].std(0, correction=0))
                res["forces_std"] = per["forces"].std(0, correction=0).numpy()
                if stress:
                    res["stress_std"] = full_3x3_to_voigt_6_stress(per["stress"].std(0, correction=0).numpy())
            self._add_baseline(atoms_list[i], res, stress)
            results.append(res)
        return results

    @staticmethod
    def _check_stress(atoms: Atoms, where: str = "") -> None:
        if has_stress(atoms):
            return
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
        want_stress = "stress" in properties or "stress_std" in properties
        if want_stress:
            self._check_stress(self.atoms)
        self.results = self._evaluate([self.atoms], want_stress)[0]

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

    def predict(
        self,
        atoms_list: Sequence[Atoms],
        batch_size: int = 64,
        stress: bool = False,
        max_atoms: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Evaluate many structures in batches of at most `batch_size` structures (and `max_atoms` atoms, when
        given; a bigger structure runs alone) with this calculator's level; `progress(n)` after each batch.

        Returns one dict per structure: ``energy``/``free_energy`` (float, eV), ``forces`` ((N, 3) eV/A), with
        `stress` ``stress`` (Voigt, eV/A^3; every structure must then be periodic), and for a committee the
        ``*_std`` spreads.
        """
        if batch_size < 1 or (max_atoms is not None and max_atoms < 1):
            raise ValueError(f"batch_size and max_atoms must be >= 1, got {batch_size} and {max_atoms}")
        atoms_list = list(atoms_list)
        if stress:
            for k, a in enumerate(atoms_list):
                self._check_stress(a, f" (structure {k})")
        results: list[dict[str, Any]] = []
        for chunk in _chunks(atoms_list, batch_size, max_atoms):
            results.extend(self._evaluate(chunk, stress))
            if progress is not None:
                progress(len(chunk))
        return results


def _placed(model: PolyfidModel, device: torch.device, dtype: torch.dtype | None, copy_first: bool) -> PolyfidModel:
    """`model` in eval mode on `device` (cast to `dtype`); a copy when it is the caller's and must change."""
    ref = next(model.parameters())
    if (dtype is not None and dtype != model.dtype) or ref.device != device:
        if copy_first:
            model = copy.deepcopy(model)  # do not cast the caller's model in place
        model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    return model.eval()


def _chunks(atoms_list: list[Atoms], batch_size: int, max_atoms: int | None) -> Iterator[list[Atoms]]:
    """Consecutive runs of at most `batch_size` structures and, when given, `max_atoms` atoms (at least one)."""
    chunk: list[Atoms] = []
    n_atoms = 0
    for atoms in atoms_list:
        if chunk and (len(chunk) == batch_size or (max_atoms is not None and n_atoms + len(atoms) > max_atoms)):
            yield chunk
            chunk, n_atoms = [], 0
        chunk.append(atoms)
        n_atoms += len(atoms)
    if chunk:
        yield chunk


def predict(
    package: ModelSource,
    atoms_list: Sequence[Atoms],
    level: str,
    batch_size: int = 64,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    stress: bool = False,
    max_atoms: int | None = None,
) -> list[dict[str, Any]]:
    """Batched evaluation of many structures at one `level` (see :meth:`PolyfidCalculator.predict`)."""
    calc = PolyfidCalculator(package, level, device=device, dtype=dtype)
    return calc.predict(atoms_list, batch_size, stress, max_atoms)
