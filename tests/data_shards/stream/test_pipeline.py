from __future__ import annotations

import itertools
from collections import Counter

import pytest

from polyfid.data_shards.stream.config import StreamConfig
from polyfid.data_shards.stream.pipeline import StreamPlan, consumer_batches, with_states, worker_share
from polyfid.data_shards.stream.sources import Consumer
from polyfid.data_shards.stream.torch_loader import read_webdataset
from tests.data_shards.stream.helpers import batch_ids, check_batch


def make_plan(shards, **kw) -> StreamPlan:
    return StreamPlan.from_config(
        StreamConfig(**{"shard_dirs": shards.dirs, "max_atoms": 64, "shuffle_buffer": 50, **kw})
    )


def worker_batches(plan, consumer, epoch=0, start_step=0):
    return list(consumer_batches(plan, "train", read_webdataset, consumer, epoch, start_step))


def rank_batches(plan, rank, world, workers, epoch=0):
    """A rank's batches in DataLoader order: workers' outputs dealt round-robin."""
    per_worker = [worker_batches(plan, Consumer(rank, world, w, workers), epoch) for w in range(workers)]
    return [b for rnd in itertools.zip_longest(*per_worker) for b in rnd if b is not None]


def test_worker_share():
    assert [worker_share(7, 3, w) for w in range(3)] == [(3, 0), (2, 0), (2, 0)]
    assert [worker_share(7, 3, w, start_step=4) for w in range(3)] == [(3, 2), (2, 1), (2, 1)]


def test_derived_epoch_length(shards):
    plan = make_plan(shards)
    n_atoms = sum(r.n_atoms for r in shards.records["train"].values())
    assert plan.batches_per_epoch(1) == n_atoms // 64 and plan.batches_per_epoch(2) == n_atoms // 128
    assert make_plan(shards, max_atoms=10**6).batches_per_epoch(4) == 1


@pytest.mark.parametrize("world, workers, n", [(1, 1, None), (2, 1, 7), (2, 3, 7), (3, 2, 5)])
def test_exact_batches_per_rank(shards, world, workers, n):
    plan = make_plan(shards, batches_per_epoch=n)
    for rank in range(world):
        batches = rank_batches(plan, rank, world, workers)
        assert len(batches) == plan.batches_per_epoch(world)
        for b in batches:
            assert b.n_atoms_total <= 64
            check_batch(b, shards.records["train"], plan.level_names, plan.dataset_names)


def test_deterministic_and_epochs_differ(shards):
    plan = make_plan(shards, batches_per_epoch=12)
    first = batch_ids(rank_batches(plan, 1, 2, 2, epoch=3))
    assert first == batch_ids(rank_batches(make_plan(shards, batches_per_epoch=12), 1, 2, 2, epoch=3))
    assert first != batch_ids(rank_batches(plan, 1, 2, 2, epoch=4))
    assert first != batch_ids(rank_batches(plan, 0, 2, 2, epoch=3))
    assert first != batch_ids(rank_batches(make_plan(shards, batches_per_epoch=12, seed=1), 1, 2, 2, epoch=3))


@pytest.mark.parametrize("start_step", [0, 1, 5, 9, 10])
def test_resume_skips_exactly(shards, start_step):
    plan = make_plan(shards, batches_per_epoch=10)
    for w in range(3):
        consumer = Consumer(0, 1, w, 3)
        full = batch_ids(worker_batches(plan, consumer))
        skip = worker_share(10, 3, w, start_step)[1]
        assert batch_ids(worker_batches(plan, consumer, start_step=start_step)) == full[skip:]
    with pytest.raises(ValueError, match="outside the epoch"):
        worker_batches(plan, Consumer(), start_step=11)


@pytest.mark.parametrize("shuffle_buffer", [0, 50])
def test_a_saved_state_resumes_by_seeking(shards, shuffle_buffer):
    plan = make_plan(shards, batches_per_epoch=30, shuffle_buffer=shuffle_buffer, max_structures=7)
    consumer = Consumer(1, 2, 1, 2)
    full = batch_ids(worker_batches(plan, consumer))
    stream = consumer_batches(plan, "train", read_webdataset, consumer, 0)
    states = [s for _, _, s in itertools.islice(with_states(stream, 1), 11)]
    for k in (1, 6, 11):
        start_step = 2 * k + 1  # the rank's step after this worker's k-th batch
        resumed = consumer_batches(plan, "train", read_webdataset, consumer, 0, start_step, states[k - 1])
        assert batch_ids(list(resumed)) == full[k:]
    with pytest.raises(ValueError, match="after batch 6"):
        consumer_batches(plan, "train", read_webdataset, consumer, 0, 5, states[5])
    with pytest.raises(ValueError, match="train mode only"):
        with_states(consumer_batches(make_plan(shards, split="val"), "eval", read_webdataset, consumer, 0), 0)


def test_dataset_frequencies_follow_ratios(shards):
    ratios = {"molecules": 0.2, "ethanol_ccsdt": 0.3, "ethanol_mf": 0.5}
    plan = make_plan(shards, batches_per_epoch=250, ratios=ratios)
    counts = Counter(b.dataset[i].item() for b in worker_batches(plan, Consumer()) for i in range(b.n_structures))
    total = sum(counts.values())
    for name, p in ratios.items():
        assert abs(counts[plan.dataset_names.index(name)] / total - p) < 0.04, (name, counts)


def test_zero_ratio_leaves_a_dataset_out(shards):
    plan = make_plan(shards, batches_per_epoch=20, ratios={"molecules": 0, "ethanol_ccsdt": 1, "ethanol_mf": 1})
    assert {b.dataset[i].item() for b in worker_batches(plan, Consumer()) for i in range(b.n_structures)} == {0, 1}


def test_eval_mode_rejects_start_step_and_unknown_modes(shards):
    plan = make_plan(shards, split="val")
    with pytest.raises(ValueError, match="train mode only"):
        consumer_batches(plan, "eval", read_webdataset, Consumer(), 0, start_step=1)
    with pytest.raises(ValueError, match="mode must be"):
        consumer_batches(plan, "test", read_webdataset, Consumer(), 0)


def test_one_ratio_dict_serves_every_selection(shards):
    ratios = {"molecules": 1, "ethanol_ccsdt": 2, "ethanol_mf": 1}
    plan = make_plan(shards, split="val", datasets=["molecules", "ethanol_mf"], ratios=ratios)
    assert plan.weights == {"molecules": 0.5, "ethanol_mf": 0.5}
    with pytest.raises(ValueError, match="unknown datasets \\['qm9'\\]"):
        make_plan(shards, ratios={**ratios, "qm9": 1})
    with pytest.raises(ValueError, match="ratios name"):
        make_plan(shards, ratios={"molecules": 1, "ethanol_mf": 1})
