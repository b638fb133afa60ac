"""Multi-fidelity learning curve (arXiv:2505.01590) and architectures at equal width (arXiv:2503.23515).

From one HDF5 file with a high level (energies, plus forces used for scoring and for the E+F reference model) and a
low level (energies + forces) on the same geometries, models are trained from scratch on N high-level energies:

  sf_e   single-fidelity, N high-level energies only
  mf     multi-fidelity: N high-level energies + low-level E+F on every train geometry (a second head)
  sf_ef  single-fidelity, N high-level energies and forces (the reference the paper says mf comes close to)

and scored on held-out high-level energies and forces. Every run is `polyfid finetune` machinery with init=scratch
(polyfid.finetune.run.starting_model + polyfid.finetune.train.finetune), so the benchmark measures the
product's own training.

    .venv/bin/python benchmarks/bench_multifidelity.py [--sizes 25 50 100 200 400 800] [--seeds 0 1 2]
        [--models sf_e mf sf_ef] [--backbones hipnn] [--out runs/bench_multifidelity]

Results go to OUT/results.jsonl (one line per run; a re-run skips finished runs), OUT/summary.md and
OUT/learning_curve.png. Defaults: ../shared/data/generated/ethanol_ccsdt_xtb.h5 (CCSD(T)/cc-pVTZ, GFN2-xTB).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polyfid.core.config import validate_config  # noqa: E402
from polyfid.core.plots import log_sizes_axes, pyplot, save_figure  # noqa: E402
from polyfid.data_shards.build import build_shards  # noqa: E402
from polyfid.data_shards.manifest import Manifest  # noqa: E402
from polyfid.data_shards.sources import load_build_config  # noqa: E402
from polyfid.finetune.config import FinetuneConfig  # noqa: E402
from polyfid.finetune.run import starting_model  # noqa: E402
from polyfid.finetune.train import energy_errors, finetune, load_target  # noqa: E402
from polyfid.models import build_model  # noqa: E402
from polyfid.models.package import load_package, save_package  # noqa: E402
from polyfid.models.registry import BACKBONES, build_backbone  # noqa: E402

HIGH, LOW = "high", "low"  # level names in the benchmark's shards (the real method names are in the manifest)
MODELS = {
    "sf_e": {},
    "mf": {"auxiliary": [{"level": LOW, "energy_weight": 1.0, "forces_weight": 1.0}]},
    "sf_ef": {"forces_weight": 1.0},
}
WIDTH = {"n_features": 32, "n_sensitivities": 16, "n_interactions": 2, "n_atom_layers": 2, "cutoff": 5.0,
         "r_soft_max": 5.0}  # fmt: skip


def build(args: argparse.Namespace) -> Path:
    """Shards of the file: both levels, hash split (val/test fractions); reused when already built."""
    shards = args.out / "shards"
    if (shards / "manifest.json").exists():
        return shards
    args.out.mkdir(parents=True, exist_ok=True)
    levels = {HIGH: {"energy": f"{args.high}/energy", "forces": f"{args.high}/forces"},
              LOW: {"energy": f"{args.low}/energy", "forces": f"{args.low}/forces"}}  # fmt: skip
    sources = {"split": {"val": args.val, "test": args.test},
               "sources": [{"name": "bench", "path": str(args.data.resolve()), "format": "generic_h5",
                            "units": {"energy": "ev", "length": "angstrom"}, "levels": levels,
                            "options": {"numbers": "atomic_numbers", "positions": "positions"}}]}  # fmt: skip
    (args.out / "sources.yaml").write_text(yaml.safe_dump(sources))
    build_shards(load_build_config(args.out / "sources.yaml"), shards, progress=False)
    return shards


def architecture(shards: Path, backbone: str, out: Path) -> Path:
    """An untrained package of the backbone over the shards' elements (init=scratch takes its architecture)."""
    path = out / f"architecture-{backbone}.pt"
    if not path.exists():
        manifest = Manifest.load(shards)
        module = build_backbone(backbone, {"elements": manifest.elements, **WIDTH})  # HOP: (n_max, l_max) = (4, 3)
        save_package(path, build_model(module, {LOW: manifest.levels[LOW]}), provenance={"benchmark": "scratch"})
    return path


