"""The one implementation of epochs, mixing, shuffling, packing and collation, fed by any shard reader.

Train mode: endless per-dataset streams -> seeded mixture -> shuffle buffer -> atom-budget packing, cut to
exactly `batches_per_epoch` batches per rank, dealt to dataloader workers round-robin (worker w makes the
rank's batches w, w + W, ...). Every random choice is seeded by (seed, epoch, rank, world size, W, worker), so
an epoch does not depend on earlier ones and a resumed epoch regenerates and drops the first `start_step`
batches. Eval mode: each sample of the split once per epoch across all consumers, datasets one after another,
no shuffling; ranks may get unequal batch counts, so reduce eval metrics once at the end, not per batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from polyfid.data_shards.codec import decode
from polyfid.data_shards.record import Record
from polyfid.data_shards.stream.batch import Batch, collate
from polyfid.data_shards.stream.catalog import ShardCatalog, ShardSelection
from polyfid.data_shards.stream.config import Mode, StreamConfig
from polyfid.data_shards.stream.packing import pack
from polyfid.data_shards.stream.sampling import dataset_weights, mix, shuffle_buffer
from polyfid.data_shards.stream.seeding import derive_rng
from polyfid.data_shards.stream.sources import Consumer, ReadFn, consumer_stream


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
    plan: StreamPlan, mode: Mode, read: ReadFn, consumer: Consumer, epoch: int
) -> dict[str, Iterator[Record]]:
    """Decoded records per dataset for one consumer (endless in train mode, lazily opened)."""
    return {
        name: map(
            decode,
            consumer_stream(
                shards, read, consumer, seed=plan.cfg.seed, epoch=epoch, dataset=name, endless=mode == "train"
            ),
        )
        for name, shards in plan.selection.shards.items()
        if mode == "eval" or plan.weights[name] > 0
    }


def worker_share(n_batches: int, num_workers: int, worker: int, start_step: int = 0) -> tuple[int, int]:
    """(batches worker makes in the epoch, how many of them fall before `start_step`) for round-robin dealing."""
    return len(range(worker, n_batches, num_workers)), len(range(worker, start_step, num_workers))


def train_batches(
    plan: StreamPlan, streams: Mapping[str, Iterator[Record]], consumer: Consumer, epoch: int, start_step: int = 0
) -> Iterator[Batch]:
    """The consumer's share of the rank's `batches_per_epoch` train batches, from `start_step` on."""
    n_batches = plan.batches_per_epoch(consumer.world_size)
    if not 0 <= start_step <= n_batches:
        raise ValueError(f"start_step {start_step} is outside the epoch of {n_batches} batches")
    total, skip = worker_share(n_batches, consumer.num_workers, consumer.worker, start_step)
    key = (plan.cfg.seed, epoch, consumer.rank, consumer.world_size, consumer.num_workers, consumer.worker)
    records = mix(streams, plan.weights, derive_rng(*key, "mix"))
    records = shuffle_buffer(records, plan.cfg.shuffle_buffer, derive_rng(*key, "shuffle"))
    groups = pack(records, plan.cfg.max_atoms, plan.cfg.max_structures)
    return map(plan.collate, itertools.islice(groups, skip, total))


def eval_batches(plan: StreamPlan, streams: Mapping[str, Iterator[Record]]) -> Iterator[Batch]:
    """Every record of the (finite) streams once, datasets in name order, packed and collated."""
    records = itertools.chain.from_iterable(streams[name] for name in sorted(streams))
    return map(plan.collate, pack(records, plan.cfg.max_atoms, plan.cfg.max_structures))


def consumer_batches(
    plan: StreamPlan, mode: Mode, read: ReadFn, consumer: Consumer, epoch: int, start_step: int = 0
) -> Iterator[Batch]:
    """One consumer's batches of an epoch, reading shards with `read` (webdataset or Ray Data)."""
    streams = record_streams(plan, mode, read, consumer, epoch)
    if mode == "train":
        return train_batches(plan, streams, consumer, epoch, start_step)
    if mode != "eval":
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    if start_step:
        raise ValueError("start_step applies to train mode only (eval epochs are read whole)")
    return eval_batches(plan, streams)
