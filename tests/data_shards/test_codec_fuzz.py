"""Fuzzing the sample codec: any bytes decode to a record or raise the named `CodecError`, and every record a
shard can hold survives encode -> decode unchanged."""

from __future__ import annotations

import msgpack
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from polyfid.data_shards.codec import CodecError, decode, encode
from polyfid.data_shards.record import LevelLabels, Record

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


def _decodes_or_names(data: bytes) -> None:
    try:
        rec = decode(data)
    except CodecError as exc:
        assert str(exc).startswith("sample does not decode")
        return
    again = decode(encode(rec))
    assert again.id == rec.id and np.array_equal(again.numbers, rec.numbers)
    assert np.array_equal(again.positions, rec.positions, equal_nan=True)


@given(st.binary(max_size=512))
def test_arbitrary_bytes(data):
    _decodes_or_names(data)


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | finite
    | st.text(max_size=8)
    | st.binary(max_size=48),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from(["v", "id", "ds", "z", "r", "l", "q", "m", "c", "p"]), json_like), st.data())
def test_malformed_documents(doc, data):
    if data.draw(st.booleans()):
        doc["v"] = 1  # past the version check, into the field parsing
    _decodes_or_names(msgpack.packb(doc, use_bin_type=True))


@st.composite
def records(draw) -> Record:
    n = draw(st.integers(1, 6))
    numbers = np.array(draw(st.lists(st.integers(1, 118), min_size=n, max_size=n)))
    positions = np.array(draw(st.lists(finite, min_size=3 * n, max_size=3 * n))).reshape(n, 3)
    labels = {}
    for level in draw(st.lists(st.sampled_from(["a", "b/c", "ccsd(t)/cbs"]), unique=True, max_size=3)):
        forces = draw(st.none() | st.just(np.arange(3 * n, dtype=np.float64).reshape(n, 3)))
        energy = draw(st.none() | finite) if forces is not None else draw(finite)
        labels[level] = LevelLabels(energy, forces)
    periodic = draw(st.booleans())
    return Record(
        id=draw(st.text(min_size=1, max_size=20)),
        dataset=draw(st.text(min_size=1, max_size=8)),
        numbers=numbers,
        positions=positions,
        labels=labels,
        cell=np.diag(draw(st.lists(finite, min_size=3, max_size=3))) if periodic else None,
        pbc=np.array(draw(st.lists(st.booleans(), min_size=3, max_size=3))) if periodic else None,
        charge=draw(st.none() | st.integers(-4, 4)),
        multiplicity=draw(st.none() | st.integers(1, 5)),
    )


@given(records())
def test_round_trip_is_exact(rec):
    out = decode(encode(rec))
    assert (out.id, out.dataset, out.charge, out.multiplicity) == (rec.id, rec.dataset, rec.charge, rec.multiplicity)
    assert np.array_equal(out.numbers, rec.numbers) and np.array_equal(out.positions, rec.positions)
    assert set(out.labels) == set(rec.labels)
    for level, lab in rec.labels.items():
        assert out.labels[level].energy == lab.energy
        assert (out.labels[level].forces is None) == (lab.forces is None)
    assert (out.cell is None) == (rec.cell is None)
    if rec.cell is not None:
        assert np.array_equal(out.cell, rec.cell) and out.pbc.tolist() == rec.pbc.tolist()
