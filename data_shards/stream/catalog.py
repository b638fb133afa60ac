"""The shards to stream: what the manifests of one or more shard folders hold, and selections of one split."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from polyfid.core.errors import ConfigError
from polyfid.data_shards.errors import PolyfidDataError, ShardCorruptedError
from polyfid.data_shards.manifest import MANIFEST_NAME, LevelStats, Manifest
from polyfid.data_shards.reference_energies import merge_level_stats


@dataclass(frozen=True)
class ShardRef:
    """One shard file (absolute path), its sample/atom counts and sha256 from the manifest."""

    path: str
    n_samples: int
    n_atoms: int
    sha256: str


def check_sha256(shard: ShardRef, data: bytes) -> None:
    """Raise ShardCorruptedError naming the shard unless `data` has the manifest's checksum."""
    if hashlib.sha256(data).hexdigest() != shard.sha256:
        raise ShardCorruptedError(
            f"{shard.path}: sha256 differs from the manifest (corrupted or truncated shard; "
            "`polyfid shards verify` lists every bad shard, `polyfid shards build` rewrites them)"
        )


@dataclass(frozen=True)
class ShardSelection:
    """The shards of one split and some datasets: selected dataset -> its shards, in manifest order."""

    split: str
    shards: dict[str, list[ShardRef]]

    def n_samples(self, dataset: str) -> int:
        return sum(s.n_samples for s in self.shards[dataset])

    @property
    def n_atoms(self) -> int:
        """Atoms in every selected shard."""
        return sum(s.n_atoms for refs in self.shards.values() for s in refs)


@dataclass(frozen=True)
class ShardCatalog:
    """What one or more shard folders hold, from their manifests: the batch axes shared by every split and
    selection (`level_names`: sorted union of the folders' levels; `dataset_names`: every dataset), the facts
    training plans from (elements, per-level E0 statistics, samples per dataset and split, which datasets carry
    train labels of each level) and `fingerprint`, the sha256 over the manifests: the data lineage of a model."""

    folders: dict[Path, Manifest]
    level_names: list[str]
    dataset_names: list[str]
    elements: list[int]
    level_stats: dict[str, LevelStats]  # per level, merged over every folder holding it
    samples: dict[tuple[str, str], int]  # (dataset, split) -> structures
    labelled: dict[str, set[str]]  # level -> datasets with train labels (energies or forces) of it
    fingerprint: str

    @classmethod
    def open(cls, shard_dirs: Sequence[str | Path]) -> ShardCatalog:
        """Load the manifests; error on a folder listed twice or a dataset in two folders."""
        manifests = {Path(d).resolve(): Manifest.load(d) for d in shard_dirs}
        if len(manifests) != len(shard_dirs):
            raise PolyfidDataError(f"a shard folder is listed twice: {[str(d) for d in shard_dirs]}")
        home: dict[str, Path] = {}
        stats: dict[str, list[LevelStats]] = {}
        samples: dict[tuple[str, str], int] = {}
        labelled: dict[str, set[str]] = {}
        for folder, m in manifests.items():
            for name in {*m.datasets, *(s.dataset for s in m.shards)}:
                if name in home:
                    raise PolyfidDataError(f"dataset {name!r} is in two shard folders: {home[name]} and {folder}")
                home[name] = folder
            for name, st in m.levels.items():
                stats.setdefault(name, []).append(st)
            for s in m.shards:
                samples[(s.dataset, s.split)] = samples.get((s.dataset, s.split), 0) + s.n_samples
                if s.split == "train":
                    for level, n in {**s.energy_counts, **s.force_counts}.items():
                        if n:
                            labelled.setdefault(level, set()).add(s.dataset)
        digest = hashlib.sha256()
        for folder in sorted(manifests):
            digest.update((folder / MANIFEST_NAME).read_bytes())
        return cls(
            folders=manifests,
            level_names=sorted({n for m in manifests.values() for n in m.level_names}),
            dataset_names=sorted(home),
            elements=sorted({z for m in manifests.values() for z in m.elements}),
            level_stats={name: merge_level_stats(parts) for name, parts in stats.items()},
            samples=samples,
            labelled=labelled,
            fingerprint=digest.hexdigest(),
        )

    def datasets(self, split: str = "train") -> list[str]:
        """Datasets with samples in `split`."""
        return sorted(d for (d, s), n in self.samples.items() if s == split and n > 0)

    def check_levels(self, levels: list[str]) -> None:
        """Error unless every level is in the shards with train labels."""
        unknown = sorted(set(levels) - set(self.level_names))
        if unknown:
            raise ConfigError(f"levels {unknown} are not in the shards (levels there: {self.level_names})")
        unlabelled = [lv for lv in levels if not self.labelled.get(lv)]
        if unlabelled:
            raise ConfigError(f"levels {unlabelled} have no train labels in the shards")

    def select(self, split: str, datasets: Sequence[str] | None = None) -> ShardSelection:
        """The shards of `split` for `datasets` (None: all); error on unknown or empty datasets, or an off-axis
        level."""
        unknown = sorted(set(datasets or ()) - set(self.dataset_names))
        if unknown:
            raise PolyfidDataError(f"unknown datasets {unknown}; the shard folders hold {self.dataset_names}")
        shards: dict[str, list[ShardRef]] = {}
        for folder, m in self.folders.items():
            for entry in m.select(split, None if datasets is None else list(datasets)):
                off_axis = sorted({*entry.energy_counts, *entry.force_counts} - set(self.level_names))
                if off_axis:
                    raise PolyfidDataError(
                        f"{folder / entry.path}: levels {off_axis} are not in the level axis {self.level_names}"
                    )
                if entry.n_samples > 0:
                    ref = ShardRef(str(folder / entry.path), entry.n_samples, entry.n_atoms, entry.sha256)
                    shards.setdefault(entry.dataset, []).append(ref)
        empty = sorted(set(datasets or ()) - set(shards))
        if empty or not shards:
            raise PolyfidDataError(f"no {split!r} samples for datasets {empty or datasets or self.dataset_names}")
        return ShardSelection(split, dict(sorted(shards.items())))
