from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from polyfid.data_shards.stream.sampling import dataset_weights, mix, shuffle_buffer

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


def _tokens(name):
    return itertools.repeat(name)


@pytest.mark.parametrize("weights", [{"big": 0.9, "mid": 0.09, "small": 0.01}, {"big": 0.2, "mid": 0.3, "small": 0.5}])
def test_mixture_frequencies(weights):
    n = 40_000
    got = Counter(itertools.islice(mix({d: _tokens(d) for d in weights}, weights, np.random.default_rng(0)), n))
    for d, p in weights.items():
        assert abs(got[d] / n - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9


def test_mixture_is_seeded_and_skips_zero_weights():
    weights = {"a": 0.5, "b": 0.5, "c": 0.0}
    streams = {"a": _tokens("a"), "b": _tokens("b")}  # no stream needed for a zero-weight dataset

    def draw(seed):
        return list(itertools.islice(mix(streams, weights, np.random.default_rng(seed)), 500))

    assert draw(1) == draw(1) != draw(2)
    assert set(draw(3)) == {"a", "b"}


def test_mixture_needs_endless_streams():
    with pytest.raises(RuntimeError, match="'a' ended"):
        list(mix({"a": iter([1, 2])}, {"a": 1.0}, np.random.default_rng(0)))


def test_shuffle_buffer():
    items = list(range(1000))
    out = list(shuffle_buffer(items, 100, np.random.default_rng(0)))
    assert sorted(out) == items and out != items
    assert out == list(shuffle_buffer(items, 100, np.random.default_rng(0)))
    assert out != list(shuffle_buffer(items, 100, np.random.default_rng(1)))
    # an item moves at most `size` places earlier: it cannot leave before it entered the buffer
    assert all(pos >= item - 100 for pos, item in enumerate(out))
    assert list(shuffle_buffer(items, 1, np.random.default_rng(0))) == items
