"""Cost of the foundation corpus: the per-level cost measured by a corpus run, and the projected cost of another
config (by default the full corpus) from the same per-structure costs.

    python benchmarks/bench_corpus.py --manifest corpus-medium/manifest.json [--config full] [--cores 2]

Per level it prints the measured compute per structure (sum of single-calculation wall times, one thread each,
pretraining molecules and held-out targets apart) and the structures the projected config plans: RDKit conformers
are embedded for every molecule (as the generator does), so the structure counts are exact but for failures.
The baseline is the measured run itself: the projection is reported as a ratio to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from polyfid.data_shards.corpus.assemble import PRETRAIN_DATASET  # noqa: E402
from polyfid.data_shards.corpus.config import load_corpus_config  # noqa: E402
from polyfid.data_shards.corpus.molecules import conformers  # noqa: E402
from polyfid.data_shards.corpus.plan import label_chunks  # noqa: E402
from polyfid.data_shards.corpus.run import structure_sets  # noqa: E402


def measured(manifest: dict) -> tuple[dict[tuple[str, str], float], float, int]:
    """Seconds per structure by (role, level), sampling seconds per sampled structure, sampled structures."""
    wall: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    sampled = 0
    for name, ds in manifest["datasets"].items():
        role = "pretrain" if name == PRETRAIN_DATASET else "heldout"
        if not name.startswith("scan_"):
            sampled += ds["structures"]
        for level, st in ds["levels"].items():
            wall[(role, level)][0] += st["wall_s"]
            wall[(role, level)][1] += st["planned"]
    per = {k: w / n for k, (w, n) in wall.items() if n}
    return per, manifest["sampling"]["wall_s"] / max(sampled, 1), sampled


def planned(config_names: list[str]) -> tuple[dict[tuple[str, str], int], int]:
    """Structures per (role, level) and sampled structures the config plans."""
    config = load_corpus_config(config_names)
    md, nm = config.md, config.normal_modes
    per_conformer = 1 + len(md.temperatures_k) * md.frames + len(nm.temperatures_k) * nm.samples
    counts: dict[tuple[str, str], int] = defaultdict(int)
    sampled = 0
    scans = {h.name: h.scan for h in config.heldout}
    for s in structure_sets(config, Path("/nonexistent")):
        role = s.molecule.role
        if s.kind == "scan":
            n = scans[s.molecule.name].points
        else:
            seed = config.seed * 100_003 + s.molecule.index * 2 + (role == "heldout")
            n = len(conformers(s.molecule, config.conformers, seed)) * per_conformer
            sampled += n
            counts[(role, "gfn2-xtb")] += n
        for chunk in label_chunks(s.molecule, s.kind, n, s.plans, config.seed, config.chunk_size):
            counts[(role, chunk.level)] += len(chunk.indices)
    return counts, sampled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--config", nargs="+", default=["full"])
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    manifest = json.loads(args.manifest.read_text())
    per, sampling_per, sampled_then = measured(manifest)
    counts, sampled = planned(args.config)
    rows, total, total_then = [], sampling_per * sampled, manifest["sampling"]["wall_s"]
    for key in sorted(counts, key=lambda k: (k[0] != "pretrain", k[1])):
        n = counts[key]
        cost = per.get(key, 0.0) * n if key[1] != "gfn2-xtb" else 0.0
        total += cost
        then = sum(st["planned"] for name, ds in manifest["datasets"].items() for lv, st in ds["levels"].items()
                   if lv == key[1] and (name == PRETRAIN_DATASET) == (key[0] == "pretrain"))  # fmt: skip
        total_then += per.get(key, 0.0) * then if key[1] != "gfn2-xtb" else 0.0
        rows.append(f"| {key[0]} | {key[1]} | {per.get(key, float('nan')):.3g} | {then} | {n} | {cost / 3600:.2f} |")
    print(f"measured run: {args.manifest} ({sampled_then} sampled structures); projected: {' + '.join(args.config)}")
    print(
        "| molecules | level | s per structure (measured) | structures (measured run) | structures (projected) "
        "| projected core-hours |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    print(
        f"| all | sampling (MD, Hessians, GFN2-xTB) | {sampling_per:.3g} | {sampled_then} | {sampled} "
        f"| {sampling_per * sampled / 3600:.2f} |"
    )
    print("\n".join(rows))
    print(
        f"total compute: measured {total_then / 3600:.2f} core-hours; projected {total / 3600:.2f} core-hours "
        f"({total / total_then:.1f}x), {total / 3600 / args.cores:.1f} h on {args.cores} cores at full use"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
