"""`polyfid shards build`: sources -> validated records -> WebDataset shards + manifest, one Ray task per chunk.

Sources list MD frames and molecules in order, and shards in source order make batches of near-duplicates that
streaming shuffles cannot undo. So one build task (a "mix") reads `mix_chunks` chunks spread across its source
(chunks i, i + M, i + 2M, ... of M mixes) and shuffles their records together before sharding: every shard holds
records from distant parts of the source.

Resume/idempotence: each finished mix leaves a marker `_build/chunks/<dataset>/<first chunk_id>.json` (written
atomically after its shards) holding a fingerprint of its inputs. A mix whose marker matches and whose shards
are present is not redone. `manifest.json` is written last, so a folder with a manifest is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from polyfid.core.atomic import atomic_write_bytes
from polyfid.core.digest import sha256_file
from polyfid.data_shards.codec import CODEC_VERSION
from polyfid.data_shards.errors import PolyfidDataError, RecordError
from polyfid.data_shards.manifest import SPLITS, DatasetInfo, Manifest, ShardEntry
from polyfid.data_shards.readers import get_reader
from polyfid.data_shards.readers.base import Chunk
from polyfid.data_shards.record import Record
from polyfid.data_shards.reference_energies import LevelAccumulator, accumulate
from polyfid.data_shards.shard_writer import pack_into_shards, write_shard
from polyfid.data_shards.sources import BuildConfig
from polyfid.data_shards.splits import split_of
from polyfid.data_shards.stream.seeding import derive_rng

OnError = Literal["fail", "skip"]
MISSING = frozenset({"no_labels"})  # NaN means "not computed": such records are dropped and counted, never fatal
BUILD_DIR = "_build"
REPORT_NAME = "build_report.json"
_MAX_EXAMPLES = 20  # error messages kept per reason in the report
STALL_S = 900.0  # no chunk finished for this long (a chunk takes seconds): the build fails instead of hanging
_WAIT_S = 5.0


@dataclass
class BuildSummary:
    n_read: int = 0
    n_written: int = 0
    n_dropped: int = 0
    n_chunks: int = 0  # source chunks read
    n_mixes: int = 0  # build tasks (a mix of chunks of one source)
    n_mixes_reused: int = 0
    dropped_by_reason: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    report_path: str | None = None


def build_shards(
    config: BuildConfig,
    out: str | Path,
    on_error: OnError = "fail",
    address: str | None = None,
    progress: bool = True,
) -> BuildSummary:
    """Build (or resume) the shard folder `out` from `config`; returns counts. Raises PolyfidDataError on bad input
    when on_error='fail'; with 'skip' bad records are dropped and counted in `<out>/build_report.json`."""
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chunks = plan_chunks(config)
    mixes = plan_mixes(chunks, config.mix_chunks)
    with ray_session(address):
        markers = _run_mixes(mixes, config, out, on_error, progress)
    manifest = _assemble_manifest(config, mixes, markers)
    _remove_unreferenced(out, manifest)
    summary = _summarise(markers, len(chunks), len(mixes), time.perf_counter() - t0)
    if summary.n_dropped:
        summary.report_path = str(out / REPORT_NAME)
        atomic_write_bytes(out / REPORT_NAME, json.dumps(_report(markers), indent=1).encode())
    else:
        (out / REPORT_NAME).unlink(missing_ok=True)
    if summary.n_written == 0:
        raise PolyfidDataError(f"{out}: no valid record in any source; nothing to write")
    manifest.write(out)
    return summary


def plan_chunks(config: BuildConfig) -> list[Chunk]:
    """All chunks of all sources, in a deterministic order (reads metadata only)."""
    return [c for src in config.sources for c in get_reader(src.format).plan(src, config.base_dir)]


def plan_mixes(chunks: list[Chunk], per_mix: int) -> list[list[Chunk]]:
    """The build tasks: per source, its n chunks dealt into ceil(n / per_mix) mixes, mix i holding chunks
    i, i + M, i + 2M, ... (M mixes), so each mix spans the whole source."""
    by_source: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        by_source.setdefault(chunk.source.name, []).append(chunk)
    mixes = []
    for group in by_source.values():
        n_mixes = -(-len(group) // per_mix)
        mixes += [group[i::n_mixes] for i in range(n_mixes)]
    return mixes


def mix_fingerprint(mix: list[Chunk], config: BuildConfig, on_error: OnError) -> str:
    return hashlib.sha256("".join(chunk_fingerprint(c, config, on_error) for c in mix).encode()).hexdigest()


def chunk_fingerprint(chunk: Chunk, config: BuildConfig, on_error: OnError) -> str:
    stat = chunk.path.stat()
    payload = {
        "source": chunk.source.model_dump(mode="json"),
        "file": str(chunk.path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "selection": chunk.selection,
        "chunk_id": chunk.chunk_id,
        "codec": CODEC_VERSION,
        "split": config.split.model_dump(),
        "shard_limits": [config.shard_max_bytes, config.shard_max_samples],
        "on_error": on_error,
        "order": "mixed",
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _marker_path(out: Path, mix: list[Chunk]) -> Path:
    return out / BUILD_DIR / "chunks" / mix[0].source.name / f"{mix[0].chunk_id}.json"


def _load_valid_marker(out: Path, mix: list[Chunk], fingerprint: str) -> dict | None:
    """The mix's marker if it matches `fingerprint` and all its shards exist with the recorded size and sha256
    (a same-size corrupted shard is rebuilt, as the streaming error promises)."""
    try:
        marker = json.loads(_marker_path(out, mix).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if marker.get("fingerprint") != fingerprint:
        return None
    for shard in marker["shards"]:
        path = out / shard["path"]
        if not path.is_file() or path.stat().st_size != shard["n_bytes"] or sha256_file(path) != shard["sha256"]:
            return None
    return marker


def process_mix(mix: list[Chunk], config: BuildConfig, out: Path, on_error: OnError) -> dict:
    """Read, validate, split, shuffle together and shard a mix of chunks of one source; write its marker; return
    it (or {'error': message})."""
    fingerprint = mix_fingerprint(mix, config, on_error)
    by_split: dict[str, list[Record]] = {s: [] for s in SPLITS}
    n_written = 0
    dropped: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    n_read = 0
    source, mix_id = mix[0].source, mix[0].chunk_id
    for item in (item for chunk in mix for item in get_reader(source.format).read(chunk)):
        n_read += 1
        if isinstance(item, RecordError):
            if on_error == "fail" and item.reason not in MISSING:
                return {"error": str(item)}
            dropped[item.reason] += 1
            bucket = examples.setdefault(item.reason, [])
            if len(bucket) < _MAX_EXAMPLES:
                bucket.append(str(item))
            continue
        split = split_of(item.id, item.numbers, source.split or config.split)
        if split is None:  # a frame at a boundary between splits (split.gap): dropped, counted, never an error
            dropped["split_gap"] += 1
            continue
        n_written += 1
        by_split[split].append(item)
    shards = []
    for split, records in by_split.items():
        rng = derive_rng(source.name, mix_id, split)
        records = [records[i] for i in rng.permutation(len(records))]
        for k, group in enumerate(pack_into_shards(records, config.shard_max_bytes, config.shard_max_samples)):
            path = out / source.name / split / f"{mix_id}-{k:04d}.tar"
            info = write_shard(path, out, group)
            shards.append(asdict(ShardEntry(**asdict(info), dataset=source.name, split=split, chunk_id=mix_id)))
    marker = {
        "fingerprint": fingerprint,
        "dataset": source.name,
        "chunk_id": mix_id,
        "chunks": [c.chunk_id for c in mix],
        "shards": shards,
        "stats": {level: acc.to_dict() for level, acc in accumulate(by_split["train"]).items()},
        "n_read": n_read,
        "n_written": n_written,
        "dropped": dict(dropped),
        "examples": examples,
    }
    atomic_write_bytes(_marker_path(out, mix), json.dumps(marker).encode())
    return marker


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Use a running Ray (tests, clusters), connect to `address`, or start a local one for the build."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(address="local", include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20)
    try:
        yield
    finally:
        ray.shutdown()


def _run_mixes(
    mixes: list[list[Chunk]],
    config: BuildConfig,
    out: Path,
    on_error: OnError,
    progress: bool,
) -> dict[str, dict]:
    """Markers by mix key, reusing valid ones and running the rest as Ray tasks with a progress bar."""
    import ray

    task = ray.remote(num_cpus=1, max_retries=2)(process_mix)
    markers: dict[str, dict] = {}
    pending = {}
    total = sum(c.n_structures for mix in mixes for c in mix)
    bar = tqdm(total=total, unit="struct", desc="building shards", disable=not progress)
    for mix in mixes:
        marker = _load_valid_marker(out, mix, mix_fingerprint(mix, config, on_error))
        if marker is not None:
            markers[_mix_key(mix)] = {**marker, "reused": True}
            bar.update(_n_structures(mix))
        else:
            pending[task.remote(mix, config, out, on_error)] = mix
    last_done = time.monotonic()
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=_WAIT_S)
            if not done:  # a lost Ray (dead GCS) would otherwise block here forever
                if time.monotonic() - last_done > STALL_S:
                    names = ", ".join(sorted(_mix_key(m) for m in pending.values())[:5])
                    raise PolyfidDataError(
                        f"shard build stalled: no chunk finished in {STALL_S:.0f} s ({len(pending)} pending: {names}); "
                        "re-run the same command to resume"
                    )
                continue
            last_done = time.monotonic()
            mix = pending.pop(done[0])
            result = ray.get(done[0])
            if "error" in result:
                raise PolyfidDataError(
                    f"dataset {mix[0].source.name!r}: {result['error']} (use --on-error skip to drop bad records)"
                )
            markers[_mix_key(mix)] = result
            bar.update(_n_structures(mix))
    finally:
        for ref in pending:
            ray.cancel(ref)
        bar.close()
    return markers


def _mix_key(mix: list[Chunk]) -> str:
    return f"{mix[0].source.name}/{mix[0].chunk_id}"


def _n_structures(mix: list[Chunk]) -> int:
    return sum(c.n_structures for c in mix)


def _assemble_manifest(config: BuildConfig, mixes: list[list[Chunk]], markers: dict[str, dict]) -> Manifest:
    shards: list[ShardEntry] = []
    levels: dict[str, LevelAccumulator] = {}
    level_datasets: dict[str, set[str]] = {}
    datasets: dict[str, DatasetInfo] = {}
    for mix in mixes:
        marker, source = markers[_mix_key(mix)], mix[0].source
        shards.extend(ShardEntry(**s) for s in marker["shards"])
        for level, raw in marker["stats"].items():
            levels.setdefault(level, LevelAccumulator()).merge(LevelAccumulator.from_dict(raw))
            level_datasets.setdefault(level, set()).add(source.name)
        info = datasets.setdefault(source.name, DatasetInfo(source=source.model_dump(mode="json"), files=[]))
        for chunk in mix:
            if not any(f["path"] == str(chunk.path) for f in info.files):
                st = chunk.path.stat()
                info.files.append({"path": str(chunk.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        info.n_read += marker["n_read"]
        info.n_dropped += sum(marker["dropped"].values())
    shards.sort(key=lambda s: (s.dataset, SPLITS.index(s.split), s.path))
    fingerprint = hashlib.sha256("".join(markers[_mix_key(m)]["fingerprint"] for m in mixes).encode()).hexdigest()
    return Manifest(
        shards=shards,
        datasets=datasets,
        levels={lv: acc.fit(sorted(level_datasets[lv])) for lv, acc in sorted(levels.items())},
        split={"val": config.split.val, "test": config.split.test},
        build_fingerprint=fingerprint,
    )


def _remove_unreferenced(out: Path, manifest: Manifest) -> None:
    """Delete shards of earlier builds that this build no longer references (e.g. a changed config)."""
    keep = {s.path for s in manifest.shards}
    for path in out.glob("*/*/*.tar"):
        if path.parent.name in SPLITS and path.relative_to(out).as_posix() not in keep:
            path.unlink()


def _summarise(markers: dict[str, dict], n_chunks: int, n_mixes: int, seconds: float) -> BuildSummary:
    dropped: Counter[str] = Counter()
    for m in markers.values():
        dropped.update(m["dropped"])
    return BuildSummary(
        n_read=sum(m["n_read"] for m in markers.values()),
        n_written=sum(m["n_written"] for m in markers.values()),
        n_dropped=sum(dropped.values()),
        n_chunks=n_chunks,
        n_mixes=n_mixes,
        n_mixes_reused=sum(bool(m.get("reused")) for m in markers.values()),
        dropped_by_reason=dict(dropped),
        seconds=seconds,
    )


def _report(markers: dict[str, dict]) -> dict:
    """The skip report: dropped counts per dataset and reason, with example messages naming file/key/index."""
    report: dict[str, dict] = {}
    for m in markers.values():
        entry = report.setdefault(m["dataset"], {"read": 0, "written": 0, "dropped": {}, "examples": {}})
        entry["read"] += m["n_read"]
        entry["written"] += m["n_written"]
        for reason, n in m["dropped"].items():
            entry["dropped"][reason] = entry["dropped"].get(reason, 0) + n
        for reason, msgs in m["examples"].items():
            entry["examples"].setdefault(reason, []).extend(
                msgs[: _MAX_EXAMPLES - len(entry["examples"].get(reason, []))]
            )
    return report
