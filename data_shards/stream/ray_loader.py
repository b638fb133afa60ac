"""Ray Data path: the same per-consumer sources and pipeline, with shards read by `ray.data.read_webdataset`.

Each rank builds its own Ray Datasets over the shards it is assigned (see `sources`), in order
(`preserve_order`), so batches are deterministic, resumable and identical to the torch path with
num_workers=0. Ranks never synchronise while reading, unlike `streaming_split`, whose per-pass barrier
would stall a rank that cycles a dataset sooner than another one that is blocked in a collective.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import ray.data

from polyfid.data_shards.codec import SAMPLE_EXTENSION
from polyfid.data_shards.stream.batch import Batch
from polyfid.data_shards.stream.catalog import ShardRef, check_sha256
from polyfid.data_shards.stream.config import Mode, StreamConfig
from polyfid.data_shards.stream.pipeline import StreamPlan, consumer_batches
from polyfid.data_shards.stream.sources import Consumer

FILES_PER_READ = 256  # shard files per Ray Dataset execution (an endless stream is read in such chunks)


def read_ray(shards: Iterator[ShardRef]) -> Iterator[bytes]:
    """Raw sample bytes of the shards, in order, through Ray Data (`decoder=None` keeps the member bytes).
    Each file is checked against its manifest sha256 before Ray reads it (hashing is ~1% of streaming time)."""
    while chunk := list(itertools.islice(shards, FILES_PER_READ)):
        for shard in chunk:
            check_sha256(shard, Path(shard.path).read_bytes())
        ds = ray.data.read_webdataset([shard.path for shard in chunk], decoder=None)
        ds.context.execution_options.preserve_order = True
        for block in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield from block[SAMPLE_EXTENSION]


def ray_batches(
    cfg: StreamConfig | StreamPlan, mode: Mode, rank: int = 0, world_size: int = 1, epoch: int = 0, start_step: int = 0
) -> Iterator[Batch]:
    """This rank's batches of one epoch (same contract as `make_dataloader` with num_workers=0).

    Call inside a Ray Train worker with `ray.train.get_context().get_world_rank()` / `get_world_size()`, or
    anywhere Ray is initialised.
    """
    plan = cfg if isinstance(cfg, StreamPlan) else StreamPlan.from_config(cfg)
    return consumer_batches(plan, mode, read_ray, Consumer(rank, world_size), epoch, start_step)
