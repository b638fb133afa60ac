"""The data path at scale: build, verify, stream and resume at 10^5, 10^6 (and 10^7) structures.

    python benchmarks/bench_scale.py --sizes 100000 1000000 [--work DIR] [--out results/scale.json]

The structures replicate the demo corpus' real GFN2-xTB MD records (8 molecules x 300 frames, 6-9 atoms), in
source order (molecule after molecule, as ANI-style files are), with positions perturbed by N(0, 0.01 A) and the
labels copied: this measures the data path, not chemistry. Per size it reports:
  build: seconds and us per structure, peak RSS of the driver process and of the whole build (driver + Ray workers)
  manifest: size, parse time (uncached), shard count; verify: seconds (sha256 of every shard)
  stream: structures/s one loader delivers (train mode, in-process, decode + mix + shuffle + pack + collate) and
          the peak RSS of that process
  resume: time to the first batch after a restore from a state saved after S batches, seeking, against replaying
          those S batches (the old resume), and S / batches per epoch
Ratios (us per structure against the smallest size) show whether cost stays flat.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import h5py
import numpy as np
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO_MD = ROOT / "data_shards" / "demo_corpus" / "md_xtb.h5"
BIN = Path(sys.executable).parent
MAX_ATOMS = 512
RESUME_AFTER = 1500  # batches streamed before the state is saved


def make_source(n: int, folder: Path) -> Path:
    """`n` structures: the demo MD frames replicated with perturbed positions, one HDF5 group per molecule."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with h5py.File(DEMO_MD) as src, h5py.File(folder / "md.h5", "w") as dst:
        names = sorted(src)
        for k, name in enumerate(names):
            g = src[name]
            m = n // len(names) + (k < n % len(names))
            reps = np.arange(m) % g["positions"].shape[0]
            out = dst.create_group(name)
            out["atomic_numbers"] = g["atomic_numbers"][()]
            pos = out.create_dataset("positions", (m, *g["positions"].shape[1:]), dtype="f8")
            lv = out.create_group("gfn2_xtb")
            for key in ("energy", "forces", "ok"):
                lv.create_dataset(key, data=g["gfn2_xtb"][key][()][reps])
            step = 250_000
            for a in range(0, m, step):
                b = min(m, a + step)
                pos[a:b] = g["positions"][()][reps[a:b]] + rng.normal(0, 0.01, (b - a, *g["positions"].shape[1:]))
    source = {
        "name": "scale_md",
        "path": "md.h5",
        "format": "generic_h5",
        "units": {"energy": "ev", "length": "angstrom"},
        "levels": {"gfn2-xtb": {"energy": "gfn2_xtb/energy", "forces": "gfn2_xtb/forces", "valid": "gfn2_xtb/ok"}},
        "options": {"numbers": "atomic_numbers", "positions": "positions", "groups": "*"},
    }
    path = folder / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": [source]}))
    return path


