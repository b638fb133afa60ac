"""Multi-fidelity methods on the anchor protocol of ../shared/notes/science.md, with the trivial baselines beside them.

Data: ethanol_ccsdt_xtb.h5 (CCSD(T)/cc-pVTZ E+F, GFN2-xTB E+F on 1000 geometries). The split, exactly as the
reference figures: perm = default_rng(0).permutation(1000); test = perm[:200]; val = perm[200:280]; pool =
perm[280:]; the N high-level energies are the first N of default_rng(1000).permutation(pool) (nested). Val carries
high-level energies only to pick the best epoch. HIP-NN 2 interactions x 3 atom layers, 64 features, 20
sensitivities, soft min 0.75, soft max 5.0, cutoff 5.5 A; Adam 1e-3, 32 structures a batch, 6000 steps, lr halved
after 250 steps without a better val energy RMSE (as whole epochs), best-val weights kept. Every model is trained
from scratch by polyfid's own fine-tuning loop (polyfid.finetune.train.finetune, init=scratch):

  sf_e      single-fidelity: N high-level energies
  sf_ef     single-fidelity: N high-level energies and forces (what multi-fidelity should approach)
  mf        the reference method: a head per level; xTB E+F on the pool + N high-level energies
  mf_delta  mf with a delta high-level head: the xTB head's network energy + a correction (delta_from)
  mf_embed  mf with fidelity embeddings conditioning the trunk (model.fidelity_embedding)
  low_then_delta  two stages: a model trained on the pool's xTB E+F (one per seed, shared by every N), then a
            delta head on it fitted to the N energies with the trunk frozen (delta_from, strategy head)
  delta_xtb Delta-learning on the exact low level: a network fitted to E_high - E_xTB on the N (energies only);
            its forces are F_xTB + the network's, so it needs an xTB calculation at inference
  distill   distilled forces: delta_xtb (same N and seed) is the teacher; a standalone network (no xTB at
            inference) is fitted to its energies and forces on the whole pool, with the N true energies in place
            of the teacher's

Trivial baselines on the same test set: xTB forces used as CCSD(T) forces; zero forces; E0-only (mean) energies;
xTB energies + the mean offset fitted on the N; the linear baseline (E0 + ridge on the untrained network's summed
features, polyfid.finetune.linear).

    .venv/bin/python benchmarks/bench_multifidelity.py [--sizes 50 100 400] [--seeds 0 1 2]
        [--models sf_e sf_ef mf mf_delta] [--steps 6000] [--plateau-steps 250] [--out runs/bench_multifidelity]

Results: OUT/results.jsonl (one line per run; a re-run skips finished runs), OUT/summary.md, OUT/learning_curve.png.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polyfid.core.config import validate_config  # noqa: E402
from polyfid.core.plots import log_sizes_axes, pyplot, save_figure  # noqa: E402
from polyfid.data_shards.build import build_shards  # noqa: E402
from polyfid.data_shards.manifest import Manifest  # noqa: E402
from polyfid.data_shards.record import Record  # noqa: E402
from polyfid.data_shards.sources import load_build_config  # noqa: E402
from polyfid.data_shards.stream import StreamConfig, StreamPlan  # noqa: E402
from polyfid.data_shards.stream.pipeline import record_streams  # noqa: E402
from polyfid.data_shards.stream.sources import Consumer  # noqa: E402
from polyfid.data_shards.stream.torch_loader import read_webdataset  # noqa: E402
from polyfid.finetune.config import FinetuneConfig  # noqa: E402
from polyfid.finetune.distill import teacher_labels, with_distilled  # noqa: E402
from polyfid.finetune.linear import element_counts, fit_structures, structure_features  # noqa: E402
from polyfid.finetune.source import fresh_model  # noqa: E402
from polyfid.finetune.train import TargetData, energy_errors, finetune, minus_baseline  # noqa: E402
from polyfid.models import Hipnn, HipnnConfig, build_model  # noqa: E402
from polyfid.models.package import load_package, save_package  # noqa: E402

HIGH, LOW = "high", "low"  # level names in the benchmark's shards
AUX = [{"level": LOW, "energy_weight": 1.0, "forces_weight": 1.0}]
MODELS = {"sf_e": {}, "sf_ef": {"forces_weight": 1.0}, "mf": {"auxiliary": AUX},
          "mf_delta": {"auxiliary": AUX, "delta_from": LOW}, "mf_embed": {"auxiliary": AUX},
          "low_then_delta": {"delta_from": LOW, "strategy": "head", "init": "pretrained"},
          "delta_xtb": {"baseline_level": LOW}, "distill": {"forces_weight": 1.0}}  # fmt: skip
EMBEDDED = {"mf_embed"}  # trained on the architecture with fidelity embeddings
STAGED = {"low_then_delta"}  # start from the seed's xTB-only model
DIFFERENCE = {"delta_xtb"}  # fitted to (and scored on) high - low energies and forces
ARCH = {"n_features": 64, "n_sensitivities": 20, "n_interactions": 2, "n_atom_layers": 3, "cutoff": 5.5,
        "r_soft_min": 0.75, "r_soft_max": 5.0}  # fmt: skip
BATCH_ATOMS = 32 * 9


def build(args: argparse.Namespace) -> Path:
    """Shards of the file with both levels, every record in `train` (the benchmark splits by index itself)."""
    shards = args.out / "shards"
    if (shards / "manifest.json").exists():
        return shards
    args.out.mkdir(parents=True, exist_ok=True)
    levels = {HIGH: {"energy": f"{args.high}/energy", "forces": f"{args.high}/forces"},
              LOW: {"energy": f"{args.low}/energy", "forces": f"{args.low}/forces"}}  # fmt: skip
    sources = {"split": {"val": 0.0, "test": 0.0},
               "sources": [{"name": "bench", "path": str(args.data.resolve()), "format": "generic_h5",
                            "units": {"energy": "ev", "length": "angstrom"}, "levels": levels,
                            "options": {"numbers": "atomic_numbers", "positions": "positions"}}]}  # fmt: skip
    (args.out / "sources.yaml").write_text(yaml.safe_dump(sources))
    build_shards(load_build_config(args.out / "sources.yaml"), shards, progress=False)
    return shards


def anchor_split(shards: Path) -> tuple[StreamPlan, dict[int, Record], dict[str, np.ndarray]]:
    """Records by their index in the file, and the anchor split's indices."""
    plan = StreamPlan.from_config(StreamConfig(shard_dirs=[shards], split="train", max_atoms=BATCH_ATOMS))
    streams = record_streams(plan, "eval", read_webdataset, Consumer(), epoch=0)
    records = {int(r.id.rsplit(":", 1)[1]): r for s in streams.values() for r in s}
    perm = np.random.default_rng(0).permutation(len(records))
    rest = perm[200:]
    pool = np.sort(rest[80:])
    split = {"test": np.sort(perm[:200]), "val": np.sort(rest[:80]), "pool": pool,
             "order": np.random.default_rng(1000).permutation(pool)}  # fmt: skip
    return plan, records, split


