"""`manifest.json`: the index of a shard folder, written last and atomically by the build.

It carries `content_sha256`, the hash of its own canonical content: an edited or damaged manifest (a removed shard
entry, a changed count or E0) is refused wherever it is loaded, instead of silently changing what is trained on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from polyfid.core.atomic import atomic_write_bytes
from polyfid.data_shards.errors import PolyfidDataError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 2  # 2: content_sha256
SPLITS = ("train", "val", "test")


@dataclass
class ShardEntry:
    """One shard: which dataset and split it holds, its checksum and what is inside."""

    path: str  # relative to the shard folder
    dataset: str
    split: str
    chunk_id: str
    sha256: str
    n_bytes: int
    n_samples: int
    n_atoms: int
    energy_counts: dict[str, int] = field(default_factory=dict)
    force_counts: dict[str, int] = field(default_factory=dict)
    elements: list[int] = field(default_factory=list)


@dataclass
class LevelStats:
    """Per level of theory, fitted on the train split.

    e0: per-element reference energies (eV) by least squares, keyed by atomic number as a string (JSON).
    The residual is E - sum_i e0[Z_i]; its per-atom mean/std and the force RMS (eV/A) normalise training.
    e0_rank < len(e0) means the element counts were collinear (e.g. one molecule): e0 is then the minimum-norm
    solution, meaningful only summed over the compositions seen, not as per-element references.
    """

    e0: dict[str, float]
    n_energy: int
    n_forces: int
    residual_per_atom_mean: float
    residual_per_atom_std: float
    force_rms: float | None
    datasets: list[str] = field(default_factory=list)
    e0_rank: int | None = None
    sums: dict | None = None  # the least-squares sufficient statistics: folders merge them exactly (None: older)

    @property
    def e0_determined(self) -> bool:
        return self.e0_rank is None or self.e0_rank >= len(self.e0)


@dataclass
class DatasetInfo:
    """Provenance of one dataset: its source config (as data) and the files read."""

    source: dict
    files: list[dict]  # {"path", "size", "mtime_ns"}
    n_read: int = 0
    n_dropped: int = 0


@dataclass
class Manifest:
    shards: list[ShardEntry]
    datasets: dict[str, DatasetInfo]
    levels: dict[str, LevelStats]
    split: dict[str, float]
    build_fingerprint: str
    version: int = MANIFEST_VERSION
    created_by: str = "polyfid"

    @property
    def level_names(self) -> list[str]:
        """The canonical level axis for batches: sorted level names."""
        return sorted(self.levels)

    @property
    def elements(self) -> list[int]:
        return sorted({z for s in self.shards for z in s.elements})

    def select(self, split: str | None = None, datasets: list[str] | None = None) -> list[ShardEntry]:
        """Shards of one split and/or some datasets, in manifest order."""
        return [
            s
            for s in self.shards
            if (split is None or s.split == split) and (datasets is None or s.dataset in datasets)
        ]

    def to_json(self) -> str:
        content = json.loads(json.dumps(asdict(self)))  # the canonical form a reader hashes
        return json.dumps({**content, "content_sha256": content_hash(content)}, indent=1, sort_keys=True)

    def write(self, folder: Path) -> None:
        atomic_write_bytes(Path(folder) / MANIFEST_NAME, self.to_json().encode())

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        """The folder's manifest, checked. A process parses a given manifest once (every task, stream plan and
        validation stream of a run opens the same folders); hashing the bytes costs a fraction of parsing them.
        Treat the result as read-only."""
        path = Path(folder) / MANIFEST_NAME
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise PolyfidDataError(f"{path}: no manifest (not a shard folder, or its build did not finish)") from exc
        except OSError as exc:
            raise PolyfidDataError(f"{path}: cannot read the manifest: {exc}") from exc
        key = hashlib.sha256(data).hexdigest()
        if key not in _LOADED:
            if len(_LOADED) >= 16:
                _LOADED.pop(next(iter(_LOADED)))
            _LOADED[key] = cls._parse(path, data)
        return _LOADED[key]

    @classmethod
    def _parse(cls, path: Path, data: bytes) -> Manifest:
        try:
            raw = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PolyfidDataError(f"{path}: manifest is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("version") != MANIFEST_VERSION:
            version = raw.get("version") if isinstance(raw, dict) else None
            raise PolyfidDataError(
                f"{path}: manifest version {version!r}, this polyfid reads {MANIFEST_VERSION} "
                "(re-run `polyfid shards build`: unchanged chunks are reused)"
            )
        recorded = raw.pop("content_sha256", None)
        if recorded != content_hash(raw):
            raise PolyfidDataError(
                f"{path}: content_sha256 does not match the manifest's content (edited or corrupted); "
                "re-run `polyfid shards build` to rewrite it"
            )
        try:
            return cls._from_raw(raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise PolyfidDataError(f"{path}: malformed manifest ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _from_raw(cls, raw: dict) -> Manifest:
        return cls(
            shards=[ShardEntry(**s) for s in raw["shards"]],
            datasets={k: DatasetInfo(**v) for k, v in raw["datasets"].items()},
            levels={k: LevelStats(**v) for k, v in raw["levels"].items()},
            split=raw["split"],
            build_fingerprint=raw["build_fingerprint"],
            version=raw["version"],
            created_by=raw.get("created_by", "polyfid"),
        )


_LOADED: dict[str, Manifest] = {}  # Manifest.load's per-process cache, by the file's sha256


def content_hash(content: dict) -> str:
    """sha256 of a manifest's canonical JSON (sorted keys, without `content_sha256`)."""
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
