"""Write records into WebDataset tar shards (one `<key>.msgpack` member per sample), atomically."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyfid.core.atomic import atomic_open
from polyfid.core.digest import sha256_file
from polyfid.data_shards.codec import SAMPLE_EXTENSION, encode, sample_key
from polyfid.data_shards.grouping import budget_groups
from polyfid.data_shards.record import Record

_TAR_OVERHEAD = 1024  # header + padding per member, upper bound


@dataclass
class ShardInfo:
    """What the manifest records about one shard (path relative to the shard root)."""

    path: str
    sha256: str
    n_bytes: int
    n_samples: int
    n_atoms: int
    energy_counts: dict[str, int] = field(default_factory=dict)
    force_counts: dict[str, int] = field(default_factory=dict)
    elements: list[int] = field(default_factory=list)


@dataclass
class ShardTally:
    """The counts the manifest records about a shard's records: the writer's, and `verify --deep`'s recount."""

    n_samples: int = 0
    n_atoms: int = 0
    energy: Counter[str] = field(default_factory=Counter)
    forces: Counter[str] = field(default_factory=Counter)
    elements: set[int] = field(default_factory=set)

    def add(self, rec: Record) -> None:
        self.n_samples += 1
        self.n_atoms += rec.n_atoms
        self.elements.update(int(z) for z in rec.numbers)
        for level, lab in rec.labels.items():
            self.energy[level] += lab.energy is not None
            self.forces[level] += lab.forces is not None

    def fields(self) -> dict[str, Any]:
        """As `ShardInfo` fields."""
        return {
            "n_samples": self.n_samples,
            "n_atoms": self.n_atoms,
            "energy_counts": {k: v for k, v in sorted(self.energy.items()) if v},
            "force_counts": {k: v for k, v in sorted(self.forces.items()) if v},
            "elements": sorted(self.elements),
        }


def write_shard(path: Path, root: Path, records: Iterable[Record]) -> ShardInfo:
    """Write one shard at `path` atomically; member metadata is fixed so the bytes are reproducible."""
    tally = ShardTally()
    with atomic_open(path) as fh, tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for rec in records:
            payload = encode(rec)
            info = tarfile.TarInfo(f"{sample_key(rec.id)}.{SAMPLE_EXTENSION}")
            info.size, info.mtime, info.mode = len(payload), 0, 0o644
            tar.addfile(info, io.BytesIO(payload))
            tally.add(rec)
    return ShardInfo(
        path=path.relative_to(root).as_posix(), sha256=sha256_file(path), n_bytes=path.stat().st_size, **tally.fields()
    )


def pack_into_shards(records: Iterable[Record], max_bytes: int, max_samples: int) -> Iterator[list[Record]]:
    """Group records into lists that each fit one shard (by encoded size estimate and count)."""
    return budget_groups(records, _estimate_bytes, max_bytes, max_samples)


def _estimate_bytes(rec: Record) -> int:
    n = rec.n_atoms
    per_level = sum(9 + (12 * n if lab.forces is not None else 0) + 16 for lab in rec.labels.values())
    return _TAR_OVERHEAD + 64 + len(rec.id) + 25 * n + per_level
