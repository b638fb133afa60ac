"""generic_h5 on the project's multi-level ethanol data (flat files written from data_shards/demo_corpus) and QM9
(modelforge layout, ../shared), plus injected defects."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from polyfid.data_shards.errors import SourceError
from polyfid.data_shards.sources import SourceConfig
from tests.corpus import write_flat_ethanol
from tests.data_shards.readers import (
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

OPTIONS = {"numbers": "atomic_numbers", "positions": "positions"}
MF_LEVELS = {
    "gfn2-xtb": {"energy": "xtb_gfn2/energy", "forces": "xtb_gfn2/forces", "valid": "xtb_gfn2/ok"},
    "mp2/cc-pvdz": {"energy": "mp2_ccpvdz/energy", "forces": "mp2_ccpvdz/forces", "valid": "mp2_ccpvdz/ok"},
    "ccsd(t)/cc-pvdz": {"energy": "ccsd_t_ccpvdz/energy", "valid": "ccsd_t_ccpvdz/ok"},
}
KJ_MOL = 0.010364269  # eV
NM = 10.0  # Angstrom


def generic(path: Path, levels: dict = MF_LEVELS, options: dict | None = None, **kwargs) -> SourceConfig:
    return make_source(path, "generic_h5", levels, options=OPTIONS if options is None else options, **kwargs)


@pytest.fixture
def ethanol_mf(tmp_path: Path) -> Path:
    """50 ethanol geometries: GFN2-xTB and MP2 E+F on all, CCSD(T) energies on the first 40 (valid flags)."""
    return write_flat_ethanol(tmp_path / "ethanol_mf.h5")


def test_ethanol_mf_every_level_on_one_record(ethanol_mf):
    path = ethanol_mf
    chunks, records, errors = read_all(generic(path, chunk_size=20))
    assert not errors and len(records) == 50
    assert_chunks_ok(chunks, 50)
    recs = by_id(records)
    with h5py.File(path, "r") as f:
        for i in (0, 17, 49):
            rec = recs[f"ethanol_mf.h5:positions:{i}"]
            np.testing.assert_array_equal(rec.numbers, f["atomic_numbers"][()])
            np.testing.assert_array_equal(rec.positions, f["positions"][i])
            assert set(rec.labels) == set(MF_LEVELS) - ({"ccsd(t)/cc-pvdz"} if i >= 40 else set())
            for level, keys in MF_LEVELS.items():
                if level not in rec.labels:
                    continue
                assert rec.labels[level].energy == pytest.approx(f[keys["energy"]][i], rel=RTOL)
                if "forces" in keys:
                    np.testing.assert_allclose(rec.labels[level].forces, f[keys["forces"]][i], rtol=1e-12)
                else:
                    assert rec.labels[level].forces is None


def test_sparse_high_levels_nan_means_absent(tmp_path):
    path = write_flat_ethanol(tmp_path / "ethanol_400.h5", n=400)
    levels = {
        "mp2/cc-pvdz": {"energy": "mp2_ccpvdz/energy", "forces": "mp2_ccpvdz/forces"},
        "gfn2-xtb": {"energy": "xtb_gfn2/energy", "forces": "xtb_gfn2/forces"},
        "ccsd(t)/cc-pvdz": {"energy": "ccsd_t_ccpvdz/energy"},
    }
    chunks, records, errors = read_all(generic(path, levels, chunk_size=120))
    assert not errors and len(records) == 400
    assert len(chunks) == 4
    assert_chunks_ok(chunks, 400)
    # NaN elsewhere = label absent: MP2 on the first 300 geometries, CCSD(T) on the first 40
    assert [index_of(r) for r in records if "mp2/cc-pvdz" in r.labels] == list(range(300))
    assert sum("ccsd(t)/cc-pvdz" in r.labels for r in records) == 40
    with h5py.File(path, "r") as f:
        for i in (2, 250, 299):
            rec = records[i]
            mp2 = rec.labels["mp2/cc-pvdz"]
            assert mp2.energy == pytest.approx(f["mp2_ccpvdz/energy"][i], rel=RTOL)
            np.testing.assert_allclose(mp2.forces, f["mp2_ccpvdz/forces"][i], rtol=1e-12)
            np.testing.assert_allclose(rec.labels["gfn2-xtb"].forces, f["xtb_gfn2/forces"][i], rtol=1e-12)


def test_valid_flags_mark_labels_missing(tmp_path, ethanol_mf):
    path = tmp_path / "flags.h5"
    with h5py.File(ethanol_mf, "r") as f, h5py.File(path, "w") as out:
        for k in ("atomic_numbers", "positions", "xtb_gfn2/energy", "xtb_gfn2/forces", "mp2_ccpvdz/energy"):
            out[k] = f[k][()]
        ok = np.ones(50, dtype=bool)
        ok[[3, 7]] = False
        out["xtb_gfn2/ok"] = ok
        out["mp2_ccpvdz/ok"] = np.where(np.arange(50) == 7, 0, 1).astype(np.int8)  # int flags work too
    levels = {
        "gfn2-xtb": MF_LEVELS["gfn2-xtb"],
        "mp2/cc-pvdz": {"energy": "mp2_ccpvdz/energy", "valid": "mp2_ccpvdz/ok"},
    }
    _, records, errors = read_all(generic(path, levels))
    assert [(e.index, e.reason) for e in errors] == [(7, "no_labels")]
    assert_names(errors[0], path, "positions", 7)
    recs = {index_of(r): r for r in records}
    assert set(recs[3].labels) == {"mp2/cc-pvdz"}
    assert set(recs[4].labels) == {"gfn2-xtb", "mp2/cc-pvdz"}


def test_groups_padding_charge_cell(tmp_path, ethanol_mf):
    """Per-structure numbers with Z=0 padding, groups glob, per-structure charge, constant multiplicity,
    a shared periodic cell."""
    real = ethanol_mf
    path = tmp_path / "padded.h5"
    with h5py.File(real, "r") as f:
        z, pos, forces, energy = (f[k][()] for k in ("atomic_numbers", "positions", "xtb_gfn2/forces",
                                                     "xtb_gfn2/energy"))  # fmt: skip
    with h5py.File(path, "w") as out:
        for g, (a, b) in {"mol_a": (0, 4), "mol_b": (4, 10)}.items():
            m = b - a
            numbers = np.zeros((m, 12), dtype=np.int64)
            numbers[:, :9] = z
            numbers[0, 8] = 0  # structure 0 drops its last hydrogen too
            p = np.full((m, 12, 3), 1e3)  # padding positions are garbage
            p[:, :9] = pos[a:b] + 5.0
            fr = np.zeros((m, 12, 3))
            fr[:, :9] = forces[a:b]
            out[f"{g}/numbers"], out[f"{g}/xyz"], out[f"{g}/F"], out[f"{g}/E"] = numbers, p, fr, energy[a:b]
            out[f"{g}/q"] = np.arange(m) - 1
            out[f"{g}/box"] = np.eye(3) * 12.0
            out[f"{g}/periodic"] = np.array([True, True, False])
        out["not_a_molecule/other"] = np.zeros(3)
    options = {"numbers": "numbers", "positions": "xyz", "groups": "mol_*", "charge": "q", "multiplicity": 1,
               "cell": "box", "pbc": "periodic", "padding": True}  # fmt: skip
    levels = {"gfn2-xtb": {"energy": "E", "forces": "F"}}
    chunks, records, errors = read_all(generic(path, levels, options, chunk_size=3))
    assert not errors and len(records) == 10
    assert_chunks_ok(chunks, 10)
    recs = by_id(records)
    r0, r5 = recs["padded.h5:mol_a:0"], recs["padded.h5:mol_b:1"]
    assert r0.n_atoms == 8 and r5.n_atoms == 9
    np.testing.assert_array_equal(r5.numbers, z)
    np.testing.assert_allclose(r5.positions, pos[5] + 5.0)
    np.testing.assert_allclose(r5.labels["gfn2-xtb"].forces, forces[5])
    np.testing.assert_allclose(r0.labels["gfn2-xtb"].forces, forces[0][:8])
    assert (r0.charge, r5.charge, r5.multiplicity) == (-1, 0, 1)
    np.testing.assert_array_equal(r5.cell, np.eye(3) * 12.0)
    assert r5.pbc.tolist() == [True, True, False]


def test_qm9_modelforge_layout_units():
    path = shared_path("public/qm9_dataset_v1.1_ntc_10.hdf5")
    levels = {"b3lyp/6-31g(2df,p)": {"energy": "internal_energy_at_0K"}}
    options = {"numbers": "atomic_numbers", "positions": "positions", "groups": "*"}
    source = generic(path, levels, options, units={"energy": "kj/mol", "length": "nm"})
    _, records, errors = read_all(source)
    assert not errors and len(records) == 10
    with h5py.File(path, "r") as f:
        g = f["dsgdb9nsd_000004"]
        rec = by_id(records)["qm9_dataset_v1.1_ntc_10.hdf5:dsgdb9nsd_000004:0"]
        np.testing.assert_array_equal(rec.numbers, g["atomic_numbers"][:, 0])
        np.testing.assert_allclose(rec.positions, g["positions"][0] * NM, rtol=1e-12)
        assert rec.labels["b3lyp/6-31g(2df,p)"].energy == pytest.approx(
            g["internal_energy_at_0K"][0, 0] * KJ_MOL, rel=1e-6
        )


@pytest.fixture
def defects(tmp_path, ethanol_mf):
    """ethanol_mf with one defect per structure index: see the dict in the test."""
    real = ethanol_mf
    path = tmp_path / "defects.h5"
    with h5py.File(real, "r") as f:
        z, pos, e, fr = (f[k][()] for k in ("atomic_numbers", "positions", "xtb_gfn2/energy", "xtb_gfn2/forces"))
    numbers = np.tile(z, (10, 1))
    numbers[2, 0], numbers[3, 1], numbers[4, 2] = 200, -3, 0  # Z=0: an error unless padding is declared
    numbers[5] = 0  # all zero: an error, or with declared padding an empty structure
    pos, e, fr = pos[:10].copy(), e[:10].copy(), fr[:10].copy()
    e[1] = -np.inf
    pos[6, 1] = pos[6, 0] + [0.0, 0.05, 0.0]
    fr[7, 3, 1] = np.nan
    pos[8, 4, 2] = np.nan
    with h5py.File(path, "w") as out:
        out["numbers"], out["positions"], out["e"], out["f"] = numbers, pos, e, fr
        out["f_bad"] = np.zeros((10, 8, 3))
        out["e_short"] = e[:9]
    return path


def test_defects_are_record_errors(defects):
    options = {"numbers": "numbers", "positions": "positions"}
    _, records, errors = read_all(generic(defects, {"x": {"energy": "e", "forces": "f"}}, options))
    reasons = {i: err.reason for (_, i), err in errors_at(errors).items()}
    expected = {
        1: "non_finite_energy",
        2: "bad_atomic_number",
        3: "bad_atomic_number",
        4: "bad_atomic_number",  # a Z=0 never deletes an atom silently
        5: "bad_atomic_number",
        6: "atoms_too_close",
        7: "partial_nan_forces",
        8: "non_finite_positions",
    }
    assert reasons == expected
    for err in errors:
        assert_names(err, defects, "positions", err.index)
    assert "[200]" in str(errors[1]) and "[-3]" in str(errors[2]) and "[0]" in str(errors[3])
    assert {index_of(r) for r in records} == {0, 9}

    # declared padding: Z=0 entries are dropped with their atoms
    padded = {**options, "padding": True}
    _, records, errors = read_all(generic(defects, {"x": {"energy": "e", "forces": "f"}}, padded))
    reasons = {i: err.reason for (_, i), err in errors_at(errors).items()}
    assert reasons == {**{k: v for k, v in expected.items() if k != 4}, 5: "empty_structure"}
    assert by_id(records)["defects.h5:positions:4"].n_atoms == 8
    with pytest.raises(SourceError, match="option 'padding' must be true or false"):
        plan(generic(defects, {"x": {"energy": "e"}}, {**options, "padding": "yes"}))

    # forces with the wrong atom count: one error per record, naming the level
    _, records, errors = read_all(generic(defects, {"x": {"energy": "e", "forces": "f_bad"}}, options))
    assert {e.reason for e in errors if e.index in (0, 9)} == {"bad_shape"}
    assert "forces shape (8, 3)" in str(errors_at(errors)[("positions", 0)])
    # a label dataset shorter than the positions: every structure of the block is an error naming the key
    _, records, errors = read_all(generic(defects, {"x": {"energy": "e_short"}}, options))
    assert not records and len(errors) == 10
    assert all(e.reason == "bad_shape" and "e_short" in str(e) for e in errors)


def test_shared_numbers_with_zero_are_not_padding(tmp_path, ethanol_mf):
    path = tmp_path / "z0.h5"
    real = ethanol_mf
    with h5py.File(real, "r") as f, h5py.File(path, "w") as out:
        z = f["atomic_numbers"][()]
        z[0] = 0
        out["atomic_numbers"], out["positions"], out["e"] = z, f["positions"][:2], f["xtb_gfn2/energy"][:2]
    _, records, errors = read_all(generic(path, {"x": {"energy": "e"}}))
    assert not records and [e.reason for e in errors] == ["bad_atomic_number"] * 2
    assert_names(errors[1], path, "positions", 1)


def test_plan_time_source_errors(tmp_path, ethanol_mf):
    path = ethanol_mf
    with pytest.raises(SourceError) as exc:
        plan(generic(path, {**MF_LEVELS, "ccsd(t)/cc-pvtz": {"energy": "ccsd_t_ccpvtz/energy"}}))
    assert_names(exc.value, path, "ccsd_t_ccpvtz/energy")
    with pytest.raises(SourceError, match=r"needs option\(s\) \['numbers'\]"):
        plan(generic(path, options={"positions": "positions"}))
    with pytest.raises(SourceError, match="no group holds a 'coords' dataset"):
        plan(generic(path, options={"numbers": "atomic_numbers", "positions": "coords"}))
    with pytest.raises(SourceError, match="has no 'Z'"):
        plan(generic(path, options={"numbers": "Z", "positions": "positions"}))
    with pytest.raises(SourceError, match=r"no group matching 'mol\*'"):
        plan(generic(path, options={**OPTIONS, "groups": "mol*"}))
    with pytest.raises(SourceError, match="'xtb_gfn2/valid' not found"):
        plan(generic(path, {"x": {"energy": "xtb_gfn2/energy", "valid": "xtb_gfn2/valid"}}))
