"""sgdml_npz on the real sGDML CCSD(T) ethanol file, plus renamed keys, compression and bad archives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from polyfid.data_shards.errors import SourceError
from polyfid.data_shards.sources import SourceConfig
from tests.data_shards.readers import (
    KCAL_MOL,
    RTOL,
    assert_chunks_ok,
    assert_names,
    by_id,
    errors_at,
    index_of,
    make_source,
    plan,
    read_all,
)
from tests.shared_data import shared_path

pytestmark = pytest.mark.shared

LEVELS = {"ccsd(t)/cc-pvtz": {"energy": "E", "forces": "F"}}


def sgdml(path: Path, levels: dict = LEVELS, **kwargs) -> SourceConfig:
    return make_source(path, "sgdml_npz", levels, **kwargs)


def test_real_file_kcal_mol():
    path = shared_path("public/ethanol_ccsd_t-train.npz")
    _, records, errors = read_all(sgdml(path, units={"energy": "kcal/mol"}, chunk_size=400))
    assert not errors and len(records) == 1000
    data = np.load(path, allow_pickle=False)
    for i in (0, 399, 400, 999):
        rec = records[i]
        assert rec.id == f"src/ethanol_ccsd_t-train.npz:R:{i}"
        lab = rec.labels["ccsd(t)/cc-pvtz"]
        assert lab.energy == pytest.approx(data["E"][i, 0] * KCAL_MOL, rel=RTOL)
        np.testing.assert_allclose(lab.forces, data["F"][i] * KCAL_MOL, rtol=1e-6)


def test_real_file_slices_match_direct_read():
    """Chunked slice reads (file units, eV = factor 1) equal a direct np.load."""
    path = shared_path("public/ethanol_ccsd_t-train.npz")
    chunks, records, errors = read_all(sgdml(path, chunk_size=300))
    assert not errors and len(records) == 1000
    assert len(chunks) == 4 and [c.selection for c in chunks][-1] == (900, 1000)
    assert_chunks_ok(chunks, 1000)
    data = np.load(path, allow_pickle=False)
    assert [index_of(r) for r in records] == list(range(1000))
    np.testing.assert_array_equal(np.stack([r.positions for r in records]), data["R"])
    np.testing.assert_array_equal(np.stack([r.labels["ccsd(t)/cc-pvtz"].forces for r in records]), data["F"])
    np.testing.assert_array_equal([r.labels["ccsd(t)/cc-pvtz"].energy for r in records], data["E"][:, 0])
    assert all(r.numbers.tolist() == data["z"].tolist() for r in records)


def _ethanol(n: int = 20) -> dict[str, np.ndarray]:
    data = np.load(shared_path("public/ethanol_ccsd_t-train.npz"), allow_pickle=False)
    return {"R": data["R"][:n].copy(), "z": data["z"].copy(), "E": data["E"][:n, 0].copy(), "F": data["F"][:n].copy()}


def test_renamed_keys_compressed_and_options(tmp_path):
    d = _ethanol()
    path = tmp_path / "renamed.npz"
    np.savez_compressed(path, coords=d["R"], Z=np.tile(d["z"], (20, 1)), energy=d["E"], forces=d["F"],
                        q=np.zeros(20, dtype=np.int64))  # fmt: skip
    levels = {"x": {"energy": "energy", "forces": "forces"}}
    options = {"positions": "coords", "numbers": "Z", "charge": "q", "multiplicity": 1}
    chunks, records, errors = read_all(sgdml(path, levels, options=options, chunk_size=7))
    assert not errors and len(records) == 20
    assert_chunks_ok(chunks, 20)
    rec = by_id(records)["renamed.npz:coords:13"]
    np.testing.assert_array_equal(rec.positions, d["R"][13])
    assert rec.labels["x"].energy == d["E"][13]
    assert (rec.charge, rec.multiplicity) == (0, 1)


def test_gradient_key_is_negated(tmp_path):
    d = _ethanol(3)
    path = tmp_path / "grad.npz"
    np.savez(path, R=d["R"], z=d["z"], G=-d["F"])
    _, records, _ = read_all(sgdml(path, {"x": {"gradient": "G"}}))
    np.testing.assert_array_equal(records[2].labels["x"].forces, d["F"][2])


def test_defects_are_record_errors(tmp_path):
    d = _ethanol(8)
    d["E"][1] = np.inf
    d["R"][2, 1] = d["R"][2, 0] + 0.05
    d["F"][3, 0, 0] = np.nan
    path = tmp_path / "bad.npz"
    np.savez(path, **d)
    _, records, errors = read_all(sgdml(path))
    assert {i: e.reason for (_, i), e in errors_at(errors).items()} == {
        1: "non_finite_energy",
        2: "atoms_too_close",
        3: "partial_nan_forces",
    }
    for e in errors:
        assert_names(e, path, "R", e.index)
    assert len(records) == 5

    for z, reason in ((0, "bad_atomic_number"), (200, "bad_atomic_number"), (-1, "bad_atomic_number")):
        bad = {**_ethanol(2), "z": np.array([6, 6, z, 1, 1, 1, 1, 1, 1])}
        np.savez(path, **bad)
        _, records, errors = read_all(sgdml(path))
        assert [e.reason for e in errors] == [reason] * 2 and f"[{z}]" in str(errors[0])

    np.savez(path, **{**_ethanol(4), "F": np.zeros((4, 10, 3))})
    _, records, errors = read_all(sgdml(path))
    assert [e.reason for e in errors] == ["bad_shape"] * 4 and "forces shape (10, 3)" in str(errors[0])

    np.savez(path, **{**_ethanol(4), "E": np.zeros(3)})  # E shorter than R: the whole block
    _, records, errors = read_all(sgdml(path))
    assert [e.reason for e in errors] == ["bad_shape"] * 4 and "E: shape (3,)" in str(errors[0])
    assert_names(errors[3], path, "R", 3)

    np.savez(path, R=np.zeros((2, 0, 3)), z=np.zeros(0, dtype=int), E=np.zeros(2))
    _, records, errors = read_all(sgdml(path, {"x": {"energy": "E"}}))
    assert [e.reason for e in errors] == ["empty_structure"] * 2


def test_plan_time_source_errors(tmp_path):
    path = shared_path("public/ethanol_ccsd_t-train.npz")
    with pytest.raises(SourceError) as exc:
        plan(sgdml(path, {"x": {"energy": "E_ccsdt"}}))
    assert_names(exc.value, path, "E_ccsdt")
    not_zip = tmp_path / "x.npz"
    not_zip.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(SourceError, match=r"not a readable \.npz archive") as exc:
        plan(sgdml(not_zip))
    assert str(not_zip) in str(exc.value)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **_ethanol(2), theory=np.array([{"evil": 1}], dtype=object))
    plan(sgdml(pickled))  # an object array nobody reads is harmless
    with pytest.raises(SourceError, match="'theory' holds Python objects"):
        plan(sgdml(pickled, options={"charge": "theory"}))
    flat = tmp_path / "flat.npz"
    np.savez(flat, R=np.zeros((2, 9)), z=np.ones(3), E=np.zeros(2), F=np.zeros((2, 3, 3)))
    with pytest.raises(SourceError, match=r"shape \(2, 9\), expected \(M, N, 3\)"):
        plan(sgdml(flat))
