"""`polyfid shards verify`: re-hash every shard against the manifest and name any missing or corrupted one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from polyfid.core.digest import sha256_file
from polyfid.data_shards.manifest import Manifest


@dataclass
class ShardProblem:
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def verify_shards(folder: str | Path, progress: bool = True) -> list[ShardProblem]:
    """Problems found (empty when every shard exists with the recorded size and sha256)."""
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
    return problems