def only(record: Record, levels: set[str], forces: bool = True) -> Record:
    """The record with the labels it may fit (`forces` False drops the high level's forces)."""
    labels = {lv: lab for lv, lab in record.labels.items() if lv in levels}
    if not forces and HIGH in labels:
        labels[HIGH] = replace(labels[HIGH], forces=None)
    return replace(record, labels=labels)


def difference(record: Record) -> Record:
    """The record with high - low as its high-level labels (what `baseline_level` fits): scoring a model on these
    is scoring low + model against high."""
    return minus_baseline([record], HIGH, LOW, "anchor")[0]


def high_labels(net, plan: StreamPlan, record: Record) -> tuple[float, np.ndarray]:
    """A model's high-level energy and forces for one structure."""
    with torch.no_grad():
        out = net(plan.collate([only(record, set())]), [HIGH], compute_forces=True)
    return float(out.energy[0, 0]), out.forces[:, 0].double().numpy()


def distilled_data(plan, records, split, n: int, seed: int, args) -> TargetData:
    """The pool labelled by the delta_xtb teacher of the same N and seed (xTB + its correction, as `finetune`'s
    `distill` does), energies of the N kept true."""
    teacher = load_package(args.out / "runs" / f"delta_xtb-{n}-{seed}" / "model.pt").model
    teacher.heads.baselines.setdefault(HIGH, LOW)  # teachers trained before the script set baseline_level
    chosen = {int(k) for k in split["order"][:n]}
    pool = [records[int(k)] for k in split["pool"]]
    own = [only(r, {HIGH} if int(k) in chosen else set(), False) for k, r in zip(split["pool"], pool, strict=True)]
    fit = with_distilled(own, pool, teacher_labels(teacher, plan, pool, HIGH, BATCH_ATOMS), HIGH)
    train = [r for r in fit if int(r.id.rsplit(":", 1)[1]) in chosen]
    val = [only(records[int(k)], {HIGH}, False) for k in split["val"]]
    test = [records[int(k)] for k in split["test"]]
    return TargetData(plan, train, val, test, fit, plan.level_names.index(HIGH))


