"""Corpus files from the finished chunks: corpus.h5 (pretraining molecules), heldout_<name>.h5 and
scan_<name>.h5 (fine-tuning targets), sources.yaml for `polyfid shards build`, manifest.json (config, counts,
failures, cost, checksums, software) and PROVENANCE.md. Missing labels are NaN with `<level>/ok` False.

corpus.h5 holds each molecule's structures in tiers, `<tier>/<molecule>`: a structure's tier is the last level of
the nested plans that labels it, so a tier is a dataset (`corpus_<tier>`) and pretraining samples the few
high-level structures with explicit ratios (and a Reptile level task reads only datasets labelled at its level)
instead of meeting one in fifty batches."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from polyfid.core.atomic import atomic_write_bytes
from polyfid.core.digest import sha256_file
from polyfid.data_shards.corpus.chunks import load_chunk
from polyfid.data_shards.corpus.config import CorpusConfig
from polyfid.data_shards.corpus.run import SAMPLED_LEVEL, CorpusRun, StructureSet
from polyfid.data_shards.corpus.sampling import KINDS
from polyfid.data_shards.demo.output import h5_group, write_h5
from polyfid.data_shards.qm import LEVELS, software_versions

NOT_COMPUTED = "not computed: its chunk is unfinished (rerun the same command to finish it)"
MANIFEST_FORMAT = "polyfid-corpus/1"
PRETRAIN_DATASET = "corpus"  # the pretraining molecules (manifest counts); every other one is a held-out target


def _level_arrays(s: StructureSet) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, Any]]]:
    """Per level: the NaN-filled arrays of every structure with the computed chunks filled in, and statistics."""
    m, n = s.arrays["positions"].shape[:2]
    levels: dict[str, dict[str, np.ndarray]] = {}
    stats: dict[str, dict[str, Any]] = {}
    if s.kind == "sampled":
        levels[SAMPLED_LEVEL] = {
            "energy": s.arrays["energy"],
            "forces": s.arrays["forces"],
            "ok": np.ones(m, bool),
        }
        stats[SAMPLED_LEVEL] = {"planned": m, "ok": m, "wall_s": 0.0, "reasons": Counter(), "forces": True}
    for plan in s.plans:
        arrays = {"energy": np.full(m, np.nan), "ok": np.zeros(m, bool), "wall_time": np.full(m, np.nan)}
        if plan.forces:
            arrays["forces"] = np.full((m, n, 3), np.nan)
        st = {"planned": 0, "ok": 0, "wall_s": 0.0, "reasons": Counter(), "forces": plan.forces}
        for chunk, path in s.labels.get(plan.level, []):
            st["planned"] += len(chunk.indices)
            data = load_chunk(path)
            if data is None:
                st["reasons"][NOT_COMPUTED] += len(chunk.indices)
                continue
            idx = list(chunk.indices)
            for key in arrays:
                arrays[key][idx] = data[key]
            st["ok"] += int(data["ok"].sum())
            st["wall_s"] += float(np.nansum(data["wall_time"]))
            st["reasons"].update(e[:120] for e in data["error"] if e)
        levels[plan.level] = arrays
        stats[plan.level] = st
    return levels, stats


def _group(s: StructureSet, levels: dict[str, dict[str, np.ndarray]], rows: np.ndarray | None = None) -> dict[str, Any]:
    """The h5 group of a structure set, or of its `rows` (per-structure arrays subset, per-molecule ones kept)."""
    m = len(s.arrays["positions"])

    def take(a: np.ndarray) -> np.ndarray:
        return a[rows] if rows is not None and np.ndim(a) and len(a) == m else a

    extra: dict[str, Any] = {
        "charge": np.int64(s.molecule.charge),
        "multiplicity": np.int64(s.molecule.multiplicity),
    }
    for key in ("origin", "coordinate", "scan_atoms"):
        if key in s.arrays:
            extra["scan_coordinate" if key == "coordinate" else key] = take(s.arrays[key])
    levels = {lv: {k: take(v) for k, v in arrays.items()} for lv, arrays in levels.items()}
    group = h5_group(np.array(s.molecule.numbers), take(s.arrays["positions"]), levels, extra)
    group["@attrs"][""] = {"name": s.molecule.name, "smiles": s.molecule.smiles, "role": s.molecule.role}
    return group


def tiers(s: StructureSet, levels: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """{tier: rows}: each structure under the key of the last plan level (nested order) that labels it."""
    tier = np.full(len(s.arrays["positions"]), LEVELS[SAMPLED_LEVEL].key, dtype=object)
    for plan in s.plans:
        tier[levels[plan.level]["ok"]] = LEVELS[plan.level].key
    return {t: np.flatnonzero(tier == t) for t in dict.fromkeys(tier)}


def _dataset(s: StructureSet) -> str:
    if s.molecule.role == "pretrain":
        return PRETRAIN_DATASET
    return f"{'scan' if s.kind == 'scan' else 'heldout'}_{s.molecule.key[5:]}"


def assemble(run: CorpusRun, config: CorpusConfig) -> dict[str, Any]:
    """Write the corpus files of every structure set whose geometries exist; returns the manifest."""
    out = run.out
    files: dict[str, dict[str, Any]] = {}
    datasets: dict[str, dict[str, Any]] = {}
    sampling_failures = []
    sampling_wall = 0.0
    tier_counts: Counter[str] = Counter()
    for s in run.sets:
        if s.arrays is None:
            continue
        sampling_failures += [f"{s.molecule.name}: {e}" for e in s.arrays.get("errors", [])]
        sampling_wall += float(s.arrays.get("wall_s", 0.0))
        levels, stats = _level_arrays(s)
        name = _dataset(s)
        if name == PRETRAIN_DATASET:
            for tier, rows in tiers(s, levels).items():
                files.setdefault(f"{name}.h5", {})[f"{tier}/{s.molecule.key}"] = _group(s, levels, rows)
                tier_counts[tier] += len(rows)
        else:
            files.setdefault(f"{name}.h5", {})[s.molecule.key] = _group(s, levels)
        ds = datasets.setdefault(name, {"molecules": 0, "structures": 0, "atoms": 0, "levels": {}})
        ds["molecules"] += 1
        ds["structures"] += len(s.arrays["positions"])
        ds["atoms"] += len(s.arrays["positions"]) * len(s.molecule.numbers)
        for lv, st in stats.items():
            acc = ds["levels"].setdefault(
                lv, {"planned": 0, "ok": 0, "wall_s": 0.0, "reasons": Counter(), "forces": st["forces"]}
            )
            for k in ("planned", "ok", "wall_s"):
                acc[k] += st[k]
            acc["reasons"].update(st["reasons"])
        if s.kind == "sampled":
            kinds = Counter(KINDS[int(k)] for k in s.arrays["origin"][:, 0])
            ds.setdefault("origin", Counter()).update(kinds)
    attrs = {
        "generator": "polyfid shards generate-corpus",
        "units": {"energy": "eV", "forces": "eV/Angstrom", "positions": "Angstrom", "wall_time": "s"},
        "missing_values": "NaN with <level>/ok False",
    }
    for fname, groups in files.items():
        write_h5(out / fname, groups, attrs)
    for ds in datasets.values():
        for st in ds["levels"].values():
            st["failed"] = st["planned"] - st["ok"]
            st["wall_s"] = round(st["wall_s"], 1)
            st["reasons"] = dict(st["reasons"].most_common(8))
        ds["origin"] = dict(ds.get("origin", {}))
    targets = {k: v for k, v in datasets.items() if k != PRETRAIN_DATASET}
    pretrain = {f"{PRETRAIN_DATASET}_{t}": datasets[PRETRAIN_DATASET] for t in tier_counts}
    what = "the pretraining molecules, one dataset per tier (the last level labelling a structure)"
    atomic_write_bytes(out / "sources.yaml", sources_yaml(pretrain, what).encode())
    atomic_write_bytes(out / "targets.yaml", sources_yaml(targets, "the held-out targets").encode())
    manifest = {
        "format": MANIFEST_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config.model_dump(mode="json"),
        "molecules_sha256": sha256_file(config.molecules),
        "datasets": datasets,
        "tiers": {f"{PRETRAIN_DATASET}_{t}": n for t, n in tier_counts.items()},
        "sampling": {"wall_s": round(sampling_wall, 1), "failures": sampling_failures},
        "this_run": {
            "seconds": round(run.seconds, 1),
            "computed": dict(run.computed),
            "reused": dict(run.reused),
            "failed_tasks": run.failed_tasks,
        },
        "complete": not run.failed_tasks
        and all(NOT_COMPUTED not in st["reasons"] for ds in datasets.values() for st in ds["levels"].values()),
        "files": {
            p: {"bytes": (out / p).stat().st_size, "sha256": sha256_file(out / p)}
            for p in sorted([*files, "sources.yaml", "targets.yaml"])
        },
        "software": {**software_versions(), "rdkit": _version("rdkit"), "polyfid": _git_commit()},
    }
    atomic_write_bytes(out / "manifest.json", json.dumps(manifest, indent=1).encode())
    atomic_write_bytes(out / "PROVENANCE.md", provenance_md(manifest).encode())
    return manifest


def _version(pkg: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    """The commit of the polyfid checkout that ran (dirty marked), or 'unknown' outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if rev.returncode == 0 else "unknown"


