from __future__ import annotations

import itertools
from collections import Counter

import pytest

from polyfid.data_shards.codec import decode
from polyfid.data_shards.stream.catalog import ShardCatalog
from polyfid.data_shards.stream.sources import Consumer, consumer_stream, shard_cycles
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


def test_shards_split_per_cycle_and_reshuffled(catalog):
    refs = catalog.shards["ethanol_ccsdt"]  # 8 shards
    kw = dict(seed=3, epoch=0, dataset="ethanol_ccsdt", endless=True)
    per_consumer = [list(itertools.islice(shard_cycles(refs, c, **kw), 6)) for c in consumers(2, 2)]
    cycle0 = [p[:2] for p in per_consumer]
    cycle1 = [p[2:4] for p in per_consumer]
    for cycle in (cycle0, cycle1):
        assert sorted(r.path for r in itertools.chain(*cycle)) == sorted(r.path for r in refs)
    assert cycle0 != cycle1
    again = list(itertools.islice(shard_cycles(refs, Consumer(0, 2, 0, 2), **kw), 6))
    assert again == per_consumer[0]
    other_epoch = list(itertools.islice(shard_cycles(refs, Consumer(0, 2, 0, 2), **{**kw, "epoch": 1}), 6))
    assert other_epoch != per_consumer[0]
    # eval: one cycle in manifest order
    assert list(shard_cycles(refs, Consumer(), **{**kw, "endless": False})) == list(refs)


@pytest.mark.parametrize("dataset", ["ethanol_ccsdt", "ethanol_mf", "molecules"])  # 8, 4, 3 shards
@pytest.mark.parametrize("world, workers", [(1, 1), (2, 2), (3, 3)])
def test_eval_reads_every_sample_once(shards, catalog, dataset, world, workers):
    refs = catalog.shards[dataset]
    ids = Counter(
        decode(raw).id
        for c in consumers(world, workers)
        for raw in consumer_stream(refs, read_webdataset, c, seed=0, epoch=0, dataset=dataset, endless=False)
    )
    assert set(ids.values()) == {1}
    assert set(ids) == {rid for rid, r in shards.records["train"].items() if r.dataset == dataset}


def test_endless_stream_feeds_every_consumer_of_a_tiny_dataset(catalog):
    refs = catalog.shards["molecules"]  # 3 shards, 6 samples < 8 consumers
    streams = [
        consumer_stream(refs, read_webdataset, c, seed=0, epoch=0, dataset="molecules", endless=True)
        for c in consumers(4, 2)
    ]
    taken = [[decode(raw).id for raw in itertools.islice(s, 9)] for s in streams]
    # consumer c holds positions c, c + 8, ... of one shared endless sequence of reshuffled 6-sample cycles
    sequence = [taken[p % 8][p // 8] for p in range(72)]
    cycles = [sequence[k : k + 6] for k in range(0, 72, 6)]
    assert all(len(set(c)) == 6 for c in cycles) and len({tuple(c) for c in cycles}) > 1
