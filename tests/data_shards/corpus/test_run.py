"""The corpus command end to end on the tiny config: SIGKILLed mid-run, rerun, nothing finished is recomputed;
a corrupted chunk is recomputed alone; the output nests, builds into shards, and its sample is checksummed."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from polyfid.core.digest import sha256_file

HAVE_QM = all(importlib.util.find_spec(m) is not None for m in ("pyscf", "tblite", "rdkit"))
BIN = Path(sys.executable).parent
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
LEVEL_ORDER = ["gfn2_xtb", "gfn1_xtb", "hf_def2svp", "b3lyp_def2svp", "mp2_ccpvdz", "ccsdt_ccpvdz"]

pytestmark = [
    pytest.mark.skipif(not HAVE_QM, reason="pyscf, tblite and rdkit are needed"),
    pytest.mark.slow,
    pytest.mark.ray,
]


def _label_sidecars(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.glob("chunks/*/*/*.sha256") if not p.name.startswith("geometry")}


def _molecule_groups(f) -> dict[str, object]:
    """corpus.h5's `<tier>/<molecule>` groups by path (a held-out file: its molecule groups)."""
    return {f"{t}/{m}": f[t][m] for t in f for m in f[t]} if all("positions" not in f[t] for t in f) else dict(f)


def _energies(path: Path) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path) as f:
        groups = _molecule_groups(f)
        return {f"{g}/{k}": groups[g][k]["energy"][()] for g in groups for k in LEVEL_ORDER if k in groups[g]}


def _run(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((Path(cmd[cmd.index("--out") + 1]) / "manifest.json").read_text())


@pytest.mark.timeout(900)
def test_tiny_corpus_resumes_after_sigkill_and_builds_into_shards(tmp_path: Path, ray_local) -> None:
    import h5py

    from polyfid.data_shards.build import build_shards
    from polyfid.data_shards.sources import load_build_config

    out = tmp_path / "corpus"
    cmd = [str(BIN / "polyfid"), "shards", "generate-corpus", "tiny", "--out", str(out), "--no-progress"]
    driver = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(_label_sidecars(out)) < 4:
        assert driver.poll() is None and time.monotonic() < deadline, "no label chunk within 300 s"
        time.sleep(0.2)
    driver.kill()
    driver.wait()
    before = _label_sidecars(out)

    manifest = _run([*cmd, "--sample", str(tmp_path / "sample")])
    assert manifest["complete"] and not manifest["this_run"]["failed_tasks"]
    assert manifest["this_run"]["reused"]["labels"] >= len(before)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # a finished chunk is never recomputed
    counts = {lv: st["ok"] for lv, st in manifest["datasets"]["corpus"]["levels"].items()}
    assert counts == {"gfn2-xtb": 20, "gfn1-xtb": 20, "hf/def2-svp": 6, "b3lyp/def2-svp": 4, "mp2/cc-pvdz": 4,
                      "ccsd(t)/cc-pvdz": 2}  # fmt: skip

    energies = _energies(out / "corpus.h5")
    victim = sorted(before)[0].with_suffix("")  # the .npz of a label chunk
    raw = bytearray(victim.read_bytes())
    raw[100] ^= 0xFF
    victim.write_bytes(bytes(raw))
    again = _run(cmd)
    assert again["this_run"]["computed"] == {"labels": 1} and again["complete"]
    recomputed = _energies(out / "corpus.h5")
    assert recomputed.keys() == energies.keys()
    for key, e in energies.items():  # the same numbers, to SCF convergence
        np.testing.assert_allclose(recomputed[key], e, rtol=0, atol=1e-6, equal_nan=True)

    with h5py.File(out / "corpus.h5") as f:
        groups = _molecule_groups(f)
        assert len({path.split("/")[1] for path in groups}) == 2
        plan_order = ["gfn1_xtb", "hf_def2svp", "b3lyp_def2svp", "mp2_ccpvdz", "ccsdt_ccpvdz"]  # tiny.yaml's
        for path, group in groups.items():
            ok = [group[k]["ok"][()] for k in plan_order]
            for low, high in itertools.pairwise(ok):  # every level labels a subset of the one before
                assert not (high & ~low).any()
            tier = plan_order.index(path.split("/")[0])  # a tier: the last level labelling its structures
            assert ok[tier].all() and not any(o.any() for o in ok[tier + 1 :])
        radical = {p: g for p, g in groups.items() if p.endswith("/p267_hydroperoxyl")}
        assert all(g["multiplicity"][()] == 2 and g.attrs["smiles"] == "O[O]" for g in radical.values())
        assert sum(int(g["hf_def2svp"]["ok"][()].sum()) for g in radical.values()) == 3
        for g in radical.values():
            assert np.isfinite(g["hf_def2svp"]["forces"][()][g["hf_def2svp"]["ok"][()]]).all()
    assert sum(manifest["tiers"].values()) == 20 and "corpus_ccsdt_ccpvdz" in manifest["tiers"]
    with h5py.File(out / "scan_1-1-1-trifluoroethane.h5") as f:
        (group,) = f.values()
        assert group["scan_coordinate"].shape == (3,) and group["hf_def2svp"]["ok"][()].all()

    pretrain = load_build_config(out / "sources.yaml")
    assert sorted(s.name for s in pretrain.sources) == sorted(manifest["tiers"])  # one dataset per tier
    summary = build_shards(pretrain, tmp_path / "shards", progress=False)
    assert summary.n_written == 20 and summary.n_dropped == 0  # pretraining shards never see a target
    summary = build_shards(load_build_config(out / "targets.yaml"), tmp_path / "targets", progress=False)
    assert summary.n_written == 10 + 3 and summary.n_dropped == 0

    sample = json.loads((tmp_path / "sample" / "sample_manifest.json").read_text())
    for name, entry in sample["files"].items():
        assert sha256_file(tmp_path / "sample" / name) == entry["sha256"]
    with h5py.File(tmp_path / "sample" / "corpus.h5") as f:
        groups = _molecule_groups(f)
        assert all(g["positions"].shape[0] <= 2 for g in groups.values())
        assert {p.split("/")[0] for p in groups} == {t.removeprefix("corpus_") for t in manifest["tiers"]}
