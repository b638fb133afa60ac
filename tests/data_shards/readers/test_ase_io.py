"""ase format on the real extended-XYZ MD17 files and the QM9 ASE database, plus written extxyz/db files."""

from __future__ import annotations

from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from polyfid.data_shards.errors import SourceError
from polyfid.data_shards.sources import SourceConfig
from tests.data_shards.readers import (
    HARTREE,
    KCAL_MOL,
    RTOL,
    assert_chunks_ok,
    assert_names,
    errors_at,
    index_of,
    make_source,
    plan,
    read_all,
)
from tests.shared_data import shared_path

pytestmark = pytest.mark.shared

MD17 = {"pbe+vdw-ts": {"energy": "energy", "forces": "forces"}}


def ase_source(path: Path, levels: dict = MD17, **kwargs) -> SourceConfig:
    return make_source(path, "ase", levels, **kwargs)


def test_aspirin_extxyz_kcal_mol():
    path = shared_path("public/aspirin.xyz")
    chunks, records, errors = read_all(ase_source(path, units={"energy": "kcal/mol"}, chunk_size=4))
    assert not errors and len(records) == 15
    assert_chunks_ok(chunks, 15)
    frames = ase.io.read(path, index=":")
    for i in (0, 7, 14):
        rec = records[i]
        assert rec.id == f"src/aspirin.xyz:frame:{i}"
        assert rec.labels["pbe+vdw-ts"].energy == pytest.approx(frames[i].get_potential_energy() * KCAL_MOL, rel=RTOL)
        np.testing.assert_allclose(rec.labels["pbe+vdw-ts"].forces, frames[i].get_forces() * KCAL_MOL, rtol=1e-6)


def test_ethanol_extxyz_chunks_and_index_option():
    """The 2000-frame MD17 file, file units (factor 1): chunked reads match a direct ase.io.read."""
    path = shared_path("public/ethanol_sampledata.xyz")
    chunks = plan(ase_source(path, chunk_size=500))
    assert len(chunks) == 4
    assert_chunks_ok(chunks, 2000)
    assert [c.chunk_id for c in chunks] == [f"ethanol_sampledata-{i:05d}" for i in range(4)]

    source = ase_source(path, chunk_size=40, options={"index": "100:300:2"})
    chunks, records, errors = read_all(source)
    assert not errors and len(records) == 100 and len(chunks) == 3
    assert [index_of(r) for r in records] == list(range(100, 300, 2))
    frames = ase.io.read(path, index="100:300:2")
    for rec, atoms in zip(records, frames, strict=True):
        np.testing.assert_array_equal(rec.numbers, atoms.numbers)
        np.testing.assert_array_equal(rec.positions, atoms.positions)
        assert rec.labels["pbe+vdw-ts"].energy == atoms.get_potential_energy()
        np.testing.assert_array_equal(rec.labels["pbe+vdw-ts"].forces, atoms.get_forces())
        assert rec.cell is None and rec.pbc is None


def test_qm9_ase_db_data_keys():
    path = shared_path("public/test_qm9.db")
    levels = {"b3lyp/6-31g(2df,p)": {"energy": "energy_U0"}}
    chunks, records, errors = read_all(ase_source(path, levels, units={"energy": "hartree"}, chunk_size=8))
    assert not errors and len(records) == 20
    assert_chunks_ok(chunks, 20)
    with ase.db.connect(path) as db:
        rows = list(db.select())
    for i in (0, 13, 19):
        rec, row = records[i], rows[i]
        assert rec.id == f"src/test_qm9.db:frame:{i}"
        np.testing.assert_array_equal(rec.numbers, row.numbers)
        assert rec.labels["b3lyp/6-31g(2df,p)"].energy == pytest.approx(row.data["energy_U0"] * HARTREE, rel=RTOL)


def _frames(n: int = 6) -> list[Atoms]:
    """Ethanol frames from the real file with two levels stored three ways (calculator, info, arrays)."""
    frames = ase.io.read(shared_path("public/ethanol_sampledata.xyz"), index=f":{n}")
    for i, atoms in enumerate(frames):
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
        atoms.info.update(low_energy=e / 2, total_charge=i % 2, spin_mult=1)
        atoms.arrays["low_forces"] = f / 2
    return frames


def test_written_extxyz_multilevel_charge_and_cell(tmp_path):
    frames = _frames()
    for atoms in frames[:3]:
        atoms.cell, atoms.pbc = np.diag([10.0, 11.0, 12.0]), True
    del frames[4].info["low_energy"]  # present in some frames only: that record lacks the energy
    path = tmp_path / "multi.extxyz"
    ase.io.write(path, frames, format="extxyz")
    levels = {**MD17, "low": {"energy": "low_energy", "forces": "low_forces"}}
    options = {"charge": "total_charge", "multiplicity": "spin_mult"}
    _, records, errors = read_all(ase_source(path, levels, options=options, chunk_size=4))
    assert not errors and len(records) == 6
    for i, rec in enumerate(records):
        assert set(rec.labels) == {"pbe+vdw-ts", "low"}
        assert rec.labels["low"].energy == (None if i == 4 else pytest.approx(frames[i].info["low_energy"]))
        np.testing.assert_allclose(rec.labels["low"].forces, frames[i].arrays["low_forces"])
        assert (rec.charge, rec.multiplicity) == (i % 2, 1)
    np.testing.assert_array_equal(records[0].cell, np.diag([10.0, 11.0, 12.0]))
    assert records[0].pbc.tolist() == [True] * 3 and records[5].cell is None


