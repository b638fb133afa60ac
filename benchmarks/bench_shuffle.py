"""Shuffle quality of the train stream against an ideal i.i.d. draw, and its effect on a loss curve.

    python benchmarks/bench_shuffle.py [--n 200000] [--steps 300] [--out results/shuffle_quality.json]

Data: `--n` structures replicating the demo corpus' real GFN2-xTB MD (8 molecules), stored molecule after molecule
as ANI-style files are (see bench_scale.py; a data-path measurement, not chemistry), built twice with
10,000-structure chunks: each chunk shuffled alone (`mix_chunks: 1`, the build before this benchmark) and 8 chunks
spread across the source shuffled together per build task (`mix_chunks: 8`, the default).
Per stream setting (`interleave` shards read at once per consumer, `shuffle_buffer` records) it reports, over
400 train batches of <= 512 atoms: distinct formulas per batch, and distinct 50-frame MD blocks per structure
(frames 20 fs apart are near-duplicates), each beside the same count for batches of the same sizes drawn i.i.d.
from the train split.
Then it trains the same small HIP-NN for `--steps` steps from each stream and reports the val loss curve.
Writes a PNG (results/shuffle_quality.png) and the numbers (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from bench_scale import build, make_source  # noqa: E402

from polyfid.core.config import merge  # noqa: E402
from polyfid.data_shards.stream import StreamConfig, make_dataloader  # noqa: E402
from polyfid.data_shards.stream.catalog import ShardCatalog  # noqa: E402
from polyfid.pretrain.config import PretrainConfig  # noqa: E402
from polyfid.pretrain.engine import TrainingObjective, build_polyfid_model  # noqa: E402
from polyfid.pretrain.losses import HeadTargets  # noqa: E402

MAX_ATOMS = 512
N_BATCHES = 400
BLOCK = 50
BUILDS = {"chunks alone": 1, "8 chunks mixed": 8}  # build: name -> mix_chunks
SETTINGS = {  # stream: name -> (interleave, shuffle_buffer)
    "1 shard, buffer 1k": (1, 1000),
    "4 shards, buffer 1k": (4, 1000),
    "16 shards, buffer 1k": (16, 1000),
}


def source_of(record_id: str) -> tuple[str, int]:
    """(molecule, MD block) of a record id `<dataset>/md.h5:<molecule>:<frame>`."""
    _, molecule, frame = record_id.rsplit(":", 2)
    return molecule, int(frame) // BLOCK


def batch_counts(id_batches: list[list[str]]) -> dict[str, float]:
    """Mean distinct formulas per batch, and mean distinct MD blocks per structure (1: no near-duplicates)."""
    sources = [[source_of(i) for i in ids] for ids in id_batches]
    return {
        "formulas": float(np.mean([len({m for m, _ in s}) for s in sources])),
        "blocks": float(np.mean([len(set(s)) / len(s) for s in sources])),
        "structures": float(np.mean([len(s) for s in sources])),
    }


def iid_batches(ids: list[str], sizes: list[int], seed: int = 0) -> list[list[str]]:
    """Batches of the same sizes drawn uniformly from every train record."""
    rng = np.random.default_rng(seed)
    return [[ids[k] for k in rng.choice(len(ids), n, replace=False)] for n in sizes]


def stream(shards: Path, interleave: int, buffer: int, split: str = "train") -> StreamConfig:
    return StreamConfig(shard_dirs=[shards], max_atoms=MAX_ATOMS, interleave=interleave, shuffle_buffer=buffer,
                        split=split, seed=0)  # fmt: skip


def train_curve(shards: Path, cfg: PretrainConfig, interleave: int, buffer: int, steps: int) -> list[tuple[int, float]]:
    """Val loss every steps/6 steps of a plain in-process AdamW loop on this stream setting (same init seed)."""
    torch.manual_seed(0)
    catalog = ShardCatalog.open([shards])
    model = build_polyfid_model(cfg, catalog, ["gfn2-xtb"])
    objective = TrainingObjective(model, cfg.loss)
    targets = [HeadTargets("gfn2-xtb", catalog.level_names.index("gfn2-xtb"), cfg.loss.weights("gfn2-xtb"))]
    opt = torch.optim.AdamW(objective.parameters(), lr=cfg.optim.lr)
    val = [b for b, _ in zip(make_dataloader(stream(shards, 1, 0, "val"), "eval"), range(40), strict=False)]

    def val_loss() -> float:
        objective.eval()
        losses = [float(objective(b, targets)[0].detach()) for b in val]
        objective.train()
        return float(np.mean(losses))

    curve = [(0, val_loss())]
    loader = make_dataloader(stream(shards, interleave, buffer), "train")
    for step, batch in enumerate(loader, 1):
        loss, _ = objective(batch, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % max(1, steps // 6) == 0:
            curve.append((step, val_loss()))
        if step == steps:
            break
    return curve


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["settings"])
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.2))
    for ax, key, label in ((axes[0], "formulas", "distinct formulas per batch"),
                           (axes[1], "blocks", f"distinct {BLOCK}-frame MD blocks per structure")):  # fmt: skip
        y = np.arange(len(names))
        ax.barh(y + 0.2, [results["settings"][n][key] for n in names], 0.4, color="tab:blue", label="stream")
        ax.barh(y - 0.2, [results["settings"][n]["iid"][key] for n in names], 0.4, color="0.6", label="i.i.d. draw")
        ax.set_yticks(y, names)
        ax.set_xlabel(label)
        ax.set_title(label[0].upper() + label[1:])
        ax.legend(loc="lower right")
    axes[1].set_yticklabels([])
    for name in names:
        steps, losses = zip(*results["settings"][name]["curve"], strict=True)
        axes[2].plot(steps, losses, marker="o", label=name)
    axes[2].set_xlabel("training step (batches of <= 512 atoms)")
    axes[2].set_ylabel("val loss (normalised energy + force MSE)")
    axes[2].set_yscale("log")
    axes[2].set_title("Val loss by stream setting")
    axes[2].legend(fontsize=8)
    fig.suptitle(
        f"Train-stream shuffle quality: {results['n']:,} MD structures of 8 molecules stored molecule by molecule"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--work", type=Path, default=Path("/tmp/polyfid-shuffle"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "shuffle_quality.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    sources = make_source(args.n, args.work / "source")
    base = yaml.safe_load((ROOT / "pretrain" / "configs" / "demo.yaml").read_text())
    results: dict = {"n": args.n, "steps": args.steps, "settings": {}}
    for build_name, mix_chunks in BUILDS.items():
        config = yaml.safe_load(sources.read_text()) | {"mix_chunks": mix_chunks}
        mixed = sources.with_name(f"sources-mix{mix_chunks}.yaml")
        mixed.write_text(yaml.safe_dump(config))
        shards = args.work / f"shards-mix{mix_chunks}"
        if not (shards / "manifest.json").exists():
            build(mixed, shards)
        data = {"shard_dirs": [str(shards)], "levels": ["gfn2-xtb"], "datasets": None, "ratios": None}
        cfg = PretrainConfig.model_validate(merge(base, {"data": data}))
        train_ids = [i for b in make_dataloader(stream(shards, 1, 0), "eval") for i in b.ids]
        for stream_name, setting in SETTINGS.items():
            name = f"{build_name}; {stream_name}"
            results["settings"][name] = measure(shards, cfg, setting, train_ids, args.steps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    plot(results, args.out.with_suffix(".png"))


def measure(shards: Path, cfg: PretrainConfig, setting: tuple[int, int], train_ids: list[str], steps: int) -> dict:
    """Batch diversity of one stream setting beside i.i.d. batches of the same sizes, and its val loss curve."""
    interleave, buffer = setting
    t0 = time.perf_counter()
    loader = make_dataloader(stream(shards, interleave, buffer), "train")
    batches = [b.ids for b, _ in zip(loader, range(N_BATCHES), strict=False)]
    row = batch_counts(batches)
    row["iid"] = batch_counts(iid_batches(train_ids, [len(b) for b in batches]))
    row["curve"] = train_curve(shards, cfg, interleave, buffer, steps)
    row["seconds"] = time.perf_counter() - t0
    print(f"{shards.name} {setting}: formulas {row['formulas']:.2f} (i.i.d. {row['iid']['formulas']:.2f}), distinct "
          f"blocks per structure {row['blocks']:.3f} (i.i.d. {row['iid']['blocks']:.3f}), val loss "
          f"{' '.join(f'{v:.3g}' for _, v in row['curve'])}", flush=True)  # fmt: skip
    return row


if __name__ == "__main__":
    main()
