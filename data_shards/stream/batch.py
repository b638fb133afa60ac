"""A flat-graph batch of structures (all atoms concatenated) and `collate` to build one from records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from polyfid.data_shards.errors import PolyfidDataError
from polyfid.data_shards.record import Record


class UnsupportedStateError(PolyfidDataError):
    """A charged or open-shell structure reached a model that does not condition on charge and spin."""


@dataclass
class Batch:
    """S structures, A atoms in total, L levels of theory (the catalog's sorted level axis).

    A label that is missing is 0 with its mask False, never a fake value. Non-periodic structures have a
    zero cell and pbc False. A record without a charge is neutral, without a multiplicity a singlet. `dataset`
    indexes the catalog's dataset names.
    """

    numbers: torch.Tensor  # (A,) long
    positions: torch.Tensor  # (A, 3) float64, Angstrom
    batch: torch.Tensor  # (A,) long, structure index of each atom
    n_atoms: torch.Tensor  # (S,) long
    energy: torch.Tensor  # (S, L) float64, eV
    energy_mask: torch.Tensor  # (S, L) bool
    forces: torch.Tensor  # (A, L, 3) float32, eV/Angstrom
    forces_mask: torch.Tensor  # (S, L) bool
    cell: torch.Tensor  # (S, 3, 3) float64
    pbc: torch.Tensor  # (S, 3) bool
    dataset: torch.Tensor  # (S,) long
    charge: torch.Tensor  # (S,) long, total charge (e)
    multiplicity: torch.Tensor  # (S,) long, spin multiplicity 2S+1
    ids: list[str]

    @property
    def n_structures(self) -> int:
        return len(self.ids)

    @property
    def n_atoms_total(self) -> int:
        return int(self.numbers.shape[0])

    @classmethod
    def unlabelled(
        cls,
        numbers: torch.Tensor,
        positions: torch.Tensor,
        batch: torch.Tensor,
        n_structures: int,
        cell: torch.Tensor | None = None,
        pbc: torch.Tensor | None = None,
    ) -> Batch:
        """A label-free batch straight from tensors (MD engines' state), on their device: neutral singlets, no
        levels; `cell` (S, 3, 3) rows are lattice vectors, `pbc` (S, 3); both absent: molecules."""
        device = positions.device
        n_atoms = torch.bincount(batch, minlength=n_structures)
        zeros = torch.zeros(n_structures, dtype=torch.long, device=device)
        return cls(
            numbers=numbers.long(), positions=positions, batch=batch.long(), n_atoms=n_atoms,
            energy=torch.zeros(n_structures, 0, dtype=torch.float64, device=device),
            energy_mask=torch.zeros(n_structures, 0, dtype=torch.bool, device=device),
            forces=torch.zeros(len(numbers), 0, 3, device=device),
            forces_mask=torch.zeros(n_structures, 0, dtype=torch.bool, device=device),
            cell=cell if cell is not None else torch.zeros(n_structures, 3, 3, dtype=positions.dtype, device=device),
            pbc=pbc if pbc is not None else torch.zeros(n_structures, 3, dtype=torch.bool, device=device),
            dataset=zeros, charge=zeros, multiplicity=zeros + 1, ids=[f"state/{k}" for k in range(n_structures)],
        )  # fmt: skip

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on `device`."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Pinned copy (called by DataLoader(pin_memory=True))."""
        return self._map(torch.Tensor.pin_memory)

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self) if f.name != "ids"})


def collate(records: Sequence[Record], level_names: Sequence[str], dataset_names: Sequence[str]) -> Batch:
    """Concatenate records into a :class:`Batch`; a level or dataset off the given axes raises ValueError."""
    level_index = {name: i for i, name in enumerate(level_names)}
    dataset_index = {name: i for i, name in enumerate(dataset_names)}
    n_struct, n_levels = len(records), len(level_names)
    n_atoms = np.fromiter((r.numbers.shape[0] for r in records), dtype=np.int64, count=n_struct)
    offsets = np.concatenate(([0], np.cumsum(n_atoms))).tolist()
    energy = np.zeros((n_struct, n_levels))
    energy_mask = np.zeros((n_struct, n_levels), dtype=bool)
    forces = np.zeros((offsets[-1], n_levels, 3), dtype=np.float32)
    forces_mask = np.zeros((n_struct, n_levels), dtype=bool)
    cell = np.zeros((n_struct, 3, 3))
    pbc = np.zeros((n_struct, 3), dtype=bool)
    dataset = np.empty(n_struct, dtype=np.int64)
    charge, multiplicity = np.zeros(n_struct, dtype=np.int64), np.ones(n_struct, dtype=np.int64)
    for i, rec in enumerate(records):
        try:
            dataset[i] = dataset_index[rec.dataset]
            for level, lab in rec.labels.items():
                j = level_index[level]
                if lab.energy is not None:
                    energy[i, j] = lab.energy
                    energy_mask[i, j] = True
                if lab.forces is not None:
                    forces[offsets[i] : offsets[i + 1], j] = lab.forces
                    forces_mask[i, j] = True
        except KeyError as exc:
            raise ValueError(
                f"record {rec.id!r}: {exc.args[0]!r} is not on the batch axes "
                f"(levels {list(level_names)}, datasets {list(dataset_names)})"
            ) from None
        charge[i], multiplicity[i] = rec.charge or 0, rec.multiplicity or 1
        if rec.cell is not None:
            cell[i] = rec.cell
            pbc[i] = True if rec.pbc is None else rec.pbc
    return Batch(
        numbers=torch.from_numpy(np.concatenate([r.numbers for r in records]).astype(np.int64)),
        positions=torch.from_numpy(np.concatenate([r.positions for r in records]).astype(np.float64, copy=False)),
        batch=torch.from_numpy(np.repeat(np.arange(n_struct), n_atoms)),
        n_atoms=torch.from_numpy(n_atoms),
        energy=torch.from_numpy(energy),
        energy_mask=torch.from_numpy(energy_mask),
        forces=torch.from_numpy(forces),
        forces_mask=torch.from_numpy(forces_mask),
        cell=torch.from_numpy(cell),
        pbc=torch.from_numpy(pbc),
        dataset=torch.from_numpy(dataset),
        charge=torch.from_numpy(charge),
        multiplicity=torch.from_numpy(multiplicity),
        ids=[r.id for r in records],
    )
