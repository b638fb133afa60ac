"""Meta-learning (arXiv:2307.04012) and linear vs nonlinear (arXiv:2211.11680): fine-tune to N high-level energies
of molecules absent from pretraining from several starts (named pretrained packages, and `scratch`: the first
start's architecture with fresh weights); beside every nonlinear fine-tune, the linear baseline (ridge on the
starting model's frozen features + E0, alpha by CV) and the trivial baselines (E0 only; each other level of the
target's shards used as-is). Scored on the held-out high-level energies and forces, and on the smoothness and error
along a scan.

The foundation study (BENCHMARKS.md): the generated corpus' held-out targets, four starts:

    .venv/bin/python benchmarks/bench_finetune.py --shards TARGET_SHARDS --level hf/def2-svp \
        --start reptile=R.pt joint=J.pt low-level=L.pt --scratch-from joint \
        --target heldout_methyl-formate:scan_methyl-formate ... --sizes 25 50 100 150 --seeds 0 1 2

Results: OUT/results.jsonl (a re-run skips finished runs; several processes may share OUT, e.g. one per target),
OUT/summary.md, OUT/learning_curves.png. `--summary-only` rewrites the summary from the results.
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
from polyfid.finetune.trivial import trivial_baselines  # noqa: E402
from polyfid.models.package import load_package  # noqa: E402

SCRATCH = "scratch"


def one_run(args: argparse.Namespace, target: str, start: str, n: int, seed: int) -> dict[str, Any]:
    dataset, _, scan = target.partition(":")
    scratch = start == SCRATCH
    source = args.starts[args.scratch_from if scratch else start]
    raw = {"run_dir": str(args.out / "runs" / f"{dataset}-{start}-{n}-{seed}"), "seed": seed, "source": str(source),
           "init": "scratch" if scratch else "pretrained", "lr": args.lr_scratch if scratch else args.lr,
           "max_epochs": args.epochs, "patience": args.patience, "head_init": None if scratch else args.head_init,
           "target": {"shard_dirs": [str(args.shards)], "level": args.level, "datasets": [dataset],
                      "n_train": n, "max_atoms": 256}}  # fmt: skip
    cfg: FinetuneConfig = validate_config(raw, f"{dataset} {start} N={n}", FinetuneConfig)
    t0 = time.perf_counter()
    data = load_target(cfg)
    fit = fit_both(load_package(source), cfg, data)
    row = {"seconds": time.perf_counter() - t0, "epochs": fit["summary"]["epochs"], "n_test": len(data.test),
           **{f"nonlinear_{k}": v for k, v in fit["nonlinear"].items()},
           **{f"linear_{k}": v for k, v in fit["linear"].items()},
           **{f"trivial_{name}_{k}": v for name, m in trivial_baselines(data).items()
              for k, v in m.items()}}  # fmt: skip
    if scan:
        s = score_scan(fit["model"], cfg.target.shard_dirs, args.level, scan)
        row |= {"scan_roughness_ratio": s["roughness_ratio"], "scan_energy_rmse": s["energy_rmse"]}
    return row


def _mean_std(values: list[float], scale: float = 1000.0, digits: int = 0) -> str:
    x = np.array([v for v in values if v is not None], dtype=float) * scale
    if not len(x):
        return "-"
    return f"{x.mean():.{digits}f} ± {x.std(ddof=1):.{digits}f}" if len(x) > 1 else f"{x.mean():.{digits}f}"


def _trivial_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The trivial baselines' keys present in the results: E0 only's energy RMSE, each level's forces MAE."""
    keys = sorted({k for r in rows for k in r if k.startswith("trivial_")})
    return [k for k in keys if k.endswith("forces_mae") or k == "trivial_e0_only_energy_rmse"]


