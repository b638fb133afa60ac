"""Assertions shared by the stream tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from polyfid.data_shards.record import Record
from polyfid.data_shards.stream.batch import Batch


def check_batch(
    batch: Batch, originals: Mapping[str, Record], level_names: list[str], dataset_names: list[str]
) -> None:
    """Every structure of `batch` equals its original record exactly; missing labels are masked zeros."""
    n_atoms = batch.n_atoms.numpy()
    assert batch.n_atoms_total == n_atoms.sum() == batch.positions.shape[0]
    assert (
        batch.energy.shape == batch.energy_mask.shape == batch.forces_mask.shape == (len(batch.ids), len(level_names))
    )
    assert batch.forces.shape == (batch.n_atoms_total, len(level_names), 3)
    offsets = np.concatenate(([0], np.cumsum(n_atoms)))
    for i, rid in enumerate(batch.ids):
        rec, atoms = originals[rid], slice(offsets[i], offsets[i + 1])
        assert (batch.batch[atoms] == i).all()
        np.testing.assert_array_equal(batch.numbers[atoms].numpy(), rec.numbers)
        np.testing.assert_array_equal(batch.positions[atoms].numpy(), rec.positions)
        assert dataset_names[batch.dataset[i]] == rec.dataset
        assert not batch.pbc[i].any() and not batch.cell[i].any()
        for j, level in enumerate(level_names):
            lab = rec.labels.get(level)
            energy = None if lab is None else lab.energy
            forces = None if lab is None else lab.forces
            assert batch.energy_mask[i, j] == (energy is not None)
            assert batch.energy[i, j] == (0.0 if energy is None else energy)
            assert batch.forces_mask[i, j] == (forces is not None)
            expected = np.zeros((rec.n_atoms, 3), np.float32) if forces is None else forces
            np.testing.assert_array_equal(batch.forces[atoms, j].numpy(), expected)


def batch_ids(batches: Iterable[Batch]) -> list[list[str]]:
    return [b.ids for b in batches]
