"""Ray Train launcher for real: a worker SIGKILLed mid-run is replaced and training finishes from the last
checkpoint; a 2-node Ray cluster (two raylets on loopback) runs a 2-worker pretrain that registers its model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from polyfid.pretrain.runtime import free_port
from tests.pretrain.runs import BIN, ENV, result, run, write_config

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _worker_info(run_dir: Path, rank: int) -> dict:
    path = run_dir / "workers" / f"rank-{rank}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _progress_step(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "progress.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_worker_is_replaced_and_training_finishes(demo_shards, tmp_path):
    run_dir = tmp_path / "kill"
    config = write_config(
        run_dir, demo_shards, optim={"max_steps": 60}, schedule={"val_every": 20, "checkpoint_every": 10}
    )
    cmd = [str(BIN / "polyfid"), "pretrain", str(config), "--no-progress"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while _progress_step(run_dir) < 15:  # the step-10 checkpoint is reported and registered by then
        assert proc.poll() is None, proc.stdout.read()[-4000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.2)
    victim = _worker_info(run_dir, 1)["pid"]
    os.kill(victim, signal.SIGKILL)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-4000:]
    res = result(run_dir)
    assert res["status"] == "finished" and res["step"] == 60 and res["version"] == "1", res
    assert _worker_info(run_dir, 1)["pid"] != victim  # a new worker took rank 1
    assert 0 < res["resumed_from"] < 60, res  # the restarted group continued from a checkpoint


def test_rerun_after_the_ray_driver_is_sigkilled(demo_shards, tmp_path):
    """SIGKILL leaves the driver's Ray processes behind for a while; an immediate re-run starts its own Ray,
    claims the run directory and resumes from the last checkpoint. The re-run also has its tracking server down
    (issue 10 case 8: the warning used to stay in Ray's worker logs and result.json said nothing)."""
    run_dir = tmp_path / "driver"
    config = write_config(run_dir, demo_shards, optim={"max_steps": 100_000}, scaling={"num_workers": 1},
                          schedule={"checkpoint_every": 10, "val_every": 1000})  # fmt: skip
    cmd = [str(BIN / "polyfid"), "pretrain", str(config), "--no-progress"]
    driver = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while _progress_step(run_dir) < 15:
        assert driver.poll() is None and time.monotonic() < deadline, "no progress within 300 s"
        time.sleep(0.2)
    driver.kill()
    driver.wait()
    # resumed past max_steps: finishes at once; with the tracking server down, the worker's warning reaches the
    # driver's stderr and result.json says the registration failed and why
    proc = run([*cmd, "--set", "optim.max_steps=1", "--set", "tracking.mlflow_uri=http://127.0.0.1:9"])
    res = result(run_dir)
    assert res["status"] == "finished" and res["step"] == res["resumed_from"] >= 10, res
    assert res["registration"] == "failed" and res["version"] is None and "127.0.0.1:9" in res["registration_error"]
    assert "polyfid: worker warning: RuntimeWarning: MLflow tracking at http://127.0.0.1:9 failed" in proc.stderr
    assert "was not registered as 'polyfid-pretrained'" in proc.stderr


def _ray_node(*args: str) -> subprocess.Popen:
    cmd = [str(BIN / "ray"), "start", *args, "--num-cpus=2", "--object-store-memory=100000000", "--block",
           "--disable-usage-stats"]  # fmt: skip
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _alive_nodes(address: str) -> int:
    code = (
        f"import ray; ray.init(address='{address}', log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0


def test_two_node_ray_cluster_runs_and_registers(demo_shards, tmp_path):
    port = free_port()
    address = f"127.0.0.1:{port}"
    nodes = [_ray_node("--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false")]
    try:
        time.sleep(3)
        nodes.append(_ray_node(f"--address={address}", "--node-ip-address=127.0.0.1"))
        deadline = time.monotonic() + 120
        while _alive_nodes(address) < 2:
            assert time.monotonic() < deadline, "the 2-node cluster did not come up"
            time.sleep(2)
        run_dir = tmp_path / "cluster"
        config = write_config(run_dir, demo_shards, optim={"max_steps": 20}, data={"loader": "ray_data"},
                              scaling={"placement_strategy": "STRICT_SPREAD"})  # fmt: skip
        run([str(BIN / "polyfid"), "pretrain", str(config), "--address", address, "--no-progress"], timeout=600)
        res = result(run_dir)
        assert res["status"] == "finished" and res["version"] == "1", res
        assert _worker_info(run_dir, 0)["node"] != _worker_info(run_dir, 1)["node"]  # one worker per node
    finally:
        for node in reversed(nodes):  # only the processes this test started
            try:
                os.killpg(node.pid, signal.SIGTERM)
                node.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(node.pid, signal.SIGKILL)


def test_a_workers_polyfid_error_is_dug_out_of_rays_wrappers():
    from ray.train import WorkerGroupError

    from polyfid.pretrain.checkpoint_engine import CheckpointError
    from polyfid.pretrain.launch import _user_error

    cause = CheckpointError("/x/state.pt: refused")
    wrapped = WorkerGroupError("rank 0 failed", {0: RuntimeError("wrapper")})
    assert _user_error(wrapped) is None
    wrapped = WorkerGroupError("rank 0 failed", {1: cause})
    assert _user_error(wrapped) is cause
    try:
        raise RuntimeError("outer") from cause
    except RuntimeError as exc:
        assert _user_error(exc) is cause
