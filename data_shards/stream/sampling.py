"""Dataset mixing weights and the seeded, restorable draws of a stream: mixture, lanes and shuffle buffer."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Generic, TypeVar

import numpy as np

from polyfid.data_shards.stream.seeding import derive_rng

T = TypeVar("T")
DRAW_BLOCK = 4096  # seeded draws per numpy call: draw n is element n % DRAW_BLOCK of block n // DRAW_BLOCK


def dataset_weights(
    n_samples: Mapping[str, int], ratios: Mapping[str, float] | None = None, temperature: float | None = None
) -> dict[str, float]:
    """Normalised sampling probability per dataset.

    `ratios` must name exactly the datasets of `n_samples`. Otherwise p_d ∝ n_d^(1/T) with T = `temperature`
    (default 1: proportional to size; `math.inf`: uniform), computed in log space so small T cannot overflow.
    """
    names = sorted(n_samples)
    if ratios is not None:
        if set(ratios) != set(names):
            raise ValueError(f"ratios name {sorted(ratios)} but the selected datasets are {names}")
        raw = np.array([float(ratios[d]) for d in names])
    else:
        t = 1.0 if temperature is None else float(temperature)
        if not t > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        logits = np.array([math.log(n_samples[d]) for d in names]) / t
        raw = np.exp(logits - logits.max())
    if not raw.sum() > 0:
        raise ValueError(f"all dataset weights are 0: {dict(zip(names, raw.tolist(), strict=True))}")
    return dict(zip(names, (raw / raw.sum()).tolist(), strict=True))


class BlockDraws:
    """The n-th of an endless seeded sequence of draws, made in blocks: its state is the count `n` alone, so a
    stream that restores it continues the very same sequence."""

    def __init__(self, draw_block: Callable[[np.random.Generator], np.ndarray], *keys: int | str, n: int = 0):
        self.draw_block, self.keys, self.n = draw_block, keys, int(n)
        self._index, self._block = -1, np.empty(0, dtype=np.int64)

    def next(self) -> int:
        b, k = divmod(self.n, DRAW_BLOCK)
        if b != self._index:
            self._index, self._block = b, self.draw_block(derive_rng(*self.keys, b))
        self.n += 1
        return int(self._block[k])


def mixture_draws(weights: Sequence[float], *keys: int | str, n: int = 0) -> BlockDraws:
    """Endless seeded draws of an index i with probability weights[i] (normalised)."""
    p = np.asarray(weights, dtype=float)
    p = p / p.sum()
    return BlockDraws(lambda rng: rng.choice(len(p), DRAW_BLOCK, p=p), *keys, "mix", n=n)


class ShuffleBuffer(Generic[T]):
    """Approximate shuffle through `size` slots: once full, each new item takes the slot of the item it sends out,
    a seeded draw. Items are raw samples with their positions (4 integers, see `TrainStream`), kept in an array,
    so its state, the draw count and the positions it holds in slot order, is cheap to copy after every batch."""

    def __init__(self, size: int, *keys: int | str, items: Iterable[tuple[np.ndarray, T]] = (), n: int = 0):
        self.size = size
        self.where = np.zeros((max(size, 1), 4), dtype=np.int64)
        self.items: list[T] = []
        for where, item in items:
            self.where[len(self.items)] = where
            self.items.append(item)
        self.draws = BlockDraws(lambda rng: rng.integers(0, size, DRAW_BLOCK), *keys, "shuffle", n=n)

    def push(self, where: np.ndarray, item: T) -> tuple[np.ndarray, T] | None:
        """Add an item; returns the one sent out, or None while the buffer fills (size <= 1: no shuffling)."""
        if self.size <= 1:
            return where, item
        n = len(self.items)
        if n < self.size:
            self.where[n] = where
            self.items.append(item)
            return None
        j = self.draws.next()
        out = self.where[j].copy(), self.items[j]
        self.where[j], self.items[j] = where, item
        return out

    def positions(self) -> np.ndarray:
        """The held items' positions, in slot order (a copy)."""
        return self.where[: len(self.items)].copy()