def one_run(shards: Path, package_path: Path, model: str, n: int, seed: int, args: argparse.Namespace) -> dict:
    raw = {"run_dir": str(args.out / "runs" / f"{model}-{n}-{seed}"), "seed": seed, "source": str(package_path),
           "init": "scratch", "lr": args.lr, "max_epochs": args.epochs, "patience": args.patience,
           "target": {"shard_dirs": [str(shards)], "level": HIGH, "n_train": n, "max_atoms": 288},
           **MODELS[model]}  # fmt: skip
    cfg: FinetuneConfig = validate_config(raw, f"{model} N={n}", FinetuneConfig)
    data = load_target(cfg)
    net = starting_model(load_package(package_path), cfg)
    t0 = time.perf_counter()
    summary = finetune(net, cfg, data)
    seconds = time.perf_counter() - t0
    test = energy_errors(net, data.batches(data.test, cfg.target.max_atoms), HIGH, data.level_index)
    return {"n_fit": len(data.fit), "n_test": len(data.test), "epochs": summary["epochs"],
            "s_per_epoch": seconds / summary["epochs"], **{f"test_{k}": v for k, v in test.items()}}  # fmt: skip


def _mean_std(x: np.ndarray) -> str:
    return f"{x.mean():.0f} ± {x.std(ddof=1):.0f}" if len(x) > 1 else f"{x.mean():.0f}"


def summarise(rows: list[dict[str, Any]], out: Path) -> str:
    """Mean and spread (sample std over seeds) per backbone, model and N; Markdown table + learning-curve plot."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["backbone"], r["model"], r["n"]), []).append(r)
    lines = [
        "| backbone | model | N | seeds | force MAE meV/A | energy RMSE meV | s/epoch |",
        "|---|---|---:|---:|---|---|---:|",
    ]
    curve: dict[tuple, list[tuple[int, float, float]]] = {}
    for (backbone, model, n), runs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], list(MODELS).index(kv[0][1]), kv[0][2])
    ):
        f = np.array([r["test_forces_mae"] for r in runs]) * 1000
        e = np.array([r["test_energy_rmse"] for r in runs]) * 1000
        s = np.mean([r["s_per_epoch"] for r in runs])
        lines.append(f"| {backbone} | {model} | {n} | {len(runs)} | {_mean_std(f)} | {_mean_std(e)} | {s:.2f} |")
        curve.setdefault((backbone, model), []).append((n, f.mean(), f.std(ddof=1) if len(f) > 1 else 0.0))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for (backbone, model), points in curve.items():
        n, mean, std = map(np.array, zip(*sorted(points), strict=True))
        ax.errorbar(n, mean, yerr=std, marker="o", capsize=3, label=f"{backbone} {model}")
    log_sizes_axes(ax, sorted({r["n"] for r in rows}), "high-level energies N", "high-level force MAE (meV/A)")
    ax.legend()
    save_figure(fig, out / "learning_curve.png", dpi=120)
    table = "\n".join(lines)
    (out / "summary.md").write_text(table + "\n")
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/generated/ethanol_ccsdt_xtb.h5")
    p.add_argument("--high", default="ccsd_t_ccpvtz", help="HDF5 group of the high level (energy, forces)")
    p.add_argument("--low", default="xtb_gfn2", help="HDF5 group of the low level (energy, forces)")
    p.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200, 400, 800])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--backbones", nargs="+", default=["hipnn"], choices=sorted(BACKBONES))
    p.add_argument("--val", type=float, default=0.04)
    p.add_argument("--test", type=float, default=0.15)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--patience", type=int, default=25)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_multifidelity")
    args = p.parse_args()
    args.out = args.out.resolve()
    shards = build(args)
    results = args.out / "results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    done = {(r["backbone"], r["model"], r["n"], r["seed"]) for r in rows}
    for backbone in args.backbones:
        package = architecture(shards, backbone, args.out)
        for n in args.sizes:
            for model in args.models:
                for seed in args.seeds:
                    if (backbone, model, n, seed) in done:
                        continue
                    row = {"backbone": backbone, "model": model, "n": n, "seed": seed,
                           **one_run(shards, package, model, n, seed, args)}  # fmt: skip
                    rows.append(row)
                    with results.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(f"{backbone} {model} N={n} seed={seed}: force MAE {row['test_forces_mae'] * 1000:.0f} meV/A, "
                          f"energy RMSE {row['test_energy_rmse'] * 1000:.0f} meV ({row['epochs']} epochs, "
                          f"{row['s_per_epoch']:.2f} s/epoch)", flush=True)  # fmt: skip
    print(summarise(rows, args.out))


if __name__ == "__main__":
    main()
