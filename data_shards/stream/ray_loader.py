"""Ray Data path: the same per-consumer sources and pipeline, with shards read by `ray.data.read_webdataset`.

Each rank builds its own Ray Datasets over the shards it is assigned (see `sources`), in order
(`preserve_order`), so batches are deterministic, resumable and identical to the torch path with
num_workers=0. Ranks never synchronise while reading, unlike `streaming_split`, whose per-pass barrier
would stall a rank that cycles a dataset sooner than another one that is blocked in a collective.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray.data

from polyfid.data_shards.codec import SAMPLE_EXTENSION
from polyfid.data_shards.stream.catalog import ShardRef, check_sha256
from polyfid.data_shards.stream.config import Mode, StreamConfig
from polyfid.data_shards.stream.pipeline import StreamPlan, consumer_batches, with_states
from polyfid.data_shards.stream.sources import Consumer


def read_ray(shard: ShardRef) -> list[bytes]:
    """Raw sample bytes of one shard, in order, through Ray Data (`decoder=None` keeps the member bytes). The file
    is checked against its manifest sha256 before Ray reads it."""
    check_sha256(shard, Path(shard.path).read_bytes())
    ds = ray.data.read_webdataset([shard.path], decoder=None)
    ds.context.execution_options.preserve_order = True
    return [raw for block in ds.iter_batches(batch_size=None, batch_format="numpy") for raw in block[SAMPLE_EXTENSION]]


def ray_batches(
    cfg: StreamConfig | StreamPlan,
    mode: Mode,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
    start_step: int = 0,
    state: dict | None = None,
    with_state: bool = False,
) -> Iterator[Any]:
    """This rank's batches of one epoch (same contract as `make_dataloader` with num_workers=0; `state` and
    `with_state` as there, for worker 0).

    Call inside a Ray Train worker with `ray.train.get_context().get_world_rank()` / `get_world_size()`, or
    anywhere Ray is initialised.
    """
    plan = cfg if isinstance(cfg, StreamPlan) else StreamPlan.from_config(cfg)
    batches = consumer_batches(plan, mode, read_ray, Consumer(rank, world_size), epoch, start_step, state)
    return with_states(batches, 0) if with_state else batches
