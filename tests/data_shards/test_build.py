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
from polyfid.core.errors import ConfigError
from polyfid.data_shards.build import build_shards, plan_chunks, plan_mixes
from polyfid.data_shards.codec import decode
from polyfid.data_shards.errors import PolyfidDataError
from polyfid.data_shards.manifest import Manifest, content_hash
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
    source = _generic_source("ethanol", ethanol_mf, chunk_size=10)
    config = load_build_config(_write_config(tmp_path, [source], mix_chunks=1))
    out = tmp_path / "shards"
    build_shards(config, out, progress=False)
    first = (out / "manifest.json").read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.tar")}

    again = build_shards(config, out, progress=False)
    assert again.n_mixes_reused == again.n_mixes == again.n_chunks == 5
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
    assert resumed.n_mixes_reused == 4
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


def test_same_file_names_in_two_folders_give_distinct_ids(ethanol_mf: Path, tmp_path: Path):
    """Issue 10 case 4: the files `one/ethanol_mf.h5` and `two/ethanol_mf.h5` used to give the same ids (a false
    duplicate error, or the second source silently dropped with --on-error skip)."""
    for sub in ("one", "two"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "ethanol_mf.h5").write_bytes(ethanol_mf.read_bytes())
    sources = [_generic_source("a", tmp_path / "one" / "ethanol_mf.h5"),
               _generic_source("b", tmp_path / "two" / "ethanol_mf.h5")]  # fmt: skip
    config = load_build_config(_write_config(tmp_path, sources))
    for on_error in ("fail", "skip"):
        summary = build_shards(config, tmp_path / on_error, on_error=on_error, progress=False)
        assert summary.n_written == 100 and summary.n_dropped == 0
    records = _read_all(tmp_path / "fail")
    assert len(records) == 100 and {r.dataset for r in records.values()} == {"a", "b"}
    # the same location read by two datasets lands in the same split (no test geometry trained on elsewhere)
    manifest = Manifest.load(tmp_path / "fail")
    split = {(s.dataset, rec.id.partition("/")[2]): s.split for s in manifest.shards
             for rec in _records_in(tmp_path / "fail" / s.path)}  # fmt: skip
    assert all(split[("a", loc)] == split[("b", loc)] for (_, loc) in split)


def test_records_without_any_label_are_dropped_and_counted_even_in_fail_mode(ethanol_mf: Path, tmp_path: Path):
    """Issue 10 case 7: NaN means "not computed"; a record whose every label is missing used to abort the build."""
    with h5py.File(ethanol_mf, "r+") as f:
        for key in ("xtb_gfn2/ok", "mp2_ccpvdz/ok", "ccsd_t_ccpvdz/ok"):
            ok = f[key][()]
            ok[3] = 0
            f[key][...] = ok
    config = load_build_config(_write_config(tmp_path, [_generic_source("ethanol", ethanol_mf)]))
    summary = build_shards(config, tmp_path / "out", progress=False)
    assert summary.n_written == 49 and summary.dropped_by_reason == {"no_labels": 1}
    report = json.loads(Path(summary.report_path).read_text())
    assert any("[3]" in msg for msg in report["ethanol"]["examples"]["no_labels"])


def test_implausible_energy_or_force_is_a_named_error(ethanol_mf: Path, tmp_path: Path):
    """Issue 10 case 6: an energy of 1e30 eV was accepted (E0(H) became 4e28 eV)."""
    with h5py.File(ethanol_mf, "r+") as f:
        f["xtb_gfn2/energy"][5] = 1e30
        f["mp2_ccpvdz/forces"][9, 2, 1] = 5e4
    config = load_build_config(_write_config(tmp_path, [_generic_source("ethanol", ethanol_mf)]))
    with pytest.raises(PolyfidDataError, match=r"\[5\].*implausible_energy.*max_abs_energy_per_atom"):
        build_shards(config, tmp_path / "fail", progress=False)
    summary = build_shards(config, tmp_path / "skip", on_error="skip", progress=False)
    assert summary.dropped_by_reason == {"implausible_energy": 1, "implausible_forces": 1}
    assert max(abs(e) for e in Manifest.load(tmp_path / "skip").levels["gfn2-xtb"].e0.values()) < 1e4
    loose = {**_generic_source("ethanol", ethanol_mf), "limits": {"max_abs_energy_per_atom": 1e31,
                                                                  "max_abs_force": 1e5}}  # fmt: skip
    config = load_build_config(_write_config(tmp_path, [loose]))
    assert build_shards(config, tmp_path / "loose", progress=False).n_written == 50


