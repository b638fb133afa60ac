from __future__ import annotations

import itertools
from collections import Counter

import pytest

from polyfid.data_shards.codec import decode
from polyfid.data_shards.stream.catalog import ShardCatalog
from polyfid.data_shards.stream.sources import Consumer, DatasetStream
from polyfid.data_shards.stream.torch_loader import read_webdataset


@pytest.fixture(scope="module")
def catalog(shards):
    return ShardCatalog.open(shards.dirs).select("train")


def consumers(world: int, workers: int) -> list[Consumer]:
    return [Consumer(r, world, w, workers) for r in range(world) for w in range(workers)]


def test_consumer_ids():
    assert [c.id for c in consumers(2, 3)] == list(range(6)) and consumers(2, 3)[0].count == 6
    with pytest.raises(ValueError):
        Consumer(rank=2, world_size=2)


def stream(refs, consumer, dataset, endless=True, lanes=1, epoch=0, state=None):
    return DatasetStream(
        refs, consumer, read_webdataset, seed=3, epoch=epoch, dataset=dataset, endless=endless, lanes=lanes, state=state
    )


def test_shards_split_per_cycle_and_reshuffled(catalog):
    refs = catalog.shards["ethanol_ccsdt"]  # 8 shards
    streams = [stream(refs, c, "ethanol_ccsdt") for c in consumers(2, 2)]
    cycles = [[s.cycle_shards(k) for s in streams] for k in range(2)]
    for cycle in cycles:
        assert sorted(r.path for r in itertools.chain(*cycle)) == sorted(r.path for r in refs)
    assert cycles[0] != cycles[1]
    assert stream(refs, Consumer(0, 2, 0, 2), "ethanol_ccsdt").cycle_shards(1) == cycles[1][0]
    assert stream(refs, Consumer(0, 2, 0, 2), "ethanol_ccsdt", epoch=1).cycle_shards(0) != cycles[0][0]
    # eval: one cycle in manifest order
    assert stream(refs, Consumer(), "ethanol_ccsdt", endless=False).cycle_shards(0) == list(refs)


@pytest.mark.parametrize("dataset", ["ethanol_ccsdt", "ethanol_mf", "molecules"])  # 8, 4, 3 shards
@pytest.mark.parametrize("world, workers", [(1, 1), (2, 2), (3, 3)])
def test_eval_reads_every_sample_once(shards, catalog, dataset, world, workers):
    refs = catalog.shards[dataset]
    ids = Counter(decode(raw).id for c in consumers(world, workers) for _, raw in stream(refs, c, dataset, False))
    assert set(ids.values()) == {1}
    assert set(ids) == {rid for rid, r in shards.records["train"].items() if r.dataset == dataset}


@pytest.mark.parametrize("lanes", [1, 3])
def test_endless_stream_feeds_every_consumer_of_a_tiny_dataset(catalog, lanes):
    refs = catalog.shards["molecules"]  # 3 shards, 6 samples < 8 consumers
    streams = [stream(refs, c, "molecules", lanes=lanes) for c in consumers(4, 2)]
    taken = [[decode(raw).id for _, raw in itertools.islice(s, 9)] for s in streams]
    # consumer c holds positions c, c + 8, ... of one shared endless sequence of reshuffled 6-sample cycles
    sequence = [taken[p % 8][p // 8] for p in range(72)]
    if lanes == 1:
        cycles = [sequence[k : k + 6] for k in range(0, 72, 6)]
        assert all(len(set(c)) == 6 for c in cycles) and len({tuple(c) for c in cycles}) > 1
    assert Counter(Counter(sequence).values()) == {12: 6}  # lanes interleave cycles, but draw every sample alike


@pytest.mark.parametrize("lanes", [1, 4])
def test_lanes_interleave_shards_and_a_state_resumes_exactly(catalog, lanes):
    refs = catalog.shards["ethanol_ccsdt"]  # 8 shards of 40 samples
    full = stream(refs, Consumer(0, 2), "ethanol_ccsdt", lanes=lanes)
    head = [next(full) for _ in range(130)]
    state = full.state()
    tail = [next(full) for _ in range(200)]
    resumed = stream(refs, Consumer(0, 2), "ethanol_ccsdt", lanes=lanes, state=state)
    assert [next(resumed) for _ in range(200)] == tail
    shards_in_window = {pos[:2] for pos, _ in head[:40]}
    assert len(shards_in_window) == (1 if lanes == 1 else 4)
    # a position names its sample: fetching it gives the same bytes
    assert resumed.fetch(pos for pos, _ in head[::17]) == [raw for _, raw in head[::17]]
