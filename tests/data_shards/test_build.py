"""The shard build end to end on real files: counts, E0, idempotence, resume, bad input, duplicates, verify, CLI."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from polyfid.cli import main
from polyfid.data_shards.build import build_shards
from polyfid.data_shards.codec import decode
from polyfid.data_shards.errors import PolyfidDataError
from polyfid.data_shards.manifest import Manifest
from polyfid.data_shards.record import Record
from polyfid.data_shards.sources import load_build_config
from polyfid.data_shards.verify import verify_shards
from tests.corpus import write_flat_ethanol

pytestmark = pytest.mark.usefixtures("ray_local")

ETHANOL_MF_LEVELS = {
    "gfn2-xtb": {"energy": "xtb_gfn2/energy", "forces": "xtb_gfn2/forces", "valid": "xtb_gfn2/ok"},
    "mp2/cc-pvdz": {"energy": "mp2_ccpvdz/energy", "forces": "mp2_ccpvdz/forces", "valid": "mp2_ccpvdz/ok"},
    "ccsd(t)/cc-pvdz": {"energy": "ccsd_t_ccpvdz/energy", "valid": "ccsd_t_ccpvdz/ok"},
}


def _generic_source(name: str, path: Path, chunk_size: int = 20) -> dict:
    return {
        "name": name,
        "path": str(path),
        "format": "generic_h5",
        "units": {"energy": "ev", "length": "angstrom"},
        "levels": ETHANOL_MF_LEVELS,
        "options": {"numbers": "atomic_numbers", "positions": "positions"},
        "chunk_size": chunk_size,
    }


def _write_config(folder: Path, sources: list[dict], **extra) -> Path:
    path = folder / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": sources, **extra}))
    return path


@pytest.fixture
def ethanol_mf(tmp_path: Path) -> Path:
    """A private flat file of 50 real multi-level ethanol geometries from the project's corpus (tests may damage it)."""
    return write_flat_ethanol(tmp_path / "ethanol_mf.h5")


def _records_in(shard: Path) -> list[Record]:
    with tarfile.open(shard) as tar:
        return [decode(tar.extractfile(member).read()) for member in tar]


def _read_all(folder: Path) -> dict[str, Record]:
    return {rec.id: rec for shard in Manifest.load(folder).shards for rec in _records_in(folder / shard.path)}


def test_build_counts_labels_and_e0(ethanol_mf: Path, tmp_path: Path):
    config = load_build_config(
        _write_config(tmp_path, [_generic_source("ethanol", ethanol_mf)], split={"val": 0.1, "test": 0.1})
    )
    out = tmp_path / "shards"
    summary = build_shards(config, out, progress=False)
    manifest = Manifest.load(out)
    assert summary.n_written == summary.n_read == 50 and summary.n_dropped == 0
    assert sum(s.n_samples for s in manifest.shards) == 50
    assert {s.split for s in manifest.shards} == {"train", "val", "test"}
    records = {int(rid.rsplit(":", 1)[1]): rec for rid, rec in _read_all(out).items()}
    with h5py.File(ethanol_mf) as f:
        ok = f["ccsd_t_ccpvdz/ok"][()].astype(bool)
        energy = f["ccsd_t_ccpvdz/energy"][()]
        positions = f["positions"][()]
    assert sorted(records) == list(range(50))
    for i, rec in records.items():
        np.testing.assert_allclose(rec.positions, positions[i])
        assert ("ccsd(t)/cc-pvdz" in rec.labels) == bool(ok[i])
        if ok[i]:
            assert rec.labels["ccsd(t)/cc-pvdz"].energy == pytest.approx(energy[i])
    # E0 by least squares on the train split; one molecule -> the E0 of its atoms sum to the mean train energy
    stats = manifest.levels["gfn2-xtb"]
    train = [rec for shard in manifest.select(split="train") for rec in _records_in(out / shard.path)]
    e_train = np.array([rec.labels["gfn2-xtb"].energy for rec in train])
    assert sum(stats.e0[str(int(z))] for z in train[0].numbers) == pytest.approx(e_train.mean(), abs=1e-6)
    assert stats.residual_per_atom_std == pytest.approx(e_train.std() / train[0].n_atoms, rel=1e-5)
    assert stats.n_energy == len(train)


