"""ani_h5 / spice_h5 on the real ANI-1x, ANI-2x, COMP6 S66x8 and SPICE samples, plus injected defects."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from polyfid.data_shards.errors import SourceError
from polyfid.data_shards.readers import READERS, get_reader
from polyfid.data_shards.readers.common import pack_groups, smiles_formal_charge
from polyfid.data_shards.sources import SourceConfig
from tests.data_shards.readers import (
    BOHR,
    HARTREE,
    RTOL,
    assert_chunks_ok,
    assert_names,
    by_id,
    errors_at,
    make_source,
    plan,
    read_all,
)
from tests.shared_data import shared_path

pytestmark = pytest.mark.shared

ANI_LEVELS = {
    "wB97X/6-31G*": {"energy": "wb97x_dz.energy", "forces": "wb97x_dz.forces"},
    "wB97X/def2-TZVPP": {"energy": "wb97x_tz.energy", "forces": "wb97x_tz.forces"},
    "CCSD(T)/CBS": {"energy": "ccsd(t)_cbs.energy"},
}
SPICE_LEVELS = {"wb97m-d3bj/def2-tzvppd": {"energy": "dft_total_energy", "gradient": "dft_total_gradient"}}
HARTREE_UNITS = {"energy": "hartree", "length": "angstrom"}


def ani1_source(path: Path, levels: dict = ANI_LEVELS, **kwargs) -> SourceConfig:
    return make_source(path, "ani_h5", levels, units=HARTREE_UNITS, **kwargs)


# ---------------------------------------------------------------- real files


def test_ani1x_values_levels_and_nan():
    path = shared_path("public/ani1_n5.hdf5")
    chunks, records, errors = read_all(ani1_source(path, chunk_size=3))
    assert not errors
    assert_chunks_ok(chunks, 8)
    recs = by_id(records)
    assert len(recs) == 8
    n_ccsdt = 0
    with h5py.File(path, "r") as f:
        for group in f:
            g = f[group]
            for i in range(g["coordinates"].shape[0]):
                rec = recs[f"ani1_n5.hdf5:{group}:{i}"]
                np.testing.assert_array_equal(rec.numbers, g["atomic_numbers"][()])
                np.testing.assert_allclose(rec.positions, g["coordinates"][i], rtol=1e-7)
                # every level on the same record (multi-level, never one record per level)
                dz, tz = rec.labels["wb97x/6-31g*"], rec.labels["wb97x/def2-tzvpp"]
                assert dz.energy == pytest.approx(g["wb97x_dz.energy"][i] * HARTREE, rel=RTOL)
                assert tz.energy == pytest.approx(g["wb97x_tz.energy"][i] * HARTREE, rel=RTOL)
                np.testing.assert_allclose(dz.forces, g["wb97x_dz.forces"][i] * HARTREE, rtol=1e-6)
                e_cc = g["ccsd(t)_cbs.energy"][i]
                if np.isnan(e_cc):
                    assert "ccsd(t)/cbs" not in rec.labels
                else:
                    n_ccsdt += 1
                    assert rec.labels["ccsd(t)/cbs"].energy == pytest.approx(e_cc * HARTREE, rel=RTOL)
                    assert rec.labels["ccsd(t)/cbs"].forces is None
                assert rec.dataset == "src" and rec.charge is None and rec.cell is None
    assert n_ccsdt == 6  # NaN on 2 of 8: those records simply lack the label


def test_plan_is_deterministic_and_splits_big_groups():
    path = shared_path("public/ani1_n5.hdf5")
    source = ani1_source(path, chunk_size=2)
    chunks = plan(source)
    assert [c.chunk_id for c in chunks] == [c.chunk_id for c in plan(source)]
    assert [c.selection for c in chunks] == [c.selection for c in plan(source)]
    assert all(c.n_structures <= 2 for c in chunks)
    # C1H6N2O5 holds 3 conformers: split by conformer range over two chunks
    parts = [tuple(s) for c in chunks for s in c.selection if s[0].endswith("C1H6N2O5")]
    assert [(a, b) for _, a, b in parts] == [(0, 1), (1, 3)]
    assert chunks[0].chunk_id == "ani1_n5-00000"
    ids = [r.id for c in chunks for r in get_reader("ani_h5").read(c)]
    assert len(ids) == len(set(ids)) == 8


def test_ani2x_per_conformer_species():
    path = shared_path("public/ani2x_minimal.hdf5")
    levels = {"wb97x/6-31g*": {"energy": "energies", "forces": "forces"}}
    chunks, records, errors = read_all(make_source(path, "ani_h5", levels, units=HARTREE_UNITS, chunk_size=2000))
    assert not errors and len(records) == 5706
    assert_chunks_ok(chunks, 5706)
    with h5py.File(path, "r") as f:
        species, energies, coords = f["002/species"][()], f["002/energies"][()], f["002/coordinates"][()]
    assert len({tuple(r.numbers) for r in records}) == 10  # 10 different diatomics
    for i in (0, 1234, 5705):
        rec = records[i]
        assert rec.id == f"src/ani2x_minimal.hdf5:002:{i}"
        np.testing.assert_array_equal(rec.numbers, species[i])
        np.testing.assert_allclose(rec.positions, coords[i], rtol=1e-7)
        assert rec.labels["wb97x/6-31g*"].energy == pytest.approx(energies[i] * HARTREE, rel=RTOL)


def test_comp6_s66x8_nested_groups_and_symbols():
    path = shared_path("public/s66x8_wb97x6-31gd.h5")
    levels = {"wb97x/6-31g*": {"energy": "energies", "forces": "forces"}}
    chunks, records, errors = read_all(make_source(path, "ani_h5", levels, units=HARTREE_UNITS, chunk_size=100))
    assert not errors and len(records) == 528
    assert_chunks_ok(chunks, 528)
    recs = by_id(records)
    with h5py.File(path, "r") as f:
        g = f["s66x8/mol03"]
        rec = recs["s66x8_wb97x6-31gd.h5:s66x8/mol03:5"]
        symbols = [s.decode() for s in g["species"][()]]
        assert rec.numbers.tolist() == [{"H": 1, "C": 6, "N": 7, "O": 8}[s] for s in symbols]
        assert rec.labels["wb97x/6-31g*"].energy == pytest.approx(g["energies"][5] * HARTREE, rel=RTOL)
        np.testing.assert_allclose(rec.labels["wb97x/6-31g*"].forces, g["forces"][5] * HARTREE, rtol=1e-6)
    # the `groups` option restricts to a glob
    src = make_source(path, "ani_h5", levels, units=HARTREE_UNITS, options={"groups": "s66x8/mol0[01]"})
    assert sum(c.n_structures for c in plan(src)) == 16


def test_spice_bohr_gradient_and_smiles_charge():
    path = shared_path("public/SPICE-1.1.4_n2.hdf5")
    source = make_source(path, "spice_h5", SPICE_LEVELS, units={"energy": "hartree", "length": "bohr"}, chunk_size=20)
    chunks, records, errors = read_all(source)
    assert not errors and len(records) == 55
    assert_chunks_ok(chunks, 55)
    recs = by_id(records)
    with h5py.File(path, "r") as f:
        for group in f:
            g = f[group]
            for i in (0, g["conformations"].shape[0] - 1):
                rec = recs[f"SPICE-1.1.4_n2.hdf5:{group}:{i}"]
                np.testing.assert_allclose(rec.positions, g["conformations"][i] * BOHR, rtol=1e-7)
                lab = rec.labels["wb97m-d3bj/def2-tzvppd"]
                assert lab.energy == pytest.approx(g["dft_total_energy"][i] * HARTREE, rel=RTOL)
                # gradient = -forces; Hartree/bohr -> eV/Angstrom
                np.testing.assert_allclose(lab.forces, -g["dft_total_gradient"][i] * HARTREE / BOHR, rtol=1e-6)
                assert rec.charge == 1  # '[N+:9]' ammonium and '[Na+:5]'
    no_charge = make_source(
        path, "spice_h5", SPICE_LEVELS, units={"energy": "hartree", "length": "bohr"},
        options={"charge_from_smiles": None},
    )  # fmt: skip
    _, records, _ = read_all(no_charge)
    assert {r.charge for r in records} == {None}


def test_one_reader_two_presets():
    assert type(READERS["ani_h5"]) is type(READERS["spice_h5"])
    assert get_reader("ani_h5") is READERS["ani_h5"]
    with pytest.raises(Exception, match="unknown source format 'nope'"):
        get_reader("nope")


@pytest.mark.parametrize(
    ("smiles", "charge"),
    [("CCO", 0), ("[H:3][C:1]#[C:2][H:4].[Na+:5]", 1), ("[O-]C(=O)C", -1), ("[Fe+2].[Cl-].[Cl-]", 0),
     ("[O--]", -2), ("[NH4+].[NH4+].[O-]S(=O)(=O)[O-]", 0), ("[C@@H+]", 1), ("[Ca++]", 2)],
)  # fmt: skip
def test_smiles_formal_charge(smiles, charge):
    assert smiles_formal_charge(smiles) == charge


def test_pack_groups():
    packed = pack_groups([("a", 3), ("b", 0), ("c", 5), ("d", 1)], 4)
    assert packed == [
        ((("a", 0, 3), ("c", 0, 1)), 4),
        ((("c", 1, 5),), 4),
        ((("d", 0, 1),), 1),
    ]


# ---------------------------------------------------------------- bad input


def _copy_group(src: h5py.Group, dst: h5py.Group, keys=("atomic_numbers", "coordinates", "wb97x_dz.energy",
                                                        "wb97x_dz.forces")) -> None:  # fmt: skip
    for k in keys:
        dst[k] = src[k][()]


@pytest.fixture
def defects(tmp_path):
    """A file derived from ani1_n5 where each group carries one defect (in conformer 1 unless noted)."""
    real = shared_path("public/ani1_n5.hdf5")
    path = tmp_path / "ani_defects.h5"
    with h5py.File(real, "r") as f, h5py.File(path, "w") as out:
        base = f["C1H6N2O5"]  # 3 conformers, 14 atoms
        for name in ("good", "inf_energy", "bad_forces", "z0", "z200", "zneg", "close", "short_energy",
                     "bad_symbol", "only_here"):  # fmt: skip
            _copy_group(base, out.create_group(name))
        out["inf_energy/wb97x_dz.energy"][1] = np.inf
        del out["bad_forces/wb97x_dz.forces"]
        out["bad_forces/wb97x_dz.forces"] = np.zeros((3, 15, 3))  # one atom too many
        for name, z in (("z0", 0), ("z200", 200), ("zneg", -1)):
            numbers = base["atomic_numbers"][()].astype(np.int64)
            numbers[2] = z
            del out[f"{name}/atomic_numbers"]
            out[f"{name}/atomic_numbers"] = numbers
        coords = out["close/coordinates"][()]
        coords[1, 1] = coords[1, 0] + [0.05, 0.0, 0.0]
        out["close/coordinates"][...] = coords
        del out["short_energy/wb97x_dz.energy"]
        out["short_energy/wb97x_dz.energy"] = base["wb97x_dz.energy"][:2]
        del out["bad_symbol/atomic_numbers"]
        out["bad_symbol/species"] = np.array([b"C", b"Xq"] + [b"H"] * 12)
        out["only_here/ccsd(t)_cbs.energy"] = base["ccsd(t)_cbs.energy"][()]
        g = out.create_group("empty")
        g["atomic_numbers"] = np.zeros(0, dtype=np.int64)
        g["coordinates"] = np.zeros((2, 0, 3))
        g["wb97x_dz.energy"] = np.zeros(2)
    return path


def test_defects_are_record_errors_naming_file_key_index(defects):
    levels = {k: v for k, v in ANI_LEVELS.items() if k != "wB97X/def2-TZVPP"}
    _, records, errors = read_all(make_source(defects, "ani_h5", levels, units=HARTREE_UNITS, chunk_size=4))
    at = errors_at(errors)
    expected = {
        ("inf_energy", 1): "non_finite_energy",
        ("close", 1): "atoms_too_close",
        ("empty", 0): "empty_structure",
    }
    for i in range(3):
        expected |= {("bad_forces", i): "bad_shape", ("short_energy", i): "bad_shape"}
        expected |= {(z, i): "bad_atomic_number" for z in ("z0", "z200", "zneg", "bad_symbol")}
    expected[("empty", 1)] = "empty_structure"
    assert {k: e.reason for k, e in at.items()} == expected
    for (key, index), err in at.items():
        assert_names(err, defects, key, index)
    assert "[0]" in at[("z0", 0)].detail and "[200]" in at[("z200", 0)].detail and "[-1]" in at[("zneg", 0)].detail
    assert "wb97x_dz.energy" in str(at[("short_energy", 0)])
    assert "Xq" in str(at[("bad_symbol", 0)])
    # the reader kept going: every other conformer is a record
    assert len(records) == 3 * 10 + 2 - len(expected)
    # a level key present in some groups only: those records carry it, the others lack it
    with_cc = {r.id for r in records if "ccsd(t)/cbs" in r.labels}
    assert with_cc == {"src/ani_defects.h5:only_here:0"}  # conformers 1, 2 are NaN in the original


def test_level_key_absent_from_file_is_a_source_error(tmp_path):
    path = shared_path("public/ani1_n5.hdf5")
    levels = {**ANI_LEVELS, "mp2/cbs": {"energy": "mp2_cbs.energy"}}
    with pytest.raises(SourceError) as exc:
        plan(make_source(path, "ani_h5", levels, units=HARTREE_UNITS))
    assert_names(exc.value, path, "mp2_cbs.energy")
    assert "mp2/cbs" in str(exc.value)


def test_not_the_format_is_a_source_error(tmp_path):
    text = tmp_path / "not.h5"
    text.write_text("hello")
    with pytest.raises(SourceError, match="cannot open as HDF5") as exc:
        plan(ani1_source(text))
    assert str(text) in str(exc.value)
    spice = shared_path("public/SPICE-1.1.4_n2.hdf5")  # SPICE read with ANI key names: no 'coordinates'
    with pytest.raises(SourceError, match="no group holds a 'coordinates' dataset"):
        plan(make_source(spice, "ani_h5", SPICE_LEVELS))
    no_numbers = tmp_path / "no_numbers.h5"
    with h5py.File(no_numbers, "w") as f:
        f["mol/coordinates"] = np.zeros((1, 2, 3))
        f["mol/wb97x_dz.energy"] = np.zeros(1)
    with pytest.raises(SourceError, match="'/mol' has no 'atomic_numbers or species'"):
        plan(ani1_source(no_numbers, levels={"x": {"energy": "wb97x_dz.energy"}}))


def test_unknown_option_and_missing_file(tmp_path):
    path = shared_path("public/ani1_n5.hdf5")
    with pytest.raises(SourceError, match="unknown option"):
        plan(ani1_source(path, options={"coordinate": "x"}))
    with pytest.raises(SourceError, match="no file matches"):
        plan(ani1_source(tmp_path / "absent.h5"))
