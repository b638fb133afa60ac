"""Zero-shot errors of a pretrained model on the corpus's held-out targets, per level, beside trivial baselines.

    python benchmarks/bench_zero_shot.py --model runs/foundation/pretrain --shards runs/foundation/targets \
        [--out results/zero_shot.json] [--markdown results/zero_shot.md]

Targets: every `heldout_*` and `scan_*` dataset of the shards built from the corpus's targets.yaml (all splits:
none of it was trained on, nor fitted the pretraining E0). Per (target, level) with labels: the model's head
without any fine-tuning, against
- E0 only: the head's own per-element reference energies (what the head predicts with no features);
- GFN2-xTB as-is: the xTB labels of the same structures used as the level's, energies shifted by their mean
  offset on this target (a constant per molecule, which an E0 refit would remove), forces unchanged.
Energies are scored absolute (with the pretraining E0) and relative (the mean offset over the target removed:
conformational energies). Units: meV, meV/A.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polyfid.data_shards.errors import PolyfidDataError  # noqa: E402
from polyfid.data_shards.manifest import Manifest  # noqa: E402
from polyfid.data_shards.stream import StreamConfig, StreamPlan, make_dataloader  # noqa: E402
from polyfid.finetune.source import load_source  # noqa: E402

XTB = "gfn2-xtb"
SPLITS = ("train", "val", "test")


def _collect(model: Any, shards: Path, dataset: str, levels: list[str]) -> dict[str, dict[str, list]]:
    """Per level: reference, model, E0-only and xTB energies of labelled structures; forces likewise (per atom)."""
    out = {lv: {k: [] for k in ("ref", "pred", "e0", "xtb", "n", "f_ref", "f_pred", "f_xtb")} for lv in levels}
    for split in SPLITS:
        try:
            plan = StreamPlan.from_config(StreamConfig(shard_dirs=[shards], split=split, datasets=[dataset]))
        except PolyfidDataError:
            continue
        x = plan.level_names.index(XTB)
        for batch in make_dataloader(plan, "eval"):
            pred = model(batch, levels, compute_forces=True)
            for k, lv in enumerate(levels):
                j = plan.level_names.index(lv)
                head = model.heads[lv]
                e0 = dict(zip(head.elements, head.e0.tolist(), strict=True))
                for s in torch.nonzero(batch.energy_mask[:, j]).flatten().tolist():
                    atoms = batch.batch == s
                    out[lv]["ref"].append(float(batch.energy[s, j]))
                    out[lv]["pred"].append(float(pred.energy[s, k]))
                    out[lv]["e0"].append(sum(e0[int(z)] for z in batch.numbers[atoms]))
                    out[lv]["xtb"].append(float(batch.energy[s, x]))
                    out[lv]["n"].append(int(atoms.sum()))
                    if batch.forces_mask[s, j]:
                        out[lv]["f_ref"].append(batch.forces[atoms, j].double().numpy())
                        out[lv]["f_pred"].append(pred.forces[atoms, k].detach().double().numpy())
                        out[lv]["f_xtb"].append(batch.forces[atoms, x].double().numpy())
    return out


def _scores(c: dict[str, list]) -> dict[str, float | int | None]:
    ref, pred, e0, xtb = (np.array(c[k]) for k in ("ref", "pred", "e0", "xtb"))

    def rel(d: np.ndarray) -> float:
        return float(1e3 * np.abs(d - d.mean()).mean())

    out: dict[str, float | int | None] = {
        "n_energies": len(ref),
        "energy_mae": float(1e3 * np.abs(pred - ref).mean()),
        "e0_only_energy_mae": float(1e3 * np.abs(e0 - ref).mean()),
        "relative_energy_mae": rel(pred - ref),
        "xtb_relative_energy_mae": rel(xtb - ref),
        "forces_mae": None,
        "xtb_forces_mae": None,
    }
    if c["f_ref"]:
        f_ref, f_pred, f_xtb = (np.concatenate(c[k]) for k in ("f_ref", "f_pred", "f_xtb"))
        out["forces_mae"] = float(1e3 * np.abs(f_pred - f_ref).mean())
        out["xtb_forces_mae"] = float(1e3 * np.abs(f_xtb - f_ref).mean())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="package, run directory or models:/ URI")
    parser.add_argument("--shards", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "zero_shot.json")
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = load_source(args.model, None, Path(tmp))[0].model.eval()
    manifest = Manifest.load(args.shards)
    targets = sorted(d for d in manifest.datasets if d.startswith(("heldout_", "scan_")))
    levels = [lv for lv in manifest.level_names if lv in model.heads.head_names]
    rows = []
    for dataset in targets:
        collected = _collect(model, args.shards, dataset, levels)
        for lv in levels:
            if collected[lv]["ref"]:
                rows.append({"dataset": dataset, "level": lv, **_scores(collected[lv])})

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    lines = [
        "| target | level | n | E MAE | E0-only E MAE | relative E MAE | xTB as-is relative E MAE | F MAE "
        "| xTB as-is F MAE |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *[f"| {r['dataset']} | {r['level']} | {r['n_energies']} | {f(r['energy_mae'])} | {f(r['e0_only_energy_mae'])} "
          f"| {f(r['relative_energy_mae'])} | {f(r['xtb_relative_energy_mae'])} | {f(r['forces_mae'])} "
          f"| {f(r['xtb_forces_mae'])} |" for r in rows],
    ]  # fmt: skip
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "shards": str(args.shards), "rows": rows}, indent=1))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