def test_rebuild_is_idempotent_and_resumes_after_interruption(ethanol_mf: Path, tmp_path: Path):
    config = load_build_config(_write_config(tmp_path, [_generic_source("ethanol", ethanol_mf, chunk_size=10)]))
    out = tmp_path / "shards"
    build_shards(config, out, progress=False)
    first = (out / "manifest.json").read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.tar")}

    again = build_shards(config, out, progress=False)
    assert again.n_chunks_reused == again.n_chunks == 5
    assert (out / "manifest.json").read_bytes() == first
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.tar")} == stamps

    # An interrupted build: manifest not yet written, one chunk's shard half-written, a stray temp file.
    (out / "manifest.json").unlink()
    victim = sorted(out.rglob("*.tar"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    (victim.parent / f".{victim.name}.999.tmp").write_bytes(b"partial")
    with pytest.raises(PolyfidDataError, match="no manifest"):
        verify_shards(out, progress=False)
    resumed = build_shards(config, out, progress=False)
    assert resumed.n_chunks_reused == 4
    assert (out / "manifest.json").read_bytes() == first
    assert verify_shards(out, progress=False) == []


def test_bad_records_fail_with_location_or_are_skipped_and_reported(ethanol_mf: Path, tmp_path: Path):
    with h5py.File(ethanol_mf, "r+") as f:
        f["xtb_gfn2/energy"][7] = np.inf
        pos = f["positions"][()]
        pos[12, 1] = pos[12, 0] + 0.05
        f["positions"][...] = pos
    config = load_build_config(_write_config(tmp_path, [_generic_source("ethanol", ethanol_mf)]))
    with pytest.raises(PolyfidDataError) as err:
        build_shards(config, tmp_path / "fail", progress=False)
    assert str(ethanol_mf) in str(err.value) and "[7]" in str(err.value) and "non_finite_energy" in str(err.value)
    assert not (tmp_path / "fail" / "manifest.json").exists()

    summary = build_shards(config, tmp_path / "skip", on_error="skip", progress=False)
    assert summary.n_dropped == 2 and summary.n_written == 48
    assert summary.dropped_by_reason == {"non_finite_energy": 1, "atoms_too_close": 1}
    report = json.loads(Path(summary.report_path).read_text())
    assert report["ethanol"]["dropped"] == {"non_finite_energy": 1, "atoms_too_close": 1}
    assert any("[12]" in msg for msg in report["ethanol"]["examples"]["atoms_too_close"])


def test_duplicate_ids_across_sources(ethanol_mf: Path, tmp_path: Path):
    sources = [_generic_source("a", ethanol_mf), _generic_source("b", ethanol_mf)]
    config = load_build_config(_write_config(tmp_path, sources))
    with pytest.raises(PolyfidDataError, match="duplicate record id"):
        build_shards(config, tmp_path / "fail", progress=False)
    summary = build_shards(config, tmp_path / "skip", on_error="skip", progress=False)
    assert summary.n_written == 50 and summary.dropped_by_reason == {"duplicate_id": 50}
    manifest = Manifest.load(tmp_path / "skip")
    assert {s.dataset for s in manifest.shards} == {"a"}
    again = build_shards(config, tmp_path / "skip", on_error="skip", progress=False)
    assert again.n_chunks_reused == again.n_chunks


def test_verify_detects_corruption_and_truncation(ethanol_mf: Path, tmp_path: Path, capsys):
    out = tmp_path / "shards"
    cfg_path = _write_config(tmp_path, [_generic_source("ethanol", ethanol_mf, chunk_size=10)])
    assert main(["shards", "build", str(cfg_path), "--out", str(out), "--no-progress"]) == 0
    assert main(["shards", "verify", str(out), "--no-progress"]) == 0
    assert main(["shards", "inspect", str(out)]) == 0
    assert "gfn2-xtb" in capsys.readouterr().out

    shards = sorted(out.rglob("*.tar"))
    data = bytearray(shards[0].read_bytes())
    data[700] ^= 0xFF
    shards[0].write_bytes(bytes(data))
    shards[1].write_bytes(shards[1].read_bytes()[:-512])
    problems = {p.path: p.problem for p in verify_shards(out, progress=False)}
    rel = [s.relative_to(out).as_posix() for s in shards[:2]]
    assert "sha256" in problems[rel[0]] and "truncated" in problems[rel[1]]
    assert main(["shards", "verify", str(out), "--no-progress"]) == 1
    assert rel[0] in capsys.readouterr().err


def test_bad_config_names_the_file(tmp_path: Path):
    path = _write_config(tmp_path, [{**_generic_source("x", tmp_path / "none.h5"), "units": {"energy": "furlongs"}}])
    with pytest.raises(PolyfidDataError, match="furlongs") as err:
        load_build_config(path)
    assert str(path) in str(err.value)
    assert main(["shards", "build", str(path), "--out", str(tmp_path / "o")]) == 2
