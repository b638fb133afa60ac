from __future__ import annotations

import msgpack
import numpy as np
import pytest

from polyfid.data_shards.codec import decode, encode, sample_key
from polyfid.data_shards.record import LevelLabels, Record


def test_round_trip_keeps_every_field_and_precision():
    rng = np.random.default_rng(0)
    rec = Record(
        id="x.h5:g:3",
        dataset="d",
        numbers=np.array([14, 8, 8]),
        positions=rng.normal(size=(3, 3)),
        labels={"a": LevelLabels(-12345.678901234, rng.normal(size=(3, 3))), "b": LevelLabels(energy=-1.5)},
        cell=np.diag([5.0, 6.0, 7.0]),
        pbc=np.array([True, True, False]),
        charge=-1,
        multiplicity=2,
    )
    out = decode(encode(rec))
    assert out.id == rec.id and out.dataset == "d" and out.charge == -1 and out.multiplicity == 2
    np.testing.assert_array_equal(out.numbers, rec.numbers)
    np.testing.assert_array_equal(out.positions, rec.positions)  # float64: exact
    np.testing.assert_array_equal(out.cell, rec.cell)
    assert out.pbc.tolist() == [True, True, False]
    assert out.labels["a"].energy == rec.labels["a"].energy  # float64 energies: exact
    np.testing.assert_array_equal(out.labels["a"].forces, rec.labels["a"].forces.astype(np.float32))
    assert out.labels["b"].forces is None


def test_unknown_codec_version_is_refused_and_keys_are_safe():
    with pytest.raises(ValueError, match="codec version"):
        decode(msgpack.packb({"v": 99}))
    key = sample_key("some/file.name.h5:grp/x:7")
    assert "." not in key and "/" not in key and len(key) == 16