def sources_yaml(datasets: dict[str, dict[str, Any]], what: str) -> str:
    """A sources file (polyfid schema) of some corpus files; scans are kept whole, the rest split by MD blocks.
    Pretraining and targets get separate files, so shards of one never fit E0 on the other's energies. A
    `corpus_<tier>` dataset reads the `<tier>/*` groups of corpus.h5."""
    lines = [
        f"# Foundation corpus (polyfid shards generate-corpus): {what}. Units: eV, eV/Angstrom, Angstrom.",
        "# Missing labels are NaN with the level's valid flag False; charge and multiplicity per molecule.",
        "split: {val: 0.1, test: 0.15, by: block, block: 10, gap: 1}",
        "sources:",
    ]
    for name, ds in datasets.items():
        tier = name.removeprefix(f"{PRETRAIN_DATASET}_") if name.startswith(f"{PRETRAIN_DATASET}_") else ""
        lines += [
            f"  - name: {name}",
            f"    path: {PRETRAIN_DATASET if tier else name}.h5",
            "    format: generic_h5",
            "    units: {energy: ev, length: angstrom}",
            "    levels:",
        ]
        for level in ds["levels"]:
            key = LEVELS[level].key
            lines.append(f"      {level}:")
            lines.append(f"        energy: {key}/energy")
            if ds["levels"][level]["forces"]:
                lines.append(f"        forces: {key}/forces")
            lines.append(f"        valid: {key}/ok")
        lines.append(
            "    options: {numbers: atomic_numbers, positions: positions, charge: charge, "
            f'multiplicity: multiplicity, groups: "{tier + "/" if tier else ""}*"}}'
        )
        if name.startswith("scan_"):
            lines.append("    split: {val: 0.1, test: 0.15, by: group}")
    return "\n".join(lines) + "\n"


