"""Pretraining throughput: per-worker atoms/s at 1 and 2 Ray Train workers, and the share of step time spent
waiting for data, against a plain in-process torch loop over the same model and pre-loaded batches (baseline).

    .venv/bin/python benchmarks/bench_pretrain.py [--steps 200] [--out runs/bench_pretrain]

Steady state only: the first logging window (start-up, first shard reads) is dropped. Each run builds nothing:
it needs the demo shards (`polyfid shards build data_shards/demo_corpus/sources.yaml --out runs/demo/shards`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polyfid.core.config import merge  # noqa: E402
from polyfid.data_shards.stream import make_dataloader  # noqa: E402
from polyfid.data_shards.stream.catalog import ShardCatalog  # noqa: E402
from polyfid.pretrain.config import load_config  # noqa: E402
from polyfid.pretrain.data import stream_config  # noqa: E402
from polyfid.pretrain.engine import TrainingObjective, build_polyfid_model  # noqa: E402
from polyfid.pretrain.losses import HeadTargets  # noqa: E402

LOG_EVERY = 20


def plain_loop(cfg, steps: int) -> float:
    """Baseline: the same objective + torch AdamW in one process, one thread, batches already in memory."""
    torch.set_num_threads(1)
    catalog = ShardCatalog.open(cfg.data.shard_dirs)
    levels = list(cfg.data.levels)
    model = build_polyfid_model(cfg, catalog, levels)
    objective = TrainingObjective(model, cfg.loss)
    targets = [HeadTargets(lv, catalog.level_names.index(lv), cfg.loss.weights(lv)) for lv in levels]
    loader = make_dataloader(stream_config(cfg.data, cfg.seed, "train", list(cfg.data.datasets)), "train")
    batches = [b for b, _ in zip(loader, range(steps), strict=False)]
    opt = torch.optim.AdamW(objective.parameters(), lr=cfg.optim.lr)
    for b in batches[:LOG_EVERY]:  # warm-up, as the first window of the runs
        loss, _ = objective(b, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    t0, atoms = time.perf_counter(), 0
    for b in batches[LOG_EVERY:]:
        loss, _ = objective(b, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        atoms += b.n_atoms_total
    return atoms / (time.perf_counter() - t0)


def ray_run(config: Path, out: Path, name: str, overrides: list[str]) -> dict[str, float]:
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "polyfid.cli", "pretrain", str(config), "--no-progress",
           "--set", f"run_dir={run_dir}", *[x for o in overrides for x in ("--set", o)]]  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "perf/atoms_per_s" in r][1:]  # drop the first window
    mean = lambda key: sum(r[key] for r in train) / len(train)  # noqa: E731
    return {
        "atoms_per_s": mean("perf/atoms_per_s"),
        "atoms_per_s_per_worker": mean("perf/atoms_per_s_per_worker"),
        "data_wait_fraction": mean("perf/data_wait_fraction"),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_pretrain")
    parser.add_argument("--only", nargs="*", help="run only the rows whose name contains one of these")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load((ROOT / "pretrain" / "configs" / "demo.yaml").read_text())
    bench = {
        "data": {"shard_dirs": [str(ROOT / "runs" / "demo" / "shards")]},
        "optim": {"max_steps": args.steps, "early_stopping_patience": None, "plateau_patience": None},
        "schedule": {"log_every": LOG_EVERY, "val_every": 10**6, "checkpoint_every": 10**6},
        "tracking": {"registered_model": None, "system_metrics": False},
        "run_dir": str(args.out / "unused"),
    }
    config = args.out / "bench.yaml"
    config.write_text(yaml.safe_dump(merge(base, bench)))
    cfg = load_config(config)
    print(f"config: {cfg.model.backbone} {cfg.model.settings}, batches of <= {cfg.data.max_atoms} atoms, "
          f"{args.steps} steps, torch {torch.__version__}, {os.cpu_count()} CPUs")  # fmt: skip
    baseline = plain_loop(cfg, args.steps)
    row = "{:<40} {:>9} {:>10} {:>9} {:>9} {:>7}".format
    print(row("run", "atoms/s", "per worker", "vs plain", "data wait", "wall s"))
    print(row("plain torch loop, 1 process (baseline)", f"{baseline:.0f}", f"{baseline:.0f}", "1.00", "-", "-"))
    runs = {
        "Ray, 1 worker, webdataset, no prefetch": ["scaling.num_workers=1", "data.prefetch=0"],
        "Ray, 1 worker, webdataset": ["scaling.num_workers=1"],
        "Ray, 2 workers, webdataset": ["scaling.num_workers=2"],
        "Ray, 2 workers, Ray Data": ["scaling.num_workers=2", "data.loader=ray_data"],
    }
    for name, overrides in runs.items():
        if args.only and not any(word in name for word in args.only):
            continue
        r = ray_run(config, args.out, name.replace(", ", "_").replace(" ", "-"), overrides)
        per = r["atoms_per_s_per_worker"]
        print(row(name, f"{r['atoms_per_s']:.0f}", f"{per:.0f}", f"{per / baseline:.2f}",
                  f"{r['data_wait_fraction']:.1%}", f"{r['wall_s']:.0f}"))  # fmt: skip


if __name__ == "__main__":
    main()
