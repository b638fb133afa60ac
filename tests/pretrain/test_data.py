"""TaskStream: a saved position resumes by seeking, through JSON, with loader workers and after `close()`."""

from __future__ import annotations

import json

import pytest

from polyfid.data_shards.stream import StreamPlan
from polyfid.data_shards.stream.catalog import ShardCatalog
from polyfid.pretrain.config import DataSection
from polyfid.pretrain.data import TaskStream, stream_config


def task_stream(demo_shards, num_workers: int, prefetch: int) -> TaskStream:
    data = DataSection(
        shard_dirs=[demo_shards], max_atoms=96, shuffle_buffer=60, num_workers=num_workers, prefetch=prefetch,
        batches_per_epoch=9,
    )  # fmt: skip
    catalog = ShardCatalog.open(data.shard_dirs)
    plan = StreamPlan.from_config(stream_config(data, 3, "train", None), catalog)
    return TaskStream(plan, data, rank=0, world_size=1)


def ids(stream: TaskStream, n: int) -> list[list[str]]:
    return [next(stream).ids for _ in range(n)]


@pytest.mark.parametrize("num_workers, prefetch", [(0, 0), (0, 3), (2, 2)])
def test_a_saved_position_resumes_the_same_batches_by_seeking(demo_shards, num_workers, prefetch):
    uninterrupted = task_stream(demo_shards, num_workers, prefetch)
    expected = ids(uninterrupted, 25)  # crosses two epoch boundaries (9 batches per epoch)
    uninterrupted.close()
    for k in (4, 9, 13):
        first = task_stream(demo_shards, num_workers, prefetch)
        ids(first, k)
        position = json.loads(json.dumps(first.position))  # as the checkpoint stores it
        first.close()
        resumed = task_stream(demo_shards, num_workers, prefetch)
        resumed.restore(position)
        assert ids(resumed, 25 - k) == expected[k:], k
        resumed.close()


def test_close_releases_the_reader_and_the_next_batch_continues(demo_shards):
    stream = task_stream(demo_shards, 0, 2)
    expected = ids(task_stream(demo_shards, 0, 2), 12)
    got = ids(stream, 5)
    stream.close()
    assert not stream.is_open
    got += ids(stream, 7)
    assert got == expected


def test_an_epoch_step_position_of_older_checkpoints_replays(demo_shards):
    expected = ids(task_stream(demo_shards, 0, 0), 12)
    resumed = task_stream(demo_shards, 0, 0)
    resumed.restore([0, 5])
    assert ids(resumed, 7) == expected[5:]
