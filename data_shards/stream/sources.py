"""Which samples of a dataset one consumer (rank, dataloader worker) reads, and where it stands in them.

A consumer's shard sequence runs cycle after cycle (train: endlessly, each cycle reshuffled with a seed from
(seed, epoch, dataset, cycle); eval: one cycle in manifest order). With at least as many shards as consumers a
consumer holds every `count`-th shard of a cycle; with fewer, every consumer walks all of them and keeps every
`count`-th sample, so each still gets samples. Train streams interleave `lanes` shards at once (seeded lane draws),
so consecutive samples come from several shards, not one. Every sample comes with its position (cycle, shard index
in the cycle, offset in the shard), and a stream's state is a few integers: it resumes by seeking, not replaying.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from polyfid.data_shards.stream.catalog import ShardRef
from polyfid.data_shards.stream.sampling import DRAW_BLOCK, BlockDraws
from polyfid.data_shards.stream.seeding import derive_rng

# Reads one shard whole, checked against its sha256; returns its raw samples in order.
ReadShard = Callable[[ShardRef], list[bytes]]
Position = tuple[int, int, int]  # (cycle, shard index in the consumer's cycle, sample offset in that shard)


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


class DatasetStream:
    """Raw samples of one dataset for one consumer, each with its `Position`; `state()` resumes it exactly."""

    def __init__(
        self,
        shards: Sequence[ShardRef],
        consumer: Consumer,
        read: ReadShard,
        *,
        seed: int,
        epoch: int,
        dataset: str,
        endless: bool,
        lanes: int = 1,
        state: dict[str, Any] | None = None,
    ):
        self.shards, self.consumer, self.read = list(shards), consumer, read
        self.seed, self.epoch, self.dataset, self.endless = seed, epoch, dataset, endless
        self.split = len(self.shards) >= consumer.count  # each consumer its own shards, else all of them
        self.per_cycle = len(self.shards[consumer.id :: consumer.count]) if self.split else len(self.shards)
        n_lanes = min(lanes, self.per_cycle) if endless else 1
        state = state or {"next": [0, n_lanes], "lanes": [[0, j, 0] for j in range(n_lanes)], "draws": 0, "taken": 0}
        self._order: dict[int, list[ShardRef]] = {}
        self._loaded: dict[tuple[int, int], list[bytes]] = {}
        self.next_shard = self._normal(*state["next"])
        self.lanes: list[list[int] | None] = [None if p is None else self._lane_at(*p) for p in state["lanes"]]
        self.taken: int = state["taken"]  # samples the lanes produced, before keeping every count-th (not split)
        n_lanes = len(self.lanes)

        def draw(rng: np.random.Generator) -> np.ndarray:
            return rng.integers(0, n_lanes, DRAW_BLOCK)

        self.draws = BlockDraws(draw, seed, epoch, dataset, "lanes", n=state["draws"])

    def state(self) -> dict[str, Any]:
        lanes = [None if p is None else list(p) for p in self.lanes]
        return {"next": list(self.next_shard), "lanes": lanes, "draws": self.draws.n, "taken": self.taken}

    def cycle_shards(self, cycle: int) -> list[ShardRef]:
        """The consumer's shards of one cycle, in reading order."""
        if cycle not in self._order:
            if len(self._order) > 4:
                self._order.pop(min(self._order))
            order = self.shards
            if self.endless:
                rng = derive_rng(self.seed, self.epoch, self.dataset, cycle)
                order = [self.shards[i] for i in rng.permutation(len(self.shards))]
            self._order[cycle] = order[self.consumer.id :: self.consumer.count] if self.split else order
        return self._order[cycle]

    def __iter__(self) -> Iterator[tuple[Position, bytes]]:
        return self

    def __next__(self) -> tuple[Position, bytes]:
        while True:
            j = self.draws.next() if len(self.lanes) > 1 else 0  # several lanes only in endless streams
            lane = self.lanes[j]
            if lane is None:  # the one lane of a finished pass
                raise StopIteration
            cycle, index, offset = lane
            raw = self._samples(cycle, index)[offset]
            self.lanes[j] = self._lane_at(cycle, index, offset + 1)
            keep = self.split or self.taken % self.consumer.count == self.consumer.id
            self.taken += 1
            if keep:
                return (cycle, index, offset), raw

    def fetch(self, positions: Iterable[Position]) -> list[bytes]:
        """The raw samples at `positions` (e.g. a saved shuffle buffer), reading each shard once; afterwards only
        the lanes' shards stay in memory."""
        samples = [self._samples(cycle, index)[offset] for cycle, index, offset in positions]
        held = {(p[0], p[1]) for p in self.lanes if p is not None}
        for key in set(self._loaded) - held:
            del self._loaded[key]
        return samples

    def _samples(self, cycle: int, index: int) -> list[bytes]:
        key = (cycle, index)
        if key not in self._loaded:
            self._loaded[key] = self.read(self.cycle_shards(cycle)[index])
        return self._loaded[key]

    def _normal(self, cycle: int, index: int) -> tuple[int, int]:
        return divmod(cycle * self.per_cycle + index, self.per_cycle)

    def _lane_at(self, cycle: int, index: int, offset: int) -> list[int] | None:
        """A lane at (cycle, index, offset), moved on to the next unread shard when that one is used up (and
        None when the stream has ended: an eval pass reads one cycle)."""
        while True:
            if not self.endless and cycle > 0:
                return None
            if offset < self.cycle_shards(cycle)[index].n_samples:
                return [cycle, index, offset]
            self._loaded.pop((cycle, index), None)
            (cycle, index), offset = self.next_shard, 0
            self.next_shard = self._normal(cycle, index + 1)
