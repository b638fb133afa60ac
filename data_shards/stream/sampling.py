"""Dataset mixing weights, a seeded mixture of per-dataset streams and a shuffle buffer."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

import numpy as np

T = TypeVar("T")
_BLOCK = 4096  # random draws per numpy call


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


def mix(streams: Mapping[str, Iterable[T]], weights: Mapping[str, float], rng: np.random.Generator) -> Iterator[T]:
    """Endless mixture: each item comes from dataset d with probability weights[d] (streams must not end)."""
    names = [d for d in sorted(weights) if weights[d] > 0]
    iterators = [iter(streams[d]) for d in names]
    p = np.array([weights[d] for d in names])
    p /= p.sum()
    while True:
        for k in rng.choice(len(names), size=_BLOCK, p=p).tolist():
            try:
                yield next(iterators[k])
            except StopIteration:
                raise RuntimeError(f"the stream of dataset {names[k]!r} ended; mixing needs endless streams") from None


def shuffle_buffer(items: Iterable[T], size: int, rng: np.random.Generator) -> Iterator[T]:
    """Approximate shuffle through a buffer of `size` items (size <= 1: unchanged order)."""
    if size <= 1:
        yield from items
        return
    buffer: list[T] = []
    slots: list[int] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        if not slots:
            slots = rng.integers(0, size, _BLOCK).tolist()
        j = slots.pop()
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)
    yield from buffer
