"""Which samples of a dataset one consumer (rank, dataloader worker) reads, endlessly or once."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from polyfid.data_shards.stream.catalog import ShardRef
from polyfid.data_shards.stream.seeding import derive_rng

# Reads shards (possibly an endless iterator) in order, checking each against its sha256; yields raw samples.
ReadFn = Callable[[Iterator[ShardRef]], Iterable[bytes]]


@dataclass(frozen=True)
class Consumer:
    """One reader of the stream: a dataloader `worker` (of `num_workers`, >= 1) on a `rank` (of `world_size`)."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.world_size and 0 <= self.worker < self.num_workers):
            raise ValueError(f"invalid consumer {self}")

    @property
    def id(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def count(self) -> int:
        return self.world_size * self.num_workers


def shard_cycles(
    shards: Sequence[ShardRef], consumer: Consumer, *, seed: int, epoch: int, dataset: str, endless: bool
) -> Iterator[ShardRef]:
    """Shards the consumer reads, cycle after cycle.

    Endless: every cycle reshuffles the shard list with a seed from (seed, epoch, dataset, cycle). Otherwise
    one cycle in manifest order. With at least as many shards as consumers each consumer reads every
    `count`-th shard of a cycle, else it reads all of them (see :func:`consumer_stream`).
    """
    for cycle in itertools.count() if endless else range(1):
        order = (
            [shards[i] for i in derive_rng(seed, epoch, dataset, cycle).permutation(len(shards))]
            if endless
            else list(shards)
        )
        yield from order[consumer.id :: consumer.count] if len(shards) >= consumer.count else order


def consumer_stream(
    shards: Sequence[ShardRef], read: ReadFn, consumer: Consumer, *, seed: int, epoch: int, dataset: str, endless: bool
) -> Iterator[bytes]:
    """Raw samples of one dataset for one consumer; across all consumers, every sample once per cycle.

    With fewer shards than consumers every consumer reads all shards and keeps samples i % count == id, i
    counted across cycles, so each consumer gets samples even when the dataset has fewer than `count`.
    """
    samples = iter(read(shard_cycles(shards, consumer, seed=seed, epoch=epoch, dataset=dataset, endless=endless)))
    if len(shards) >= consumer.count:
        return samples
    return itertools.islice(samples, consumer.id, None, consumer.count)