def test_rebuild_replaces_a_same_size_corrupted_shard(ethanol_mf: Path, tmp_path: Path):
    """Issue 10 case 3: the reuse check compared sizes only, so a flipped byte survived a re-build."""
    source = _generic_source("ethanol", ethanol_mf, chunk_size=10)
    config = load_build_config(_write_config(tmp_path, [source], mix_chunks=2))
    out = tmp_path / "shards"
    build_shards(config, out, progress=False)
    victim = sorted(out.rglob("*.tar"))[0]
    good = victim.read_bytes()
    data = bytearray(good)
    data[700] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert verify_shards(out, progress=False)
    again = build_shards(config, out, progress=False)
    assert again.n_mixes_reused == again.n_mixes - 1
    assert victim.read_bytes() == good and verify_shards(out, progress=False) == []


def test_manifest_edits_are_caught_and_verify_cross_checks_the_folder(ethanol_mf: Path, tmp_path: Path, capsys):
    """Issue 10 case 2: removing a shard entry passed verify (training then streamed a fifth of the data);
    editing a count or an E0 passed too."""
    config = load_build_config(_write_config(tmp_path, [_generic_source("ethanol", ethanol_mf, chunk_size=10)]))
    out = tmp_path / "shards"
    build_shards(config, out, progress=False)
    path = out / "manifest.json"
    original = path.read_text()
    raw = json.loads(original)
    edits = {
        "removed entry": lambda m: m["shards"].pop(0),
        "count": lambda m: m["shards"][0].update(n_samples=m["shards"][0]["n_samples"] + 1),
        "E0": lambda m: m["levels"]["gfn2-xtb"]["e0"].update({"1": 0.0}),
    }
    for what, edit in edits.items():
        edited = json.loads(original)
        edit(edited)
        path.write_text(json.dumps(edited))
        with pytest.raises(PolyfidDataError, match="content_sha256 does not match"):
            Manifest.load(out)
        assert main(["shards", "verify", str(out), "--no-progress"]) == 2, what
        assert "content_sha256" in capsys.readouterr().err

    # a consistent manifest (its hash recomputed) that lost an entry: the shard on disk is named as extra
    removed = raw["shards"].pop(0)
    del raw["content_sha256"]
    path.write_text(json.dumps({**raw, "content_sha256": content_hash(raw)}))
    problems = {p.path: p.problem for p in verify_shards(out, progress=False)}
    assert problems == {removed["path"]: "on disk but not in the manifest (an entry was removed?)"}

    # --deep recounts: a count that disagrees with the shard's content is named
    raw["shards"][0]["n_atoms"] += 9
    path.write_text(json.dumps({**raw, "content_sha256": content_hash(raw)}))
    deep = [str(p) for p in verify_shards(out, progress=False, deep=True)]
    assert f"{raw['shards'][0]['path']}: n_atoms: manifest says {raw['shards'][0]['n_atoms']}" in " ".join(deep)
    assert not any("n_atoms" in p for p in map(str, verify_shards(out, progress=False)))
    path.write_text(original)
    assert main(["shards", "verify", str(out), "--deep", "--no-progress"]) == 0


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
    with pytest.raises(ConfigError, match="furlongs") as err:
        load_build_config(path)
    assert str(path) in str(err.value)
    assert main(["shards", "build", str(path), "--out", str(tmp_path / "o")]) == 2


def test_a_build_task_mixes_chunks_from_across_its_source(ethanol_mf: Path, tmp_path: Path):
    """Sources come in order (MD frames, molecules): each build task shuffles chunks spread over the source."""
    chunks = plan_chunks(load_build_config(_write_config(tmp_path, [_generic_source("e", ethanol_mf, chunk_size=5)])))
    mixes = plan_mixes(chunks, 4)  # 10 chunks -> 3 mixes: chunks 0,3,6,9 / 1,4,7 / 2,5,8
    assert [[chunks.index(c) for c in m] for m in mixes] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    config = load_build_config(_write_config(tmp_path, [_generic_source("e", ethanol_mf, chunk_size=5)], mix_chunks=4))
    out = tmp_path / "mixed"
    summary = build_shards(config, out, progress=False)
    assert (summary.n_chunks, summary.n_mixes) == (10, 3)
    shard = Manifest.load(out).select(split="train")[0]
    frames = [int(rec.id.rsplit(":", 1)[-1]) for rec in _records_in(out / shard.path)]
    assert {f // 5 for f in frames} >= {0, 3, 6, 9} and frames != sorted(frames)
