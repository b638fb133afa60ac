"""Meta-learning (arXiv:2307.04012) and linear vs nonlinear (arXiv:2211.11680): fine-tune to N high-level energies
of a molecule absent from pretraining, starting from Reptile-pretrained weights, multi-fidelity-joint-pretrained
weights, or no pretraining (the same architecture, fresh weights); beside every nonlinear fine-tune, the linear
baseline (ridge on the starting model's frozen features + E0, alpha by CV). Scored on the held-out high-level
energies and forces, and on the smoothness and error along a torsion scan.

Needs the demo's two pretraining runs and shards (`bash scripts/demo.sh` makes them), then:

    .venv/bin/python benchmarks/bench_finetune.py [--demo runs/demo] [--sizes 25 50 100 200] [--seeds 0 1 2]

Results: OUT/results.jsonl (a re-run skips finished runs), OUT/summary.md, OUT/learning_curves.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polyfid.core.config import validate_config  # noqa: E402
from polyfid.core.plots import log_sizes_axes, pyplot, save_figure  # noqa: E402
from polyfid.finetune.config import FinetuneConfig  # noqa: E402
from polyfid.finetune.evaluate import score_scan  # noqa: E402
from polyfid.finetune.run import fit_both  # noqa: E402
from polyfid.finetune.train import load_target  # noqa: E402
from polyfid.models.package import load_package  # noqa: E402

STARTS = {"reptile": ("pretrain-reptile", "pretrained"), "joint": ("pretrain", "pretrained"),
          "none": ("pretrain", "scratch")}  # fmt: skip


def one_run(args: argparse.Namespace, start: str, n: int, seed: int) -> dict[str, Any]:
    folder, init = STARTS[start]
    source = args.demo / folder / "model" / "polyfid-pretrained.pt"
    raw = {"run_dir": str(args.out / "runs" / f"{start}-{n}-{seed}"), "seed": seed, "source": str(source),
           "init": init, "lr": args.lr if init == "pretrained" else args.lr_scratch, "max_epochs": args.epochs,
           "patience": args.patience, "head_init": args.head_init if init == "pretrained" else None,
           "target": {"shard_dirs": [str(args.demo / "shards")], "level": args.level, "datasets": [args.target],
                      "n_train": n, "max_atoms": 256}}  # fmt: skip
    cfg: FinetuneConfig = validate_config(raw, f"{start} N={n}", FinetuneConfig)
    t0 = time.perf_counter()
    fit = fit_both(load_package(source), cfg, load_target(cfg))
    scan = score_scan(fit["model"], cfg.target.shard_dirs, args.level, args.scan)
    return {"seconds": time.perf_counter() - t0, "epochs": fit["summary"]["epochs"],
            **{f"nonlinear_{k}": v for k, v in fit["nonlinear"].items()},
            **{f"linear_{k}": v for k, v in fit["linear"].items()},
            "scan_roughness_ratio": scan["roughness_ratio"], "scan_energy_rmse": scan["energy_rmse"],
            "scan_forces_mae": scan["forces_mae"]}  # fmt: skip


def _mean_std(values: list[float], scale: float = 1000.0, digits: int = 0) -> str:
    x = np.array(values, dtype=float) * scale
    return f"{x.mean():.{digits}f} ± {x.std(ddof=1):.{digits}f}" if len(x) > 1 else f"{x.mean():.{digits}f}"


def summarise(rows: list[dict[str, Any]], out: Path) -> str:
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["start"], r["n"]), []).append(r)
    head = ("| pretraining | N | seeds | nonlinear E RMSE meV | linear E RMSE meV | nonlinear F MAE meV/A "
            "| scan roughness ratio | scan E RMSE meV | winner (E RMSE, mean) |")  # fmt: skip
    lines = [head, "|---|---:|---:|---|---|---|---|---|---|"]
    order = list(STARTS)
    for (start, n), runs in sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
        non = [r["nonlinear_energy_rmse"] for r in runs]
        lin = [r["linear_energy_rmse"] for r in runs]
        winner = "nonlinear" if np.mean(non) < np.mean(lin) else "linear"
        lines.append(f"| {start} | {n} | {len(runs)} | {_mean_std(non)} | {_mean_std(lin)} | "
                     f"{_mean_std([r['nonlinear_forces_mae'] for r in runs])} | "
                     f"{_mean_std([r['scan_roughness_ratio'] for r in runs], 1.0, 2)} | "
                     f"{_mean_std([r['scan_energy_rmse'] for r in runs])} | {winner} |")  # fmt: skip
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for start in order:
        sizes = sorted({n for s, n in groups if s == start})
        if not sizes:
            continue
        for model, style in (("nonlinear", "o-"), ("linear", "s--")):
            values = [np.array([r[f"{model}_energy_rmse"] for r in groups[(start, n)]]) * 1000 for n in sizes]
            ax.errorbar(sizes, [v.mean() for v in values], yerr=[v.std() for v in values], fmt=style, capsize=3,
                        label=f"{model}, pretraining: {start}")  # fmt: skip
    log_sizes_axes(ax, sorted({r["n"] for r in rows}), "high-level training energies N", "test energy RMSE (meV)")
    ax.legend(fontsize=7)
    save_figure(fig, out / "learning_curves.png", dpi=120)
    table = "\n".join(lines)
    (out / "summary.md").write_text(table + "\n")
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", type=Path, default=ROOT / "runs" / "demo", help="the demo's run directory")
    p.add_argument("--level", default="mp2/cc-pvdz")
    p.add_argument("--target", default="demo_target_ethanol")
    p.add_argument("--scan", default="demo_scan_ethanol")
    p.add_argument("--head-init", default="linear", help="target head of the pretrained starts (linear probe)")
    p.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--starts", nargs="+", default=list(STARTS), choices=list(STARTS))
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--patience", type=int, default=25)
    p.add_argument("--lr", type=float, default=3e-4, help="pretrained starts (as finetune/configs/demo.yaml)")
    p.add_argument("--lr-scratch", type=float, default=1e-3, help="no pretraining (as scripts/demo.sh)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_finetune")
    args = p.parse_args()
    args.demo, args.out = args.demo.resolve(), args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    done = {(r["start"], r["n"], r["seed"]) for r in rows}
    for n in args.sizes:
        for start in args.starts:
            for seed in args.seeds:
                if (start, n, seed) in done:
                    continue
                row = {"start": start, "n": n, "seed": seed, **one_run(args, start, n, seed)}
                rows.append(row)
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                non, lin = row["nonlinear_energy_rmse"] * 1000, row["linear_energy_rmse"] * 1000
                print(f"{start} N={n} seed={seed}: nonlinear {non:.0f} meV, linear {lin:.0f} meV, F MAE "
                      f"{row['nonlinear_forces_mae'] * 1000:.0f} meV/A, scan roughness x"
                      f"{row['scan_roughness_ratio']:.2f} ({row['seconds']:.0f} s)", flush=True)  # fmt: skip
    print(summarise(rows, args.out))


if __name__ == "__main__":
    main()
