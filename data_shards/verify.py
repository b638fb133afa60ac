"""`polyfid shards verify`: the manifest against the folder. Every listed shard must exist with its size and
sha256, and no shard may be on disk without an entry; `deep` also decodes every sample and recounts what the
manifest says each shard holds (samples, atoms, labels per level, elements)."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from polyfid.core.digest import sha256_file
from polyfid.data_shards.codec import decode
from polyfid.data_shards.manifest import SPLITS, Manifest, ShardEntry
from polyfid.data_shards.shard_writer import ShardTally


@dataclass
class ShardProblem:
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def verify_shards(folder: str | Path, progress: bool = True, deep: bool = False) -> list[ShardProblem]:
    """Problems found (empty when the folder is exactly what its manifest says). A manifest that fails its own
    content hash raises `PolyfidDataError` on load."""
    folder = Path(folder)
    manifest = Manifest.load(folder)
    problems = []
    for shard in tqdm(manifest.shards, desc="verifying shards", unit="shard", disable=not progress):
        path = folder / shard.path
        if not path.is_file():
            problems.append(ShardProblem(shard.path, "missing"))
        elif path.stat().st_size != shard.n_bytes:
            problems.append(ShardProblem(shard.path, f"size {path.stat().st_size} != {shard.n_bytes} (truncated?)"))
        elif sha256_file(path) != shard.sha256:
            problems.append(ShardProblem(shard.path, "sha256 mismatch (corrupted)"))
        elif deep:
            problems += _recount(path, shard)
    listed = {s.path for s in manifest.shards}
    for path in sorted(folder.glob("*/*/*.tar")):
        rel = path.relative_to(folder).as_posix()
        if path.parent.name in SPLITS and rel not in listed:
            problems.append(ShardProblem(rel, "on disk but not in the manifest (an entry was removed?)"))
    return problems


def _recount(path: Path, shard: ShardEntry) -> list[ShardProblem]:
    tally = ShardTally()
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                data = tar.extractfile(member)
                if data is not None:
                    tally.add(decode(data.read()))
    except Exception as exc:  # a shard whose bytes match its hash but do not decode was written wrongly
        return [ShardProblem(shard.path, f"does not decode: {type(exc).__name__}: {exc}")]
    found = tally.fields()
    return [
        ShardProblem(shard.path, f"{key}: manifest says {getattr(shard, key)}, the shard holds {value}")
        for key, value in found.items()
        if getattr(shard, key) != value
    ]
