"""Turn raw arrays (in the file's units) into a validated :class:`Record`, or a :class:`RecordError`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polyfid.data_shards.errors import RecordError
from polyfid.data_shards.record import LevelLabels, Record
from polyfid.data_shards.sources import SourceConfig
from polyfid.data_shards.units import energy_factor, force_factor, length_factor

MIN_DISTANCE = 0.1  # Angstrom: closer atoms are a corrupted geometry
MAX_Z = 118
_DENSE_LIMIT = 2048  # atoms: all-pairs distance check below, neighbour list above
_NEIGHBOUR_CUTOFF = 0.5  # Angstrom: enough to find any pair closer than MIN_DISTANCE


@dataclass
class RawLabels:
    """One level's labels as stored in the file (file units). NaN energy or all-NaN forces = missing."""

    energy: float | None = None
    forces: np.ndarray | None = None
    is_gradient: bool = False  # True when `forces` holds dE/dR


def record_id(dataset: str, file_name: str, key: str, index: int) -> str:
    """Unique, stable id: `<dataset>/<location>`, the location being the file name (see SourceConfig.record_name),
    the key inside it and the index. Two sources whose files share a name in different folders differ by dataset;
    the split hashes the location only (`splits.split_of`)."""
    return f"{dataset}/{file_name}:{key}:{index}"


def build_record(
    source: SourceConfig,
    path: Path,
    key: str,
    index: int,
    numbers: np.ndarray,
    positions: np.ndarray,
    labels: dict[str, RawLabels],
    cell: np.ndarray | None = None,
    pbc: np.ndarray | None = None,
    charge: int | None = None,
    multiplicity: int | None = None,
) -> Record | RecordError:
    """Convert to eV/Angstrom and validate. Never raises for bad data: returns the error instead."""

    def err(reason: str, detail: str = "") -> RecordError:
        return RecordError(str(path), key, index, reason, detail)

    numbers = np.asarray(numbers)
    positions = np.asarray(positions, dtype=np.float64)
    if numbers.ndim != 1 or numbers.shape[0] == 0:
        return err("empty_structure" if numbers.size == 0 else "bad_shape", f"atomic numbers shape {numbers.shape}")
    n = numbers.shape[0]
    if positions.shape != (n, 3):
        return err("bad_shape", f"positions shape {positions.shape}, expected ({n}, 3)")
    if not np.all(np.isfinite(positions)):
        return err("non_finite_positions")
    if not np.issubdtype(numbers.dtype, np.integer) and (
        not np.all(np.isfinite(numbers)) or np.any(numbers != np.round(numbers))
    ):
        return err("bad_atomic_number", "non-integer atomic numbers")
    numbers = numbers.astype(np.int64)
    if numbers.min() < 1 or numbers.max() > MAX_Z:
        bad = sorted(set(numbers[(numbers < 1) | (numbers > MAX_Z)].tolist()))
        hint = " (zero-padded numbers must be declared: option padding: true)" if 0 in bad else ""
        return err("bad_atomic_number", f"Z outside 1..{MAX_Z}: {bad}{hint}")

    length = length_factor(source.units.length)
    positions = positions * length
    if cell is not None:
        cell = np.asarray(cell, dtype=np.float64) * length
        if cell.shape != (3, 3) or not np.all(np.isfinite(cell)):
            return err("bad_cell", f"cell shape {cell.shape}")
        pbc = np.ones(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool).reshape(3)
        if pbc.any() and abs(np.linalg.det(cell[pbc][:, pbc])) < 1e-6:
            return err("bad_cell", "periodic cell with zero volume")
    dmin = min_distance(positions, cell, pbc)
    if dmin < MIN_DISTANCE:
        return err("atoms_too_close", f"min distance {dmin:.4f} A < {MIN_DISTANCE} A")

    out: dict[str, LevelLabels] = {}
    for level, raw in labels.items():
        units = source.units_for(level)
        energy = None
        if raw.energy is not None:
            e = float(np.asarray(raw.energy).reshape(()))
            if np.isinf(e):
                return err("non_finite_energy", f"level {level!r}: {e}")
            energy = None if np.isnan(e) else e * energy_factor(units.energy)
            if energy is not None and abs(energy) / n > source.limits.max_abs_energy_per_atom:
                return err(
                    "implausible_energy",
                    f"level {level!r}: {energy:.6g} eV, |E|/atom beyond {source.limits.max_abs_energy_per_atom:g} eV "
                    "(limits.max_abs_energy_per_atom; a unit or file error?)",
                )
        forces = None
        if raw.forces is not None:
            f = np.asarray(raw.forces, dtype=np.float64)
            if f.shape != (n, 3):
                return err("bad_shape", f"level {level!r}: forces shape {f.shape}, expected ({n}, 3)")
            nan = np.isnan(f)
            if np.isinf(f).any():
                return err("non_finite_forces", f"level {level!r}")
            if nan.any() and not nan.all():
                return err("partial_nan_forces", f"level {level!r}: {int(nan.sum())} of {f.size} components NaN")
            if not nan.any():
                factor = force_factor(units.force_unit)
                forces = f * (-factor if raw.is_gradient else factor)
                if np.abs(forces).max() > source.limits.max_abs_force:
                    return err(
                        "implausible_forces",
                        f"level {level!r}: |F| component {np.abs(forces).max():.6g} eV/A beyond "
                        f"{source.limits.max_abs_force:g} (limits.max_abs_force; a unit or file error?)",
                    )
        if energy is not None or forces is not None:
            out[level] = LevelLabels(energy=energy, forces=forces)
    if not out:
        return err("no_labels", "every level's labels are missing (NaN)")
    return Record(
        id=record_id(source.name, source.record_name(path), key, index),
        dataset=source.name,
        numbers=numbers,
        positions=positions,
        labels=out,
        cell=cell,
        pbc=pbc if cell is not None else None,
        charge=None if charge is None else int(charge),
        multiplicity=None if multiplicity is None else int(multiplicity),
    )


def min_distance(positions: np.ndarray, cell: np.ndarray | None, pbc: np.ndarray | None) -> float:
    """Smallest interatomic distance (minimum image along periodic directions); inf for one atom. Above
    2048 atoms and for periodic cells only pairs within 0.5 A are searched: inf means none is that close."""
    n = positions.shape[0]
    periodic = cell is not None and pbc is not None and bool(np.any(pbc))
    if n > _DENSE_LIMIT or periodic:
        from vesin import NeighborList

        box = cell if periodic else np.zeros((3, 3))
        nl = NeighborList(cutoff=_NEIGHBOUR_CUTOFF, full_list=False)
        flags = np.asarray(pbc, dtype=bool) if periodic else np.zeros(3, dtype=bool)
        (d,) = nl.compute(points=positions, box=box, periodic=flags, quantities="d")
        return float(d.min()) if d.size else float("inf")
    if n < 2:
        return float("inf")
    diff = positions[:, None, :] - positions[None, :, :]
    d2 = np.einsum("ijk,ijk->ij", diff, diff)
    d2[np.diag_indices(n)] = np.inf
    return float(np.sqrt(d2.min()))
