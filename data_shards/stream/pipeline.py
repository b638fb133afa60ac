"""The one implementation of epochs, mixing, shuffling, packing and collation, fed by any shard reader.

Train mode: endless per-dataset streams -> seeded mixture -> shuffle buffer -> atom-budget packing, cut to
exactly `batches_per_epoch` batches per rank, dealt to dataloader workers round-robin (worker w makes the
rank's batches w, w + W, ...). Every random choice is seeded by (seed, epoch, rank, world size, W, worker), so
an epoch does not depend on earlier ones, and a worker's `TrainStream.state()` after any batch resumes it by
seeking. Eval mode: each sample of the split once per epoch across all consumers, datasets one after another,
no shuffling; ranks may get unequal batch counts, so reduce eval metrics once at the end, not per batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from polyfid.data_shards.codec import decode
from polyfid.data_shards.record import Record
from polyfid.data_shards.stream.batch import Batch, collate
from polyfid.data_shards.stream.catalog import ShardCatalog, ShardSelection
from polyfid.data_shards.stream.config import Mode, StreamConfig
from polyfid.data_shards.stream.packing import pack
from polyfid.data_shards.stream.sampling import ShuffleBuffer, dataset_weights, mixture_draws
from polyfid.data_shards.stream.sources import Consumer, DatasetStream, ReadShard


@dataclass(frozen=True)
class StreamPlan:
    """A config resolved against its manifests: the catalog (batch axes), the selected shards, mixing weights."""

    cfg: StreamConfig
    catalog: ShardCatalog
    selection: ShardSelection
    weights: dict[str, float]

    @classmethod
    def from_config(cls, cfg: StreamConfig, catalog: ShardCatalog | None = None) -> StreamPlan:
        """`catalog`: the shard folders' catalog when already open (it must be of `cfg.shard_dirs`)."""
        catalog = catalog or ShardCatalog.open(cfg.shard_dirs)
        selection = catalog.select(cfg.split, cfg.datasets)
        counts = {d: selection.n_samples(d) for d in selection.shards}
        ratios = cfg.ratios
        if ratios is not None:
            unknown = sorted(set(ratios) - set(catalog.dataset_names))
            if unknown:
                raise ValueError(f"ratios name unknown datasets {unknown}; known: {catalog.dataset_names}")
            ratios = {d: w for d, w in ratios.items() if d in counts}
        return cls(cfg, catalog, selection, dataset_weights(counts, ratios, cfg.temperature))

    @property
    def level_names(self) -> list[str]:
        return self.catalog.level_names

    @property
    def dataset_names(self) -> list[str]:
        return self.catalog.dataset_names

    def batches_per_epoch(self, world_size: int) -> int:
        """Train batches per rank per epoch (the same on every rank)."""
        if self.cfg.batches_per_epoch is not None:
            return self.cfg.batches_per_epoch
        return max(1, self.selection.n_atoms // (self.cfg.max_atoms * world_size))

    def collate(self, records: list[Record]) -> Batch:
        return collate(records, self.level_names, self.dataset_names)


def record_streams(
    plan: StreamPlan, mode: Mode, read: ReadShard, consumer: Consumer, epoch: int
) -> dict[str, Iterator[Record]]:
    """Decoded records per dataset for one consumer (endless in train mode, lazily opened)."""
    return {
        name: (decode(raw) for _, raw in dataset_stream(plan, mode, read, consumer, epoch, name))
        for name in plan.selection.shards
        if mode == "eval" or plan.weights[name] > 0
    }


def dataset_stream(
    plan: StreamPlan, mode: Mode, read: ReadShard, consumer: Consumer, epoch: int, name: str, state: dict | None = None
) -> DatasetStream:
    """One dataset's raw samples for one consumer (train: endless and interleaved; eval: one pass in order)."""
    train = mode == "train"
    return DatasetStream(
        plan.selection.shards[name],
        consumer,
        read,
        seed=plan.cfg.seed,
        epoch=epoch,
        dataset=name,
        endless=train,
        lanes=plan.cfg.interleave if train else 1,
        state=state,
    )


def worker_share(n_batches: int, num_workers: int, worker: int, start_step: int = 0) -> tuple[int, int]:
    """(batches worker makes in the epoch, how many of them fall before `start_step`) for round-robin dealing."""
    return len(range(worker, n_batches, num_workers)), len(range(worker, start_step, num_workers))


class TrainStream:
    """One consumer's share of a rank's `batches_per_epoch` train batches, with a `state()` after any batch that
    resumes the rest exactly by seeking: dataset positions and draw counts, plus the positions of the samples in
    the shuffle buffer and of the one already drawn for the next batch, which are re-read on restore.

    Pipeline: per-dataset streams -> seeded mixture -> shuffle buffer -> atom-budget packing. A sample's position
    is (dataset index, cycle, shard index, offset); every draw is seeded by (seed, epoch, rank, world size, W,
    worker), so an epoch does not depend on earlier ones.
    """

    def __init__(self, plan: StreamPlan, read: ReadShard, consumer: Consumer, epoch: int, state: dict | None = None):
        self.plan, self.names = plan, [d for d in sorted(plan.selection.shards) if plan.weights[d] > 0]
        state = state or {"names": self.names, "made": 0, "datasets": {}, "mix": 0, "swaps": 0, "held": [], "carry": []}
        if state["names"] != self.names:
            raise ValueError(f"the stream state is of datasets {state['names']}, this stream mixes {self.names}")
        cfg = plan.cfg
        key = (cfg.seed, epoch, consumer.rank, consumer.world_size, consumer.num_workers, consumer.worker)
        self.streams = [
            dataset_stream(plan, "train", read, consumer, epoch, d, state["datasets"].get(d)) for d in self.names
        ]
        self.mix = mixture_draws([plan.weights[d] for d in self.names], *key, n=state["mix"])
        held = self._fetch(np.asarray([*state["held"], *state["carry"]], dtype=np.int64).reshape(-1, 4))
        carry = held.pop() if len(state["carry"]) else None
        self.buffer: ShuffleBuffer[bytes] = ShuffleBuffer(cfg.shuffle_buffer, *key, items=held, n=state["swaps"])
        self._last = None if carry is None else (carry[0], decode(carry[1]))
        self.total = worker_share(plan.batches_per_epoch(consumer.world_size), consumer.num_workers, consumer.worker)[0]
        self.made: int = state["made"]
        records = itertools.chain([] if self._last is None else [self._last[1]], self._records())
        self._groups = pack(records, cfg.max_atoms, cfg.max_structures)

    def state(self) -> dict[str, Any]:
        """Where the stream stands after the batches made so far: positions of the samples in the buffer ("held")
        and of the one drawn for the next batch ("carry")."""
        return {
            "names": self.names,
            "made": self.made,
            "datasets": {d: s.state() for d, s in zip(self.names, self.streams, strict=True)},
            "mix": self.mix.n,
            "swaps": self.buffer.draws.n,
            "held": self.buffer.positions(),
            "carry": [] if self._last is None else [self._last[0]],
        }

    def __iter__(self) -> TrainStream:
        return self

    def __next__(self) -> Batch:
        group = self._next_group()
        return self.plan.collate(group)

    def skip(self, n: int) -> None:
        """Make and drop `n` batches (resuming without a saved state)."""
        for _ in range(n):
            self._next_group()

    def _next_group(self) -> list[Record]:
        if self.made >= self.total:
            raise StopIteration
        self.made += 1
        return next(self._groups)

    def _records(self) -> Iterator[Record]:
        """Mixed, shuffled, decoded records; `_last` is the latest one drawn (packing holds it for the next batch
        when it closes a batch, since a batch closes only when a record does not fit)."""
        while True:
            d = self.mix.next()
            (cycle, index, offset), raw = next(self.streams[d])
            out = self.buffer.push(np.array([d, cycle, index, offset]), raw)
            if out is not None:
                self._last = (out[0], decode(out[1]))
                yield self._last[1]

    def _fetch(self, where: np.ndarray) -> list[tuple[np.ndarray, bytes]]:
        """The raw samples at positions `where` (rows of dataset index, cycle, shard index, offset), in order."""
        raws: list[bytes] = [b""] * len(where)
        for d in np.unique(where[:, 0]).tolist():
            rows = np.flatnonzero(where[:, 0] == d)
            fetched = self.streams[d].fetch(tuple(p) for p in where[rows, 1:].tolist())
            for r, raw in zip(rows.tolist(), fetched, strict=True):
                raws[r] = raw
        return list(zip(where, raws, strict=True))


def eval_batches(plan: StreamPlan, streams: Mapping[str, Iterator[Record]]) -> Iterator[Batch]:
    """Every record of the (finite) streams once, datasets in name order, packed and collated."""
    records = itertools.chain.from_iterable(streams[name] for name in sorted(streams))
    return map(plan.collate, pack(records, plan.cfg.max_atoms, plan.cfg.max_structures))


def consumer_batches(
    plan: StreamPlan,
    mode: Mode,
    read: ReadShard,
    consumer: Consumer,
    epoch: int,
    start_step: int = 0,
    state: dict | None = None,
) -> Iterator[Batch]:
    """One consumer's batches of an epoch, reading shards with `read` (webdataset or Ray Data).

    Train mode from `start_step`: with the consumer's `state` saved after its last batch before `start_step`,
    the stream seeks there; without one, it makes and drops those batches.
    """
    if mode == "train":
        n_batches = plan.batches_per_epoch(consumer.world_size)
        if not 0 <= start_step <= n_batches:
            raise ValueError(f"start_step {start_step} is outside the epoch of {n_batches} batches")
        skip = worker_share(n_batches, consumer.num_workers, consumer.worker, start_step)[1]
        if state is not None and state["made"] != skip:
            raise ValueError(f"the stream state is after batch {state['made']}, resuming needs it after {skip}")
        stream = TrainStream(plan, read, consumer, epoch, state)
        if state is None:
            stream.skip(skip)
        return stream
    if mode != "eval":
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    if start_step or state:
        raise ValueError("start_step applies to train mode only (eval epochs are read whole)")
    return eval_batches(plan, record_streams(plan, mode, read, consumer, epoch))


def with_states(batches: Iterator[Batch], worker: int) -> Iterator[tuple[Batch, int, dict[str, Any]]]:
    """(batch, logical worker, the train stream's state after it): what a trainer saves to resume by seeking."""
    if not isinstance(batches, TrainStream):
        raise ValueError("stream states exist in train mode only")
    return ((batch, worker, batches.state()) for batch in batches)