def build(sources: Path, out: Path) -> dict:
    """`polyfid shards build` as a user runs it, with the peak RSS of the driver and of its process tree."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    cmd = [str(BIN / "polyfid"), "shards", "build", str(sources), "--out", str(out), "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    driver, peak_driver, peak_tree = psutil.Process(proc.pid), 0, 0
    while proc.poll() is None:
        try:
            tree = [driver, *driver.children(recursive=True)]
            rss = [p.memory_info().rss for p in tree]
            peak_driver, peak_tree = max(peak_driver, rss[0]), max(peak_tree, sum(rss))
        except psutil.Error:
            pass
        time.sleep(0.2)
    seconds = time.perf_counter() - t0
    output = proc.stdout.read().decode() if proc.stdout else ""
    if proc.returncode:
        raise RuntimeError(f"build failed: {output[-2000:]}")
    return {"seconds": seconds, "driver_peak_rss_mb": peak_driver / 2**20, "tree_peak_rss_mb": peak_tree / 2**20}


def manifest_stats(out: Path) -> dict:
    from polyfid.data_shards.manifest import MANIFEST_NAME, Manifest

    data = (out / MANIFEST_NAME).read_bytes()
    t0 = time.perf_counter()
    manifest = Manifest._parse(out / MANIFEST_NAME, data)
    parse = time.perf_counter() - t0
    return {"manifest_mb": len(data) / 2**20, "parse_s": parse, "n_shards": len(manifest.shards)}


def verify(out: Path) -> float:
    from polyfid.data_shards.verify import verify_shards

    t0 = time.perf_counter()
    problems = verify_shards(out, progress=False)
    if problems:
        raise RuntimeError(f"verify found {problems[:3]}")
    return time.perf_counter() - t0


def _data_section(out: Path):
    from polyfid.pretrain.config import DataSection

    return DataSection(shard_dirs=[out], max_atoms=MAX_ATOMS, num_workers=0, prefetch=0)


def _task_stream(out: Path):
    from polyfid.data_shards.stream import StreamPlan
    from polyfid.pretrain.data import TaskStream, stream_config

    data = _data_section(out)
    return TaskStream(StreamPlan.from_config(stream_config(data, 0, "train", None)), data, 0, 1)


def stream_child(out: str, n_batches: int) -> dict:
    """Structures/s of one in-process loader over `n_batches` train batches, and this process's peak RSS."""
    import torch

    torch.set_num_threads(1)
    stream = _task_stream(Path(out))
    next(stream)  # opens the stream: first shard reads
    t0 = time.perf_counter()
    n = sum(next(stream).n_structures for _ in range(n_batches))
    rate = n / (time.perf_counter() - t0)
    return {"structures_per_s": rate, "rank_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def resume_child(out: str) -> dict:
    """Seek vs replay: the first batch after restoring a position saved after RESUME_AFTER batches."""
    import torch

    torch.set_num_threads(1)
    stream = _task_stream(Path(out))
    for _ in range(RESUME_AFTER):
        next(stream)
    position = json.loads(json.dumps(stream.position))
    expected = next(stream).ids
    per_epoch = stream.plan.batches_per_epoch(1)
    seek = _task_stream(Path(out))
    t0 = time.perf_counter()
    seek.restore(position)
    first = next(seek).ids
    seek_s = time.perf_counter() - t0
    replay = _task_stream(Path(out))
    t0 = time.perf_counter()
    replay.restore([position["epoch"], position["step"]])
    again = next(replay).ids
    replay_s = time.perf_counter() - t0
    if not first == again == expected:
        raise RuntimeError("a resumed stream differs from the uninterrupted one")
    return {"seek_s": seek_s, "replay_s": replay_s, "resume_step": RESUME_AFTER, "batches_per_epoch": per_epoch}


def make_task_sources(n_datasets: int, n_levels: int, per_dataset: int, folder: Path) -> Path:
    """`n_datasets` datasets x `n_levels` levels: each dataset reads `per_dataset` structures of one shared file
    (the replicated MD above); the levels all carry the GFN2-xTB labels (a data-path measurement)."""
    make_source(per_dataset, folder)
    with h5py.File(folder / "md.h5", "a") as f:
        for name in f:
            for k in range(1, n_levels):
                f[name][f"level{k}"] = h5py.SoftLink(f"/{name}/gfn2_xtb")
    levels = {f"level{k}": f"level{k}" for k in range(1, n_levels)} | {"gfn2-xtb": "gfn2_xtb"}
    base = yaml.safe_load((folder / "sources.yaml").read_text())["sources"][0]
    base["levels"] = {
        lv: {"energy": f"{g}/energy", "forces": f"{g}/forces", "valid": f"{g}/ok"} for lv, g in levels.items()
    }
    sources = [{**base, "name": f"set{d:03d}"} for d in range(n_datasets)]
    path = folder / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": sources}))
    return path


def tasks_child(out: str, rounds: int, inner: int, close: bool) -> dict:
    """One TaskStream per dataset, run round-robin `inner` batches each (as Reptile does), closing the previous
    task's stream (`close`) or keeping every stream open; peak RSS and the first-batch latency of a task."""
    import torch

    from polyfid.data_shards.stream import StreamPlan
    from polyfid.data_shards.stream.catalog import ShardCatalog
    from polyfid.pretrain.data import TaskStream, stream_config

    torch.set_num_threads(1)
    data = _data_section(Path(out)).model_copy(update={"prefetch": 2})
    catalog = ShardCatalog.open(data.shard_dirs)
    t0 = time.perf_counter()
    streams = [
        TaskStream(StreamPlan.from_config(stream_config(data, 0, "train", [d]), catalog), data, 0, 1)
        for d in catalog.datasets("train")
    ]
    plan_s = time.perf_counter() - t0
    first, previous = [], None
    for _ in range(rounds):
        for stream in streams:
            if close and previous is not None:
                previous.close()
            t0 = time.perf_counter()
            next(stream)
            first.append(time.perf_counter() - t0)
            for _ in range(inner - 1):
                next(stream)
            previous = stream
    return {
        "n_tasks": len(streams),
        "plans_s": plan_s,
        "first_batch_ms": 1e3 * float(np.median(first)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "open_threads": sum(s.is_open for s in streams),
    }


def in_child(fn, *args) -> dict:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/polyfid-scale"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scale.json")
    parser.add_argument("--stream-batches", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--tasks", type=int, default=0, help="also measure the task path: this many datasets")
    args = parser.parse_args()
    if args.tasks:
        folder = args.work / f"tasks{args.tasks}"
        sources = make_task_sources(args.tasks, 5, 2000, folder / "source")
        row = {"build": build(sources, folder / "shards"), "manifest": manifest_stats(folder / "shards")}
        for close in (True, False):
            row["close" if close else "keep_open"] = in_child(tasks_child, str(folder / "shards"), 2, 5, close)
        print(json.dumps(row, indent=1))
        (args.out.parent / "tasks.json").write_text(json.dumps(row, indent=1))
        return
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for n in args.sizes:
        folder = args.work / f"n{n}"
        t0 = time.perf_counter()
        sources = make_source(n, folder / "source")
        row: dict = {"generate_s": time.perf_counter() - t0}
        row["build"] = build(sources, folder / "shards")
        row["build"]["us_per_structure"] = row["build"]["seconds"] / n * 1e6
        row["manifest"] = manifest_stats(folder / "shards")
        row["verify_s"] = verify(folder / "shards")
        row["stream"] = in_child(stream_child, str(folder / "shards"), args.stream_batches)
        row["resume"] = in_child(resume_child, str(folder / "shards"))
        results[str(n)] = row
        print(json.dumps({n: row}, indent=1), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
        if not args.keep:
            subprocess.run(["rm", "-rf", str(folder)], check=True)
    base_us = results[str(min(int(k) for k in results))]["build"]["us_per_structure"]
    head = ["structures", "build us/str", "ratio", "driver MB", "tree MB", "manifest MB", "parse s", "verify s",
            "stream str/s", "rank MB", "seek s", "replay s"]  # fmt: skip
    print(" ".join(f"{h:>12}" for h in head))
    for n, r in sorted(results.items(), key=lambda kv: int(kv[0])):
        b = r["build"]
        cells = [f"{int(n):,}", f"{b['us_per_structure']:.1f}", f"{b['us_per_structure'] / base_us:.2f}",
                 f"{b['driver_peak_rss_mb']:.0f}", f"{b['tree_peak_rss_mb']:.0f}",
                 f"{r['manifest']['manifest_mb']:.3f}",
                 f"{r['manifest']['parse_s']:.3f}", f"{r['verify_s']:.1f}", f"{r['stream']['structures_per_s']:,.0f}",
                 f"{r['stream']['rank_peak_rss_mb']:.0f}", f"{r['resume']['seek_s']:.2f}",
                 f"{r['resume']['replay_s']:.2f}"]  # fmt: skip
        print(" ".join(f"{c:>12}" for c in cells))


if __name__ == "__main__":
    main()