def test_written_ase_db_key_value_pairs_and_data(tmp_path):
    path = tmp_path / "multi.db"
    with ase.db.connect(path) as db:
        for i, atoms in enumerate(_frames(5)):
            if i == 3:
                db.write(atoms, key_value_pairs={"e_low": float(atoms.info["low_energy"])})  # no data here
            else:
                db.write(atoms, e_low=float(atoms.info["low_energy"]), data={"f_low": atoms.arrays["low_forces"]})
    levels = {**MD17, "low": {"energy": "e_low", "forces": "f_low"}}
    _, records, errors = read_all(ase_source(path, levels, chunk_size=2))
    assert not errors and len(records) == 5
    frames = _frames(5)
    for i, rec in enumerate(records):
        assert rec.labels["pbe+vdw-ts"].energy == pytest.approx(frames[i].get_potential_energy())
        assert rec.labels["low"].energy == pytest.approx(frames[i].info["low_energy"])
        if i == 3:
            assert rec.labels["low"].forces is None
        else:
            np.testing.assert_allclose(rec.labels["low"].forces, frames[i].arrays["low_forces"])


def test_other_ase_formats_traj_and_json_db(tmp_path):
    frames = _frames(4)
    traj, db = tmp_path / "md.traj", tmp_path / "md.json"
    ase.io.write(traj, frames)
    ase.io.write(db, frames)
    for path in (traj, db):
        chunks, records, errors = read_all(ase_source(path, chunk_size=3))
        assert not errors and len(records) == 4 and len(chunks) == 2
        for rec, atoms in zip(records, frames, strict=True):
            assert rec.labels["pbe+vdw-ts"].energy == pytest.approx(atoms.get_potential_energy())
            np.testing.assert_allclose(rec.labels["pbe+vdw-ts"].forces, atoms.get_forces())


def _write_xyz(path: Path, frames: list[tuple[list[str], np.ndarray, float]]) -> None:
    lines = []
    for symbols, pos, energy in frames:
        lines += [str(len(symbols)), f'Properties=species:S:1:pos:R:3 energy={energy} pbc="F F F"']
        lines += [f"{s} {x} {y} {z}" for s, (x, y, z) in zip(symbols, pos, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def test_defects_are_record_errors(tmp_path):
    atoms = ase.io.read(shared_path("public/aspirin.xyz"), index=0)
    sym, pos, e = atoms.get_chemical_symbols(), atoms.positions, -1000.0
    close = pos.copy()
    close[1] = close[0] + [0.05, 0, 0]
    frames = [(sym, pos, e), (sym, pos, float("inf")), (["X", *sym[1:]], pos, e), (sym, close, e), (sym, pos, e)]
    path = tmp_path / "bad.xyz"
    _write_xyz(path, frames)
    levels = {"x": {"energy": "energy"}}
    _, records, errors = read_all(ase_source(path, levels))
    assert {i: err.reason for (_, i), err in errors_at(errors).items()} == {
        1: "non_finite_energy",
        2: "bad_atomic_number",  # 'X' is ASE's dummy atom, Z=0
        3: "atoms_too_close",
    }
    for err in errors:
        assert_names(err, path, "frame", err.index)
    assert [index_of(r) for r in records] == [0, 4]

    # a frame ASE cannot parse: the others are still read, that one is an error naming its index
    text = path.read_text().splitlines()
    n = len(sym) + 2
    text[n + 2 + 3] = "C 1.0 not_a_number 2.0"  # frame 1, atom 3
    path.write_text("\n".join(text) + "\n")
    _, records, errors = read_all(ase_source(path, levels, chunk_size=3))
    expected = [(1, "unreadable"), (2, "bad_atomic_number"), (3, "atoms_too_close")]
    assert [(e.index, e.reason) for e in errors] == expected
    assert_names(errors[0], path, "frame", 1)
    assert [index_of(r) for r in records] == [0, 4]


def test_plan_time_source_errors(tmp_path):
    path = shared_path("public/aspirin.xyz")
    with pytest.raises(SourceError) as exc:
        plan(ase_source(path, {"x": {"energy": "dft_energy"}}))
    assert_names(exc.value, path, "dft_energy")
    db = shared_path("public/test_qm9.db")
    with pytest.raises(SourceError) as exc:
        plan(ase_source(db, {"x": {"energy": "energy_U1"}}))
    assert_names(exc.value, db, "energy_U1")
    junk = tmp_path / "junk.xyz"
    junk.write_text("not a number\nfoo\n")
    with pytest.raises(SourceError, match="ASE cannot read the file") as exc:
        plan(ase_source(junk))
    assert str(junk) in str(exc.value)
    with pytest.raises(SourceError, match="option 'index'"):
        plan(ase_source(path, options={"index": "a:b"}))
    with pytest.raises(SourceError, match="unknown option"):
        plan(ase_source(path, options={"charge_key": "q"}))