def target_data(plan: StreamPlan, records: dict[int, Record], split: dict, model: str, n: int) -> TargetData:
    """The N high-level structures (+ the pool's xTB labels for the multi-fidelity models), val and test."""
    if model in DIFFERENCE:
        records = {k: difference(r) for k, r in records.items()}
    chosen = [int(k) for k in split["order"][:n]]
    forces = model == "sf_ef"
    train = [only(records[k], {HIGH}, forces) for k in chosen]
    fit = list(train)
    if "auxiliary" in MODELS[model]:
        mine = set(chosen)
        fit = [only(records[int(k)], {HIGH, LOW} if int(k) in mine else {LOW}, forces) for k in split["pool"]]
    val = [only(records[int(k)], {HIGH}, False) for k in split["val"]]
    test = [records[int(k)] for k in split["test"]]
    return TargetData(plan, train, val, test, fit, plan.level_names.index(HIGH))


def architecture(shards: Path, out: Path, embedding: bool = False) -> Path:
    path = out / f"architecture-hipnn64{'-embedding' if embedding else ''}.pt"
    if not path.exists():
        manifest = Manifest.load(shards)
        backbone = Hipnn(HipnnConfig(elements=manifest.elements, **ARCH))
        model = build_model(backbone, {LOW: manifest.levels[LOW]}, fidelity_embedding=embedding)
        save_package(path, model, provenance={"benchmark": "scratch"})
    return path


