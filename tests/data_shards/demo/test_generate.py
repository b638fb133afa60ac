"""Tests of the demo corpus generator (tiny end-to-end run) and of the committed corpus."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from polyfid.data_shards.demo import molecules
from polyfid.data_shards.demo.run import DEMO_LEVELS
from polyfid.data_shards.sources import load_build_config

CORPUS = Path(__file__).resolve().parents[3] / "data_shards" / "demo_corpus"
CORPUS_FILES = {
    "md_xtb.h5",
    "dft_subset.extxyz",
    "target_ethanol.h5",
    "scan_ethanol.h5",
    "sources.yaml",
    "PROVENANCE.md",
}
KCAL_EV = 0.0433641  # 1 kcal/mol in eV
HAVE_QM = all(importlib.util.find_spec(m) is not None for m in ("pyscf", "tblite"))
LEVEL_NAMES = {"gfn2-xtb", "b3lyp/def2-svp", "mp2/cc-pvdz", "ccsd(t)/cc-pvdz"}

h5py = pytest.importorskip("h5py")


def _group(name: str) -> dict[str, np.ndarray]:
    """All datasets of the single molecule group of a target/scan file, as arrays."""
    with h5py.File(CORPUS / name) as f:
        grp = f[molecules.TARGET]
        out: dict[str, np.ndarray] = {}
        grp.visititems(lambda k, o: out.__setitem__(k, o[()]) if isinstance(o, h5py.Dataset) else None)
        out["@attrs"] = {k: json.loads(f.attrs[k]) for k in ("statistics", "units", "levels", "software")}
    return out


def _rel(e: np.ndarray) -> np.ndarray:
    return e - e.mean()


def _rmsd(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((_rel(a) - _rel(b)) ** 2)))


# --------------------------------------------------------------------------- smoke test


@pytest.mark.skipif(not HAVE_QM, reason="pyscf and tblite are needed to generate")
@pytest.mark.timeout(120)
def test_tiny_pipeline_end_to_end(tmp_path: Path) -> None:
    from ase.io import read

    from polyfid.data_shards.demo.generate import main

    assert main(["--out", str(tmp_path), "--scale", "tiny", "--levels", "b3lyp/def2-svp"]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert names >= CORPUS_FILES
    assert not [n for n in names if n.endswith(".tmp")]
    cfg = load_build_config(tmp_path / "sources.yaml")
    assert {s.name for s in cfg.sources} == {
        "demo_md_xtb",
        "demo_dft_subset",
        "demo_target_ethanol",
        "demo_scan_ethanol",
    }
    frames = read(tmp_path / "dft_subset.extxyz", ":")
    assert len(frames) == 4
    for a in frames:
        assert a.calc is None
        assert a.info["b3lyp_def2svp_ok"] and a.info["gfn2_xtb_ok"]
        assert np.isfinite(a.info["b3lyp_def2svp_energy"]) and a.info["b3lyp_def2svp_energy"] < -1000
        assert a.arrays["b3lyp_def2svp_forces"].shape == (len(a), 3)
    with h5py.File(tmp_path / "md_xtb.h5") as f:
        assert set(f) == {"H2O", "H2CO"}
        assert f["H2O/positions"].shape == (6, 3, 3)
        assert f["H2O/gfn2_xtb/ok"][()].all()
        assert json.loads(f.attrs["units"])["energy"] == "eV"
    with h5py.File(tmp_path / "target_ethanol.h5") as f:
        assert "mp2_ccpvdz" not in f[molecules.TARGET]  # level not requested


@pytest.mark.skipif(not HAVE_QM, reason="pyscf is needed")
@pytest.mark.timeout(60)
def test_timeout_becomes_nan_label() -> None:
    from polyfid.data_shards.qm import Worker, label

    eth = molecules.get(molecules.TARGET)
    with Worker("pyscf") as w:
        lab = label(w, "ccsd(t)/cc-pvdz", eth.numbers, eth.positions, timeout=0.2)
        assert not lab.ok and np.isnan(lab.energy) and "timeout" in lab.error
        h2o = molecules.get("H2O")
        lab = label(w, "b3lyp/def2-svp", h2o.numbers, h2o.positions, timeout=60)  # worker restarted
        assert lab.ok and lab.forces is not None and np.abs(lab.forces.sum(axis=0)).max() < 1e-3


# --------------------------------------------------------------------------- entry points (no QM)


def test_main_records_its_arguments_as_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from polyfid.data_shards.demo import generate

    runs: list = []
    monkeypatch.setattr(generate, "run_pipeline", runs.append)
    assert generate.main(["--out", str(tmp_path), "--scale", "tiny", "--n-mp2", "1"]) == 0
    (run,) = runs
    assert run.program == "python -m polyfid.data_shards.demo.generate"
    assert run.arguments == f"--out {tmp_path} --scale tiny --n-mp2 1"
    assert run.scale.n_mp2 == 1 and run.levels[0] == "gfn2-xtb" and run.deadline == float("inf")


def test_add_arguments_on_a_subcommand_records_a_reproducible_command(tmp_path: Path) -> None:
    """As `polyfid shards generate-demo` calls it: add_arguments on a subparser, generate(args)."""
    import argparse
    import inspect
    import shlex

    from polyfid.data_shards.demo.generate import add_arguments, generate, make_run

    assert list(inspect.signature(generate).parameters) == ["args"]
    parser = argparse.ArgumentParser(prog="polyfid")
    demo = parser.add_subparsers(dest="command").add_parser("shards").add_subparsers().add_parser("generate-demo")
    add_arguments(demo)
    argv = ["shards", "generate-demo", "--out", str(tmp_path), "--levels", "ccsd(t)/cc-pvdz", "--budget-min", "5"]
    args = parser.parse_args(argv)
    run = make_run(args)
    assert run.program == "polyfid shards generate-demo"
    again = parser.parse_args(["shards", "generate-demo", *shlex.split(run.arguments)])
    assert vars(again) == vars(args)
    assert "--scale tiny" in run.arguments and "'ccsd(t)/cc-pvdz'" in run.arguments


# --------------------------------------------------------------------------- committed corpus

corpus = pytest.mark.skipif(not (CORPUS / "target_ethanol.h5").exists(), reason="corpus not generated")


@corpus
def test_corpus_files_and_size() -> None:
    files = {p.name: p.stat().st_size for p in CORPUS.iterdir() if p.is_file()}
    assert set(files) >= CORPUS_FILES
    assert not [n for n in files if n.endswith(".tmp")]
    assert sum(files.values()) < 5 * 2**20


@corpus
def test_sources_yaml_describes_four_levels_two_formats() -> None:
    cfg = load_build_config(CORPUS / "sources.yaml")
    assert len(cfg.sources) >= 3
    assert {s.format for s in cfg.sources} == {"generic_h5", "ase"}
    assert set().union(*(s.levels for s in cfg.sources)) == LEVEL_NAMES
    for s in cfg.sources:
        assert s.units.energy == "ev" and s.units.length == "angstrom"
        assert len(s.files(cfg.base_dir)) == 1


@corpus
def test_md_xtb() -> None:
    with h5py.File(CORPUS / "md_xtb.h5") as f:
        assert set(f) == set(molecules.PRETRAIN)
        for name in f:
            g = f[name]
            z, pos = g["atomic_numbers"][()], g["positions"][()]
            m = len(pos)
            assert m == 300 and pos.shape == (m, len(z), 3)
            assert g["gfn2_xtb/ok"][()].all()
            assert g["gfn2_xtb/forces"].shape == pos.shape
            e = g["gfn2_xtb/energy"][()]
            assert np.isfinite(e).all() and e.std() < 1.0  # eV: thermal fluctuations at 500 K
            d = np.linalg.norm(pos[:, :, None] - pos[:, None], axis=-1) + 10 * np.eye(len(z))
            assert d.min() > 0.7 and d.min(axis=(1, 2)).max() < 1.3  # Angstrom: bonded H
        stats = json.loads(f.attrs["statistics"])
        assert all(v["gfn2-xtb"]["ok"] == 300 for v in stats.values())


@corpus
def test_dft_subset() -> None:
    from ase.io import read

    frames = read(CORPUS / "dft_subset.extxyz", ":")
    assert len(frames) == 20 * len(molecules.PRETRAIN)
    assert {a.info["molecule"] for a in frames} == set(molecules.PRETRAIN)
    ok = [a for a in frames if a.info["b3lyp_def2svp_ok"]]
    assert len(ok) >= 0.95 * len(frames)
    for name in molecules.PRETRAIN:
        sub = [a for a in ok if a.info["molecule"] == name]
        f_dft = np.concatenate([a.arrays["b3lyp_def2svp_forces"].ravel() for a in sub])
        f_xtb = np.concatenate([a.arrays["gfn2_xtb_forces"].ravel() for a in sub])
        assert np.corrcoef(f_dft, f_xtb)[0, 1] > 0.8, name
        e_dft = np.array([a.info["b3lyp_def2svp_energy"] for a in sub])
        e_xtb = np.array([a.info["gfn2_xtb_energy"] for a in sub])
        assert _rmsd(e_dft, e_xtb) < 5 * KCAL_EV, name


@corpus
def test_target_ethanol_levels_and_units() -> None:
    g = _group("target_ethanol.h5")
    m = len(g["positions"])
    assert m >= 300 and g["positions"].shape == (m, 9, 3)
    assert g["gfn2_xtb/ok"].all()
    mp2, cc = g["mp2_ccpvdz/ok"], g["ccsdt_ccpvdz/ok"]
    assert mp2.sum() >= 250 and cc.sum() >= 25
    assert np.isnan(g["mp2_ccpvdz/energy"][~mp2]).all() and np.isfinite(g["mp2_ccpvdz/energy"][mp2]).all()
    stats = g["@attrs"]["statistics"]["target"]
    assert stats["mp2/cc-pvdz"]["ok"] == mp2.sum() and stats["ccsd(t)/cc-pvdz"]["ok"] == cc.sum()
    e_mp2 = g["mp2_ccpvdz/energy"][mp2]
    assert -4300 < e_mp2.mean() < -4100  # eV (ethanol ~ -154.6 Hartree)
    assert _rmsd(e_mp2, g["gfn2_xtb/energy"][mp2]) < 3 * KCAL_EV
    f_mp2, f_xtb = g["mp2_ccpvdz/forces"][mp2].ravel(), g["gfn2_xtb/forces"][mp2].ravel()
    assert np.corrcoef(f_mp2, f_xtb)[0, 1] > 0.9
    assert 0.5 < np.std(f_mp2) < 5  # eV/A at 500 K
    both = mp2 & cc
    assert _rmsd(g["ccsdt_ccpvdz/energy"][both], g["mp2_ccpvdz/energy"][both]) < 1 * KCAL_EV


@corpus
def test_scan_ethanol_is_smooth_and_consistent() -> None:
    g = _group("scan_ethanol.h5")
    ang = g["dihedral_deg"]
    assert len(ang) == 36 and np.allclose(np.diff(ang), 10)
    for key in ("gfn2_xtb", "mp2_ccpvdz"):
        assert g[f"{key}/ok"].all()
        e = g[f"{key}/energy"] - g[f"{key}/energy"].min()
        assert 0.5 * KCAL_EV < e.max() < 5 * KCAL_EV  # a hydroxyl rotor barrier of a few kcal/mol
        assert np.abs(np.diff(np.append(e, e[0]))).max() < 1 * KCAL_EV  # smooth over 10-degree steps
        assert np.allclose(e[1:], e[1:][::-1], atol=0.05 * KCAL_EV)  # E(phi) = E(-phi): Cs-symmetric frame
    e_mp2 = g["mp2_ccpvdz/energy"]
    assert np.argmax(e_mp2) == 0 and np.argmin(e_mp2) == 18  # MP2: cis is the top, trans the minimum


def test_levels_are_the_documented_names() -> None:
    assert set(DEMO_LEVELS) == LEVEL_NAMES


@corpus
def test_corpus_reads_through_polyfid_readers() -> None:
    """Every source of sources.yaml reads without record errors, with the documented label counts."""
    readers = pytest.importorskip("polyfid.data_shards.readers")
    cfg = load_build_config(CORPUS / "sources.yaml")
    counts: dict[tuple[str, str], int] = {}
    for src in cfg.sources:
        reader = readers.get_reader(src.format)
        for chunk in reader.plan(src, cfg.base_dir):
            for rec in reader.read(chunk):
                assert hasattr(rec, "labels"), f"{src.name}: {rec}"
                for level, lab in rec.labels.items():
                    if lab.energy is not None:
                        counts[src.name, level] = counts.get((src.name, level), 0) + 1
    assert counts["demo_md_xtb", "gfn2-xtb"] == 300 * len(molecules.PRETRAIN)
    g = _group("target_ethanol.h5")
    assert counts["demo_target_ethanol", "mp2/cc-pvdz"] == g["mp2_ccpvdz/ok"].sum()
    assert counts["demo_target_ethanol", "ccsd(t)/cc-pvdz"] == g["ccsdt_ccpvdz/ok"].sum()
    assert counts["demo_scan_ethanol", "mp2/cc-pvdz"] == 36
