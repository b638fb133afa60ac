"""Running real `polyfid pretrain` jobs from tests: configs on the demo shards, the CLI as a subprocess, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from polyfid.core.config import merge

BIN = Path(sys.executable).parent
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}

# A small HIP-NN on the demo corpus' small molecules (xTB MD + the B3LYP subset); ethanol is left out.
BASE: dict[str, Any] = {
    "seed": 0,
    "data": {
        "datasets": ["demo_md_xtb", "demo_dft_subset"],
        "levels": ["gfn2-xtb", "b3lyp/def2-svp"],
        "max_atoms": 128,
        "shuffle_buffer": 200,
    },
    "model": {
        "backbone": "hipnn",
        "settings": {"n_features": 32, "n_sensitivities": 16, "n_interactions": 2, "n_atom_layers": 1},
    },
    "optim": {"lr": 5e-3, "max_steps": 30, "warmup_steps": 0, "decay": "none", "grad_clip": 10.0},
    "deepspeed": {"zero_stage": 1},
    "schedule": {"val_every": 10, "log_every": 5, "checkpoint_every": 10, "keep_checkpoints": 2},
    "tracking": {"system_metrics": False},
    "scaling": {"num_workers": 2, "max_failures": 2},
}


def write_config(run_dir: Path, shards: Path, **sections: Any) -> Path:
    """`run_dir/config.yaml` = BASE deep-merged with `sections`; returns its path."""
    cfg = merge(BASE, {"run_dir": str(run_dir), "data": {"shard_dirs": [str(shards)]}})
    cfg = merge(cfg, sections)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir.parent / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def pretrain_cmd(config: Path, *extra: str, nproc: int | None = None) -> list[str]:
    """`polyfid pretrain` as one lone rank, or under `torchrun --standalone` with `nproc` ranks."""
    cli = [str(BIN / "polyfid"), "pretrain", str(config), "--no-progress", *extra]
    if nproc is None:
        return [*cli, "--launcher", "torchrun"]
    return [str(BIN / "torchrun"), "--standalone", f"--nproc-per-node={nproc}", *cli, "--launcher", "torchrun"]


def run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    if proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def result(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "result.json").read_text())


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def val_losses(run_dir: Path) -> list[float]:
    return [m["val/loss"] for m in metrics(run_dir) if "val/loss" in m]


def package_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    raw = torch.load(run_dir / "model" / "polyfid-pretrained.pt", weights_only=True)
    return {k: v for k, v in raw["state_dict"].items() if isinstance(v, torch.Tensor)}


def spawn_ranks(worker, world: int, out: Path, timeout: float = 150) -> list[dict]:
    """Run `worker(rank, port, out_dir)` on `world` spawned ranks; each saves `out/rank{r}.pt`, returned in order."""
    import time

    import pytest

    from polyfid.pretrain.runtime import free_port

    ctx = torch.multiprocessing.start_processes(
        worker, args=(free_port(), str(out)), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"{world} ranks did not finish within {timeout} s (hang?)")
    finally:
        for p in ctx.processes:  # only the ranks this test started
            if p.is_alive():
                p.kill()
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]
