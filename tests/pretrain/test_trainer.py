"""Real pretraining runs on the demo shards: every strategy on 2 ranks (torchrun, gloo), exact resume after a
SIGKILL, SIGTERM preemption, and non-finite losses."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import torch

from polyfid.core.config import merge
from polyfid.models.package import load_package
from tests.pretrain.runs import ENV, metrics, package_weights, pretrain_cmd, result, run, val_losses, write_config

pytestmark = pytest.mark.slow

REPTILE = {"kind": "reptile", "reptile": {"inner_steps": 5, "eps_end": 0.5}}
STRATEGIES = {
    "single-zero2": {"strategy": {"kind": "single", "level": "gfn2-xtb"}, "data": {"levels": None},
                     "deepspeed": {"zero_stage": 2}},
    "multifidelity-zero1": {"strategy": {"kind": "multifidelity"}, "deepspeed": {"zero_stage": 1}},
    "reptile-datasets-zero2": {"strategy": merge(REPTILE, {"reptile": {"task_kind": "dataset"}}),
                               "deepspeed": {"zero_stage": 2}, "optim": {"max_steps": 50}},
    "reptile-levels-zero1": {"strategy": merge(REPTILE, {"reptile": {"task_kind": "level", "optimizer_state": "keep"}}),
                             "deepspeed": {"zero_stage": 1}, "optim": {"grad_accum": 2, "max_steps": 50}},
}  # fmt: skip


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_trains_on_two_ranks_and_registers(demo_shards, tmp_path, name):
    run_dir = tmp_path / name
    config = write_config(run_dir, demo_shards, **STRATEGIES[name])
    run(pretrain_cmd(config, nproc=2))
    res = result(run_dir)
    steps = STRATEGIES[name].get("optim", {}).get("max_steps", 30)
    assert res["status"] == "finished" and res["step"] == steps and res["version"] == "1", res
    losses = val_losses(run_dir)  # untrained, then every 10 steps
    assert len(losses) == steps // 10 + 1 and losses[-1] < losses[0], losses
    xtb_forces = [m["val/gfn2-xtb/forces_mae"] for m in metrics(run_dir) if "val/loss" in m]
    assert xtb_forces[-1] < 0.75 * xtb_forces[0], xtb_forces  # the level with most data is clearly learnt
    package = load_package(res["package"])
    expected = ["gfn2-xtb"] if name.startswith("single") else ["gfn2-xtb", "b3lyp/def2-svp"]
    assert package.heads == expected
    assert package.metadata["provenance"]["data_manifest_sha256"]
    assert (run_dir / "plots" / "learning_curves.png").stat().st_size > 1000


def _wait_for(predicate, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"run ended early ({proc.returncode}): {proc.stderr.read()[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.2)


def test_resume_after_sigkill_matches_an_uninterrupted_run(demo_shards, tmp_path):
    """Re-running the same command after the whole job was SIGKILLed mid-run ends bit-identical to a run that
    was never interrupted (Reptile, ZeRO 2, 2 ranks: masters, Adam state, data positions, schedule)."""
    sections = {**STRATEGIES["reptile-datasets-zero2"], "optim": {"max_steps": 40, "decay": "cosine"}}
    ref_dir, cut_dir = tmp_path / "reference", tmp_path / "interrupted"
    run(pretrain_cmd(write_config(ref_dir, demo_shards, **sections), nproc=2))
    config = write_config(cut_dir, demo_shards, **sections)
    proc = subprocess.Popen(pretrain_cmd(config, nproc=2), env=ENV, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    _wait_for(lambda: any((cut_dir / "checkpoints").glob("step-*")), proc, 240)
    import os

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cut_dir / "result.json").exists()
    step = sorted((cut_dir / "checkpoints").glob("step-*"))[-1]
    for rank in (0, 1):  # each rank's own stream states: the resume seeks, it does not replay
        saved = json.loads((step / f"polyfid_streams-rank-{rank}.json").read_text())
        assert any(pos["workers"] for pos in saved["tasks"].values())
    out = run(pretrain_cmd(config, nproc=2))
    assert "resumed from" in out.stdout + out.stderr
    ref, resumed = package_weights(ref_dir), package_weights(cut_dir)
    assert ref.keys() == resumed.keys()
    for key in ref:
        torch.testing.assert_close(resumed[key], ref[key], rtol=0, atol=0, msg=key)


def test_sigterm_saves_and_exits_cleanly_then_resumes(demo_shards, tmp_path):
    run_dir = tmp_path / "preempt"
    config = write_config(run_dir, demo_shards, optim={"max_steps": 2000}, schedule={"checkpoint_every": 1000})
    proc = subprocess.Popen(pretrain_cmd(config), env=ENV, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (run_dir / "progress.json").exists(), proc, 240)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    res = result(run_dir)
    assert res["status"] == "preempted" and 0 < res["step"] < 2000, res
    assert (run_dir / "checkpoints" / f"step-{res['step']:09d}").is_dir()
    out = run(pretrain_cmd(config, "--set", f"optim.max_steps={res['step'] + 5}"))
    assert f"at step {res['step']}" in out.stdout and result(run_dir)["status"] == "finished"


def test_a_second_launch_on_the_same_run_directory_takes_over(demo_shards, tmp_path):
    """Two commands on one run directory (or workers a SIGKILLed Ray driver left behind) must not both write it:
    the later launch claims it and the earlier one stops at its next step, writing nothing more."""
    run_dir = tmp_path / "twice"
    config = write_config(run_dir, demo_shards, optim={"max_steps": 5000}, schedule={"checkpoint_every": 1000})
    first = subprocess.Popen(pretrain_cmd(config), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (run_dir / "progress.json").exists(), first, 240)
    second = run(pretrain_cmd(config, "--set", "optim.max_steps=20", "--set", "schedule.checkpoint_every=10"))
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 0 and "was taken over by a later launch" in out, out[-2000:]
    assert "was running in this run directory" in second.stderr
    res = result(run_dir)
    assert res["status"] == "finished" and res["step"] == 20 and res["resumed_from"] is None, res
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-000000010", "step-000000020"]


def test_non_finite_losses_are_skipped_then_abort_with_a_clear_message(demo_shards, tmp_path):
    """A learning rate far too large drives the loss to inf/NaN: skipped, counted, then the run aborts (exit 1)."""
    run_dir = tmp_path / "nan"
    config = write_config(run_dir, demo_shards, optim={"lr": 1e12, "grad_clip": None, "max_nonfinite": 3,
                                                       "max_steps": 200})  # fmt: skip
    proc = subprocess.run(pretrain_cmd(config), capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "non-finite loss" in proc.stderr and "optim.max_nonfinite=3" in proc.stderr
    res = result(run_dir)
    assert res["status"] == "aborted" and "batch" in res["reason"]


def test_early_stopping_ends_the_run_and_still_exports(demo_shards, tmp_path):
    """A learning rate too small to improve the validation loss: patience 2 stops the run at the 2nd validation."""
    run_dir = tmp_path / "early"
    config = write_config(run_dir, demo_shards, optim={"lr": 1e-12, "early_stopping_patience": 2, "max_steps": 100})
    run(pretrain_cmd(config))
    res = result(run_dir)
    assert res["status"] == "early_stopped" and res["step"] == 20 and res["version"] == "1", res
    # the package holds the best validation's weights (step 0: nothing improved on it), not the last step's
    assert res["exported_step"] == 0
    assert load_package(res["package"]).metadata["provenance"]["step"] == 0
