"""Train batch streams for pretraining: one endless, resumable, prefetched stream per task."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from polyfid.data_shards.stream import Batch, StreamConfig, StreamPlan, StreamSettings, make_dataloader
from polyfid.pretrain.config import DataSection


def stream_config(data: DataSection, seed: int, split: str, datasets: list[str] | None) -> StreamConfig:
    """The data section's stream settings (it is a `StreamSettings`) for one selection of datasets and split."""
    ratios = None if data.ratios is None or datasets is None else {d: data.ratios.get(d, 0.0) for d in datasets}
    settings = {name: getattr(data, name) for name in StreamSettings.model_fields}
    max_atoms = data.max_atoms if split == "train" else data.val_max_atoms or data.max_atoms
    return StreamConfig(
        **{**settings, "datasets": datasets, "ratios": ratios, "max_atoms": max_atoms}, split=split, seed=seed
    )


def epoch_batches(
    plan: StreamPlan,
    data: DataSection,
    mode: str,
    rank: int,
    world_size: int,
    epoch: int,
    start_step: int = 0,
    states: Mapping[int, dict] | None = None,
    with_state: bool = False,
) -> Iterator[Any]:
    """One epoch of this rank's batches with the configured loader (webdataset DataLoader or Ray Data).
    Train mode: `states` seek a resumed epoch; `with_state` yields (batch, logical worker, its state after it)."""
    if data.loader == "ray_data":
        from polyfid.data_shards.stream.ray_loader import ray_batches

        state = (states or {}).get(0)
        return ray_batches(plan, mode, rank, world_size, epoch, start_step, state, with_state)
    return iter(
        make_dataloader(plan, mode, rank, world_size, data.num_workers, epoch, start_step, False, states, with_state)
    )


class TaskStream:
    """Endless train batches of one plan for one rank; `position` restores it exactly, by seeking.

    The position is (epoch, step in epoch, each logical loader worker's stream state after its last consumed
    batch): a few integers per dataset plus the shuffle buffer's sample positions, so resuming re-reads a few
    shards instead of replaying the epoch (a position without states, from older checkpoints, replays).
    With `prefetch` > 0 a background thread reads ahead (across epoch boundaries, where a new epoch's loader
    starts) into a bounded queue, so the training step rarely waits; `position` counts consumed batches only.
    `close()` releases the thread, loader workers and shards (a task that is not running holds none) and
    keeps the position: the next batch reopens the stream there.
    """

    def __init__(self, plan: StreamPlan, data: DataSection, rank: int, world_size: int):
        self.plan, self.data, self.rank, self.world_size = plan, data, rank, world_size
        self.epoch, self.step = 0, 0
        self.states: dict[int, dict] = {}
        self._reader: _Prefetcher | None = None

    @property
    def position(self) -> dict[str, Any]:
        """Plain data (lists and ints) for a weights-only checkpoint."""
        return {"epoch": self.epoch, "step": self.step, "workers": {w: _plain(s) for w, s in self.states.items()}}

    def restore(self, position: Mapping[str, Any] | Sequence[int]) -> None:
        self.close()
        if isinstance(position, Mapping):
            self.epoch, self.step = int(position["epoch"]), int(position["step"])
            self.states = {int(w): s for w, s in position["workers"].items()}
        else:
            (self.epoch, self.step), self.states = map(int, position), {}

    @property
    def is_open(self) -> bool:
        return self._reader is not None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.stop()
            self._reader = None

    def __iter__(self) -> TaskStream:
        return self

    def __next__(self) -> Batch:
        if self._reader is None:
            self._reader = _Prefetcher(self._batches(self.epoch, self.step, dict(self.states)), self.data.prefetch)
        epoch, step, batch, worker, state = self._reader.get()
        if epoch != self.epoch:
            self.states = {}
        self.epoch, self.step = epoch, step
        self.states[worker] = state
        return batch

    def _batches(self, epoch: int, step: int, states: dict[int, dict]) -> Iterator[tuple[int, int, Batch, int, dict]]:
        """(epoch, step in epoch after this batch, batch, worker, its state), endlessly from a position."""
        while True:
            produced = False
            batches = epoch_batches(
                self.plan, self.data, "train", self.rank, self.world_size, epoch, step, states, True
            )
            for batch, worker, state in batches:
                step += 1
                produced = True
                yield epoch, step, batch, worker, state
            if not produced and step == 0:
                raise RuntimeError(f"an epoch of {self.plan.cfg.datasets or 'all datasets'} yielded no batch")
            epoch, step, states = epoch + 1, 0, {}


def _plain(state: dict) -> dict:
    """A stream state with its arrays as lists."""
    return {**state, "held": np.asarray(state["held"]).tolist(), "carry": np.asarray(state["carry"]).tolist()}


class _Prefetcher:
    """Runs an iterator in a daemon thread, `depth` items ahead (0: in the caller's thread); errors re-raise."""

    def __init__(self, items: Iterator, depth: int):
        self.items, self.depth = items, depth
        if depth > 0:
            self.queue: queue.Queue = queue.Queue(maxsize=depth)
            self.halt = threading.Event()
            self.thread = threading.Thread(target=self._fill, name="polyfid-prefetch", daemon=True)
            self.thread.start()

    def _fill(self) -> None:
        try:
            for item in self.items:
                while not self.halt.is_set():
                    try:
                        self.queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.halt.is_set():
                    return
        except BaseException as exc:  # handed to the consumer
            self.queue.put(exc)

    def get(self) -> Any:
        if self.depth == 0:
            return next(self.items)
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        if self.depth > 0:
            self.halt.set()
            self.thread.join(timeout=5)
