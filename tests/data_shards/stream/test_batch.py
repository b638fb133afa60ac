from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from polyfid.data_shards.stream.batch import collate
from tests.data_shards.stream.helpers import check_batch


@pytest.fixture
def mixed(shards):
    """Records of all three datasets: 9-atom ethanols and 3-7-atom small molecules, varied label sets."""
    by_ds: dict[str, list] = {}
    for rec in shards.records["train"].values():
        by_ds.setdefault(rec.dataset, []).append(rec)
    return [r for name in sorted(by_ds) for r in by_ds[name][:4]]


def test_collate_matches_records(shards, mixed):
    batch = collate(mixed, shards.level_names, shards.dataset_names)
    check_batch(batch, shards.records["train"], shards.level_names, shards.dataset_names)
    assert batch.n_structures == len(mixed) and batch.n_atoms_total == sum(r.n_atoms for r in mixed)
    assert batch.numbers.dtype == batch.batch.dtype == batch.dataset.dtype == torch.long
    assert batch.positions.dtype == batch.energy.dtype == batch.cell.dtype == torch.float64
    assert batch.forces.dtype == torch.float32 and batch.pbc.dtype == batch.energy_mask.dtype == torch.bool
    # the datasets' level sets differ, so each structure has some levels masked
    assert (~batch.energy_mask).any(dim=1).all() and batch.energy_mask.any(dim=1).all()
    assert set(batch.n_atoms.tolist()) > {9}


def test_cell_and_pbc(shards, mixed):
    periodic = dataclasses.replace(mixed[0], cell=np.diag([10.0, 11.0, 12.0]), pbc=np.array([True, True, False]))
    batch = collate([periodic, mixed[1]], shards.level_names, shards.dataset_names)
    np.testing.assert_array_equal(batch.cell[0].numpy(), np.diag([10.0, 11.0, 12.0]))
    assert batch.pbc.tolist() == [[True, True, False], [False, False, False]] and not batch.cell[1].any()


def test_charge_and_multiplicity_are_collated_unset_is_a_neutral_singlet(shards, mixed):
    """Collation keeps every state; a model without charge_spin refuses non-neutral ones (the model mixins)."""
    ion = dataclasses.replace(mixed[0], charge=-1, multiplicity=2)
    plain = dataclasses.replace(mixed[1], charge=None, multiplicity=None)
    batch = collate([ion, plain], shards.level_names, shards.dataset_names)
    assert batch.charge.tolist() == [-1, 0] and batch.multiplicity.tolist() == [2, 1]


def test_off_axis_level_or_dataset_is_an_error(shards, mixed):
    with pytest.raises(ValueError, match=f"{mixed[-1].id}.*b3lyp/def2-svp"):
        collate(mixed[-1:], [lv for lv in shards.level_names if lv != "b3lyp/def2-svp"], shards.dataset_names)
    with pytest.raises(ValueError, match="molecules"):
        collate(mixed, shards.level_names, ["ethanol_ccsdt", "ethanol_mf"])


def test_to_and_pin_keep_values(shards, mixed):
    batch = collate(mixed, shards.level_names, shards.dataset_names)
    moved = batch.to("cpu")
    assert moved.ids == batch.ids and torch.equal(moved.forces, batch.forces)
    assert moved.positions.device.type == "cpu"