def plateau_epochs(n_fit: int, args: argparse.Namespace) -> int:
    """The plateau patience in epochs for `args.plateau_steps` optimiser steps: counted in epochs, a fixed
    patience halves the lr 18x more often on 100 structures than on 720, and starves the small fits."""
    return max(1, math.ceil(args.plateau_steps / math.ceil(n_fit / (BATCH_ATOMS // 9))))


def low_level_model(plan, records, split, package: Path, seed: int, args) -> Path:
    """Stage 1 of low_then_delta: a model of the pool's xTB energies and forces (val: the val set's xTB energies),
    the same budget as every other run; cached per seed and budget."""
    path = args.out / f"stage1-{seed}-{args.steps}-{args.plateau_steps}.pt"
    if path.exists():
        return path
    raw = {"run_dir": str(args.out / "runs" / f"stage1-{seed}"), "seed": seed, "source": str(package),
           "init": "scratch", "lr": 1e-3, "steps": args.steps, "patience": 10**6,
           "plateau_patience": plateau_epochs(len(split["pool"]), args), "forces_weight": 1.0,
           "target": {"shard_dirs": [str(args.out / "shards")], "level": LOW, "max_atoms": BATCH_ATOMS}}  # fmt: skip
    cfg: FinetuneConfig = validate_config(raw, f"stage 1 seed={seed}", FinetuneConfig)
    pool = [only(records[int(k)], {LOW}) for k in split["pool"]]
    val = [only(records[int(k)], {LOW}) for k in split["val"]]
    data = TargetData(plan, pool, val, [], pool, plan.level_names.index(LOW))
    net = fresh_model(load_package(package), seed)
    finetune(net, cfg, data)
    return save_package(path, net, provenance={"benchmark": "low_then_delta stage 1", "seed": seed})


def baselines(plan: StreamPlan, records: dict[int, Record], split: dict, n: int, package: Path) -> dict[str, float]:
    """Trivial baselines on the test set (meV, meV/A): low-level forces as-is, zero forces, mean energy, xTB energy
    + offset, and the linear baseline on the untrained network's features."""
    h, lo = plan.level_names.index(HIGH), plan.level_names.index(LOW)
    test = plan.collate([records[int(k)] for k in split["test"]])
    train = plan.collate([records[int(k)] for k in split["order"][:n]])
    f_high, e_high = test.forces[:, h].numpy(), test.energy[:, h].numpy()
    offset = (train.energy[:, h] - train.energy[:, lo]).mean().item()
    net = fresh_model(load_package(package), 0)
    linear = fit_structures(net, train, h, 0)
    e_lin = linear.predict(element_counts(test, linear.elements), structure_features(net, test))
    return {"low_forces_mae": 1000 * float(np.abs(test.forces[:, lo].numpy() - f_high).mean()),
            "zero_forces_mae": 1000 * float(np.abs(f_high).mean()),
            "mean_energy_mae": 1000 * float(np.abs(e_high - train.energy[:, h].numpy().mean()).mean()),
            "low_energy_plus_offset_mae": 1000 * float(np.abs(test.energy[:, lo].numpy() + offset - e_high).mean()),
            "linear_energy_mae": 1000 * float(np.abs(e_lin - e_high).mean())}  # fmt: skip


def one_run(plan, records, split, package: Path, model: str, n: int, seed: int, args) -> dict[str, Any]:
    t0 = time.perf_counter()
    if model in STAGED:
        package = low_level_model(plan, records, split, package, seed, args)
    elif model in EMBEDDED:
        package = architecture(args.out / "shards", args.out, embedding=True)
    if model == "distill":
        data = distilled_data(plan, records, split, n, seed, args)
    else:
        data = target_data(plan, records, split, model, n)
    raw = {"run_dir": str(args.out / "runs" / f"{model}-{n}-{seed}"), "seed": seed, "source": str(package),
           "init": "scratch", "lr": 1e-3, "steps": args.steps, "patience": 10**6,
           "plateau_patience": plateau_epochs(len(data.fit), args),
           "target": {"shard_dirs": [str(args.out / "shards")], "level": HIGH, "n_train": n,
                      "max_atoms": BATCH_ATOMS}, **MODELS[model]}  # fmt: skip
    cfg: FinetuneConfig = validate_config(raw, f"{model} N={n}", FinetuneConfig)
    net = load_package(package).model if cfg.init == "pretrained" else fresh_model(load_package(package), seed)
    summary = finetune(net, cfg, data)
    seconds = time.perf_counter() - t0
    save_package(Path(cfg.run_dir) / "model.pt", net, provenance={"benchmark": model, "n": n, "seed": seed})
    test = energy_errors(net, data.batches(data.test, BATCH_ATOMS), HIGH, data.level_index)
    return {"n_fit": len(data.fit), "steps": summary["steps"], "epochs": summary["epochs"], "seconds": seconds,
            "test_forces_mae": 1000 * test["forces_mae"], "test_energy_mae": 1000 * test["energy_mae"]}  # fmt: skip


def committee(plan, records, split, model: str, n: int, seeds: list[int], out: Path) -> dict[str, float] | None:
    """Test errors of the committee of a method's models over seeds (mean energy and forces), when every seed's
    model exists: what averaging the members buys over one member."""
    paths = [out / "runs" / f"{model}-{n}-{seed}" / "model.pt" for seed in seeds]
    if len(paths) < 2 or not all(p.exists() for p in paths):
        return None
    nets = [load_package(p).model.eval() for p in paths]
    e_err, f_err = [], []
    for k in split["test"]:
        rec = difference(records[int(k)]) if model in DIFFERENCE else records[int(k)]
        preds = [high_labels(net, plan, rec) for net in nets]
        e_err.append(abs(np.mean([e for e, _ in preds]) - rec.labels[HIGH].energy))
        f_err.append(np.abs(np.mean([f for _, f in preds], axis=0) - rec.labels[HIGH].forces).ravel())
    return {
        "test_forces_mae": 1000 * float(np.concatenate(f_err).mean()),
        "test_energy_mae": 1000 * float(np.mean(e_err)),
    }


def _cell(x: list[float]) -> str:
    return f"{np.mean(x):.0f} ({min(x):.0f}-{max(x):.0f})" if len(x) > 1 else f"{x[0]:.0f}"


def summarise(
    rows: list[dict[str, Any]], base: dict[int, dict[str, float]], committees: dict[str, dict[int, dict]], out: Path
) -> str:
    """Markdown: force and energy MAE per method and N (mean and range over seeds), committees of the seeds' models,
    baselines beside them."""
    sizes = sorted({r["n"] for r in rows} | set(base))
    lines = ["| method | " + " | ".join(f"N={n} force MAE meV/A" for n in sizes) + " | "
             + " | ".join(f"N={n} energy MAE meV" for n in sizes) + " | seeds |",
             "|---|" + "---:|" * (2 * len(sizes) + 1)]  # fmt: skip
    curve = {}
    for model in MODELS:
        runs = [r for r in rows if r["model"] == model]
        if not runs:
            continue
        f = [_cell([r["test_forces_mae"] for r in runs if r["n"] == n]) if any(r["n"] == n for r in runs) else "-"
             for n in sizes]  # fmt: skip
        e = [_cell([r["test_energy_mae"] for r in runs if r["n"] == n]) if any(r["n"] == n for r in runs) else "-"
             for n in sizes]  # fmt: skip
        seeds = sorted({r["seed"] for r in runs})
        lines.append(f"| {model} | " + " | ".join(f + e) + f" | {seeds} |")
        curve[model] = sorted((n, np.mean([r["test_forces_mae"] for r in runs if r["n"] == n]))
                              for n in {r["n"] for r in runs})  # fmt: skip
    for model, by_n in committees.items():
        cells = [by_n.get(n) for n in sizes]
        f = [f"{c['test_forces_mae']:.0f}" if c else "-" for c in cells]
        e = [f"{c['test_energy_mae']:.0f}" if c else "-" for c in cells]
        lines.append(f"| {model} committee (mean of the seeds' models) | " + " | ".join(f + e) + " | all |")
    for key, label in (("low_forces_mae", "xTB forces as CCSD(T) forces"), ("zero_forces_mae", "zero forces")):
        lines.append(f"| {label} (trivial) | " + " | ".join(f"{base[n][key]:.0f}" for n in sizes)
                     + " | -" * len(sizes) + " | - |")  # fmt: skip
    energies = {"mean_energy_mae": "E0-only (mean) energy", "low_energy_plus_offset_mae": "xTB energy + offset "
                "fitted on the N", "linear_energy_mae": "linear (untrained features)"}  # fmt: skip
    for key, label in energies.items():
        lines.append(f"| {label} (trivial) | " + "- | " * len(sizes)
                     + " | ".join(f"{base[n][key]:.0f}" for n in sizes) + " | - |")  # fmt: skip
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for model, points in curve.items():
        ax.plot(*zip(*points, strict=True), marker="o", label=model)
    ax.plot(sizes, [base[n]["low_forces_mae"] for n in sizes], "k--", label="xTB forces as-is (trivial)")
    log_sizes_axes(ax, sizes, "CCSD(T) energies in the fit N", "test force MAE vs CCSD(T) (meV/A)")
    ax.set_title("Ethanol multi-fidelity (anchor protocol, HIP-NN 64)")
    ax.legend(fontsize=8)
    save_figure(fig, out / "learning_curve.png", dpi=120)
    table = "\n".join(lines)
    (out / "summary.md").write_text(table + "\n")
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/generated/ethanol_ccsdt_xtb.h5")
    p.add_argument("--high", default="ccsd_t_ccpvtz", help="HDF5 group of the high level (energy, forces)")
    p.add_argument("--low", default="xtb_gfn2", help="HDF5 group of the low level (energy, forces)")
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 400])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--plateau-steps", type=int, default=250, help="steps without a better val RMSE before lr halves")
    p.add_argument("--summary-only", action="store_true", help="summarise the finished runs, train nothing")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_multifidelity")
    args = p.parse_args()
    args.out = args.out.resolve()
    shards = build(args)
    plan, records, split = anchor_split(shards)
    package = architecture(shards, args.out)
    base = {n: baselines(plan, records, split, n, package) for n in args.sizes}
    results = args.out / "results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    done = {(r["model"], r["n"], r["seed"], r["steps_budget"], r.get("plateau_steps")) for r in rows}
    for n in args.sizes:
        for seed in args.seeds:
            for model in args.models:
                if (
                    model == "distill"
                    and not args.summary_only
                    and ("delta_xtb", n, seed, args.steps, args.plateau_steps) not in done
                ):
                    sys.exit(
                        f"distill N={n} seed={seed} needs its teacher: run delta_xtb first (--models delta_xtb distill)"
                    )
                if args.summary_only or (model, n, seed, args.steps, args.plateau_steps) in done:
                    continue
                row = {"model": model, "n": n, "seed": seed, "steps_budget": args.steps,
                       "plateau_steps": args.plateau_steps,
                       **one_run(plan, records, split, package, model, n, seed, args)}  # fmt: skip
                rows.append(row)
                done.add((model, n, seed, args.steps, args.plateau_steps))
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                forces, energy = row["test_forces_mae"], row["test_energy_mae"]
                print(f"{model} N={n} seed={seed}: force MAE {forces:.0f} meV/A, energy MAE {energy:.0f} meV "
                      f"({row['steps']} steps, {row['seconds']:.0f} s)", flush=True)  # fmt: skip
    rows = [r for r in rows if (r["steps_budget"], r.get("plateau_steps"), r["n"] in base)
            == (args.steps, args.plateau_steps, True)]  # fmt: skip
    committees = {}
    for model in args.models:
        for n in args.sizes:
            seeds = sorted({r["seed"] for r in rows if r["model"] == model and r["n"] == n})
            if (errors := committee(plan, records, split, model, n, seeds, args.out)) is not None:
                committees.setdefault(model, {})[n] = errors
    print(summarise(rows, base, committees, args.out))


if __name__ == "__main__":
    main()