def provenance_md(manifest: dict[str, Any]) -> str:
    """A readable account of the manifest: what was computed, at what cost, what failed, how to regenerate."""
    cfg = manifest["config"]
    rows = []
    for name, ds in manifest["datasets"].items():
        for lv, st in ds["levels"].items():
            per = st["wall_s"] / max(st["planned"], 1)
            reasons = "; ".join(f"{k} ({v})" for k, v in st["reasons"].items())[:200] or "-"
            rows.append(
                f"| {name} | {lv} | {st['planned']} | {st['ok']} | {st['failed']} | {st['wall_s']:.0f} "
                f"| {per:.3g} | {reasons} |"
            )
    total = sum(st["wall_s"] for ds in manifest["datasets"].values() for st in ds["levels"].values())
    total += manifest["sampling"]["wall_s"]
    sizes = [f"| {p} | {f['bytes'] / 2**20:.2f} MiB | `{f['sha256'][:16]}` |" for p, f in manifest["files"].items()]
    fails = manifest["sampling"]["failures"]
    return "\n".join(
        [
            "# Foundation corpus provenance",
            "",
            f"Generated by `polyfid shards generate-corpus` (polyfid {manifest['software']['polyfid']}) on "
            f"{manifest['created']}. Complete: {manifest['complete']}.",
            "",
            "## What",
            "",
            f"- Molecules: `{Path(cfg['molecules']).name}` (sha256 `{manifest['molecules_sha256'][:16]}`), "
            f"{cfg['max_molecules'] or 'all'} pretraining molecules, {len(cfg['heldout'])} held out.",
            f"- Geometries: {cfg['conformers']} RDKit ETKDG conformers per molecule, GFN2-xTB BFGS minima; Langevin MD "
            f"at {cfg['md']['temperatures_k']} K ({cfg['md']['frames']} frames every {cfg['md']['stride']} steps of "
            f"{cfg['md']['timestep_fs']} fs after {cfg['md']['equil_steps']}); harmonic normal-mode samples at "
            f"{cfg['normal_modes']['temperatures_k']} K ({cfg['normal_modes']['samples']} each).",
            "- Levels on nested subsets (the first structures of one seeded permutation per molecule): "
            + "; ".join(
                f"{p['level']} ({'all' if p['per_molecule'] is None else p['per_molecule']} per molecule"
                f"{'' if p['max_heavy_atoms'] is None else ', <= ' + str(p['max_heavy_atoms']) + ' heavy atoms'}"
                f"{', E+F' if p['forces'] else ', E'})"
                for p in cfg["levels"]
            )
            + ".",
            "- Pretraining datasets, one per tier (the last level labelling a structure): "
            + ", ".join(f"`{t}` {n}" for t, n in manifest.get("tiers", {}).items())
            + ".",
            *[f"- `{LEVELS[k].name}`: {LEVELS[k].description}" for k in LEVELS],
            f"- Software: {json.dumps(manifest['software'])}",
            "",
            "## Counts, failures, cost",
            "",
            "Wall seconds are the sum over single calculations (one thread each): the compute cost, whatever the "
            "number of runs it took.",
            "",
            "| dataset | level | planned | ok | failed | wall s | s per structure | reasons |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            f"Geometry sampling (RDKit + GFN2-xTB MD, Hessians, labels): {manifest['sampling']['wall_s']:.0f} s. "
            f"Total compute: {total:.0f} s ({total / 3600:.2f} core-hours). Last run: "
            f"{manifest['this_run']['seconds']:.0f} s wall, chunks computed {manifest['this_run']['computed']}, "
            f"reused {manifest['this_run']['reused']}.",
            "",
            f"Sampling segments that failed ({len(fails)}): " + ("; ".join(fails[:20]) or "none") + ".",
            "",
            "## Files",
            "",
            "| file | size | sha256 |",
            "| --- | --- | --- |",
            *sizes,
            "",
        ]
    )