def summarise(rows: list[dict[str, Any]], order: list[str], out: Path) -> str:
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["target"], r["start"], r["n"]), []).append(r)
    trivial = _trivial_columns(rows)
    names = [k.removeprefix("trivial_").replace("_energy_rmse", " E RMSE meV").replace("_forces_mae", " as-is F MAE")
             for k in trivial]  # fmt: skip
    head = ("| target | start | N | seeds | nonlinear E RMSE meV | linear E RMSE meV | nonlinear F MAE meV/A "
            "| scan roughness ratio | scan E RMSE meV | " + " | ".join(names) + " |")  # fmt: skip
    lines = [head, "|" + "---|" * (9 + len(names))]

    def key(kv: tuple[tuple[str, str, int], list]) -> tuple:
        (target, start, n), _ = kv
        return target, n, order.index(start) if start in order else len(order)

    for (target, start, n), runs in sorted(groups.items(), key=key):
        cols = [_mean_std([r.get(k) for r in runs]) for k in trivial]
        lines.append(f"| {target} | {start} | {n} | {len(runs)} | "
                     f"{_mean_std([r['nonlinear_energy_rmse'] for r in runs])} | "
                     f"{_mean_std([r['linear_energy_rmse'] for r in runs])} | "
                     f"{_mean_std([r['nonlinear_forces_mae'] for r in runs])} | "
                     f"{_mean_std([r.get('scan_roughness_ratio') for r in runs], 1.0, 2)} | "
                     f"{_mean_std([r.get('scan_energy_rmse') for r in runs])} | "
                     + " | ".join(cols) + " |")  # fmt: skip
    targets = sorted({r["target"] for r in rows})
    plt = pyplot()
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 4.2), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        for start in [s for s in order if any(k[:2] == (target, s) for k in groups)]:
            sizes = sorted(n for t, s, n in groups if (t, s) == (target, start))
            for model, style in (("nonlinear", "o-"), ("linear", "s--")):
                values = [
                    1000 * np.array([r[f"{model}_energy_rmse"] for r in groups[(target, start, n)]]) for n in sizes
                ]
                ax.errorbar(sizes, [v.mean() for v in values], yerr=[v.std() for v in values], fmt=style, capsize=3,
                            label=f"{model}, start: {start}")  # fmt: skip
        log_sizes_axes(ax, sorted({r["n"] for r in rows}), "high-level training energies N", "test energy RMSE (meV)")
        ax.set_title(target, fontsize=9)
    axes[0][0].legend(fontsize=6)
    fig.suptitle("Fine-tuning from each start: test energy RMSE vs N (mean ± std over seeds)")
    save_figure(fig, out / "learning_curves.png", dpi=110)
    table = "\n".join(lines)
    (out / "summary.md").write_text(table + "\n")
    return table


def _start(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or name == SCRATCH:
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=PACKAGE (NAME not {SCRATCH!r})")
    return name, Path(path).resolve()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=Path, required=True, help="shard folder holding the targets (and scans)")
    p.add_argument("--start", type=_start, nargs="+", required=True, metavar="NAME=PACKAGE", help="pretrained starts")
    p.add_argument("--scratch-from", metavar="NAME", help="also fresh weights of this start's architecture")
    p.add_argument("--level", required=True, help="the high level fitted and scored")
    p.add_argument("--target", nargs="+", required=True, metavar="DATASET[:SCAN]")
    p.add_argument("--head-init", default="linear", help="target head of the pretrained starts (linear probe)")
    p.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--patience", type=int, default=25)
    p.add_argument("--lr", type=float, default=3e-4, help="pretrained starts (as finetune/configs/demo.yaml)")
    p.add_argument("--lr-scratch", type=float, default=1e-3, help="fresh weights (as scripts/demo.sh)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_finetune")
    p.add_argument("--summary-only", action="store_true", help="rewrite the summary from the results, fit nothing")
    args = p.parse_args()
    args.starts = dict(args.start)
    if args.scratch_from is not None and args.scratch_from not in args.starts:
        p.error(f"--scratch-from {args.scratch_from!r} is not one of the starts {sorted(args.starts)}")
    order = [*args.starts, *([SCRATCH] if args.scratch_from else [])]
    args.shards, args.out = args.shards.resolve(), args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    done = {(r["target"], r["start"], r["n"], r["seed"]) for r in rows}
    for target in [] if args.summary_only else args.target:
        dataset = target.partition(":")[0]
        for n in args.sizes:
            for start in order:
                for seed in args.seeds:
                    if (dataset, start, n, seed) in done:
                        continue
                    row = {"target": dataset, "start": start, "n": n, "seed": seed,
                           **one_run(args, target, start, n, seed)}  # fmt: skip
                    rows.append(row)
                    with results.open("a") as f:
                        f.write(json.dumps(row) + "\n")  # one write per line: processes may share the file
                    print(f"{dataset} {start} N={n} seed={seed}: nonlinear "
                          f"{row['nonlinear_energy_rmse'] * 1000:.0f} meV, linear "
                          f"{row['linear_energy_rmse'] * 1000:.0f} meV, F MAE "
                          f"{row['nonlinear_forces_mae'] * 1000:.0f} meV/A ({row['seconds']:.0f} s)",
                          flush=True)  # fmt: skip
    print(summarise(rows, order, args.out))


if __name__ == "__main__":
    main()
