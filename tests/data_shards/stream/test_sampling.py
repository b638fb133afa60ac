from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from polyfid.data_shards.stream.sampling import ShuffleBuffer, dataset_weights, mixture_draws

COUNTS = {"big": 900, "mid": 90, "small": 10}


def test_ratios_are_normalised_and_must_name_every_dataset():
    assert dataset_weights(COUNTS, ratios={"big": 1, "mid": 1, "small": 2}) == {"big": 0.25, "mid": 0.25, "small": 0.5}
    with pytest.raises(ValueError, match="ratios name"):
        dataset_weights(COUNTS, ratios={"big": 1})


@pytest.mark.parametrize(
    "temperature, expected",
    [
        (None, [0.9, 0.09, 0.01]),
        (1.0, [0.9, 0.09, 0.01]),
        (2.0, np.sqrt([900, 90, 10]) / np.sqrt([900, 90, 10]).sum()),
        (math.inf, [1 / 3] * 3),
        (1e-3, [1.0, 0.0, 0.0]),  # log-space: no overflow at tiny T
    ],
)
def test_temperature(temperature, expected):
    w = dataset_weights(COUNTS, temperature=temperature)
    np.testing.assert_allclose([w["big"], w["mid"], w["small"]], expected, atol=1e-12)


@pytest.mark.parametrize("weights", [[0.9, 0.09, 0.01], [0.2, 0.3, 0.5]])
def test_mixture_frequencies(weights):
    n = 40_000
    draws = mixture_draws(weights, 0, "test")
    got = Counter(draws.next() for _ in range(n))
    for d, p in enumerate(weights):
        assert abs(got[d] / n - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9


def test_mixture_is_seeded_skips_zero_weights_and_resumes_from_its_count():
    def draw(seed, n=0, k=9000):
        draws = mixture_draws([0.5, 0.5, 0.0], seed, n=n)
        return [draws.next() for _ in range(k)]

    assert draw(1) == draw(1) != draw(2)
    assert set(draw(3)) == {0, 1}
    assert draw(1, n=5000, k=4000) == draw(1)[5000:]  # across a block boundary


def test_shuffle_buffer():
    def shuffled(seed, size=100, items=range(1000)):
        buf = ShuffleBuffer(size, seed)
        out = [o[1] for i in items if (o := buf.push(np.array([0, 0, 0, i]), i)) is not None]
        return out + buf.items

    items = list(range(1000))
    out = shuffled(0)
    assert sorted(out) == items and out != items
    assert out == shuffled(0) != shuffled(1)
    # an item moves at most `size` places earlier: it cannot leave before it entered the buffer
    assert all(pos >= item - 100 for pos, item in enumerate(out))
    assert shuffled(0, size=1) == items


def test_shuffle_buffer_resumes_from_its_positions_and_draw_count():
    full = ShuffleBuffer(50, 7)
    outs = [full.push(np.array([1, 2, 3, i]), i) for i in range(400)]
    part = ShuffleBuffer(50, 7)
    for i in range(230):
        part.push(np.array([1, 2, 3, i]), i)
    held = [(w, int(w[3])) for w in part.positions()]  # what a restore re-reads from the positions
    resumed = ShuffleBuffer(50, 7, items=held, n=part.draws.n)
    rest = [resumed.push(np.array([1, 2, 3, i]), i) for i in range(230, 400)]
    assert [o[1] for o in rest] == [o[1] for o in outs[230:]]
    assert all((o[0] == [1, 2, 3, o[1]]).all() for o in rest)
