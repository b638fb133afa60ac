"""Torch path: shards read with webdataset inside a `torch.utils.data` IterableDataset / DataLoader."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator, Mapping
from typing import Any

import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import tar_file_iterator

from polyfid.data_shards.codec import SAMPLE_EXTENSION
from polyfid.data_shards.errors import ShardCorruptedError
from polyfid.data_shards.stream.batch import Batch
from polyfid.data_shards.stream.catalog import ShardRef, check_sha256
from polyfid.data_shards.stream.config import Mode, StreamConfig
from polyfid.data_shards.stream.pipeline import StreamPlan, consumer_batches, with_states
from polyfid.data_shards.stream.sources import Consumer
from polyfid.data_shards.tar_members import member_payloads


def read_webdataset(shard: ShardRef) -> list[bytes]:
    """Raw sample bytes of one shard, in order, opened with webdataset's opener (local files, `pipe:`, URLs) and
    split with polyfid's USTAR member reader (webdataset's tar iterator for any other tar). The shard is read whole
    and checked against its manifest sha256 first (a truncated tar would otherwise just end early)."""
    suffix = f".{SAMPLE_EXTENSION}"
    try:
        with wds.gopen(shard.path) as stream:
            data = stream.read()
        check_sha256(shard, data)
        fast = member_payloads(data, suffix)
        if fast is not None:
            return fast
        return [m["data"] for m in tar_file_iterator(io.BytesIO(data)) if m["fname"].endswith(suffix)]
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise ShardCorruptedError(f"{shard.path}: cannot read shard ({exc})") from exc


class ShardStream(IterableDataset[Batch]):
    """One rank's batches of one epoch; each dataloader worker makes its own share.

    Train mode, resuming at `start_step`: the DataLoader deals from worker 0, but the uninterrupted run's next
    batch belongs to worker `start_step % num_workers`, so worker slot j runs logical worker
    (j + start_step) % num_workers; the round-robin output then continues the uninterrupted order exactly.
    `states[w]`: logical worker w's stream state after its last batch before `start_step` (it seeks there).
    `with_state`: yield (batch, logical worker, its stream state after the batch) to save a resumable position.
    """

    def __init__(
        self,
        plan: StreamPlan,
        mode: Mode,
        rank: int,
        world_size: int,
        num_workers: int,
        epoch: int,
        start_step: int = 0,
        states: Mapping[int, dict] | None = None,
        with_state: bool = False,
    ):
        super().__init__()
        self.plan, self.mode, self.epoch, self.start_step = plan, mode, epoch, start_step
        self.rank, self.world_size, self.num_workers = rank, world_size, max(1, num_workers)
        self.states, self.with_state = dict(states or {}), with_state

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        slot = 0 if info is None else info.id
        if info is not None and info.num_workers != self.num_workers:
            raise RuntimeError(f"ShardStream built for {self.num_workers} workers runs in {info.num_workers}")
        worker = (slot + self.start_step) % self.num_workers if self.mode == "train" else slot
        consumer = Consumer(self.rank, self.world_size, worker, self.num_workers)
        state = self.states.get(worker)
        batches = consumer_batches(self.plan, self.mode, read_webdataset, consumer, self.epoch, self.start_step, state)
        return with_states(batches, worker) if self.with_state else batches


def make_dataloader(
    cfg: StreamConfig | StreamPlan,
    mode: Mode,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    epoch: int = 0,
    start_step: int = 0,
    pin_memory: bool = False,
    states: Mapping[int, dict] | None = None,
    with_state: bool = False,
) -> DataLoader:
    """A DataLoader (batch_size=None) yielding this rank's :class:`Batch` es of one epoch.

    Train mode yields exactly `plan.batches_per_epoch(world_size) - start_step` batches on every rank; the
    order depends on (seed, epoch, rank, world_size, num_workers), so resume with the same num_workers.
    Eval mode yields every sample of the split once across ranks, but ranks may get different batch counts:
    accumulate metrics locally and reduce them once after the loop, never per batch. `states` / `with_state`:
    see :class:`ShardStream`.
    """
    plan = cfg if isinstance(cfg, StreamPlan) else StreamPlan.from_config(cfg)
    dataset = ShardStream(plan, mode, rank, world_size, num_workers, epoch, start_step, states, with_state)
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory)
