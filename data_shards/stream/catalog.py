"""The shards to stream: manifests of one or more shard folders, one split, some datasets."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from data_shards.errors import PolyfidDataError, ShardCorruptedError
from data_shards.manifest import Manifest


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
class ShardCatalog:
    """Selected shards per dataset, plus the batch axes shared by every split and selection.

    `level_names`: sorted union of the folders' level axes. `dataset_names`: sorted names of every dataset
    in the folders. Both ignore the split and dataset selection, so train and eval batches index alike.
    """

    level_names: list[str]
    dataset_names: list[str]
    shards: dict[str, list[ShardRef]]  # selected dataset -> its shards of the split, manifest order

    @classmethod
    def open(cls, shard_dirs: Sequence[str | Path], split: str, datasets: Sequence[str] | None = None) -> ShardCatalog:
        """Load the manifests; error on unknown datasets, a dataset in two folders or an off-axis level."""
        manifests = {Path(d).resolve(): Manifest.load(d) for d in shard_dirs}
        if len(manifests) != len(shard_dirs):
            raise PolyfidDataError(f"a shard folder is listed twice: {[str(d) for d in shard_dirs]}")
        levels = sorted({name for m in manifests.values() for name in m.level_names})
        home: dict[str, Path] = {}
        for folder, m in manifests.items():
            for name in {*m.datasets, *(s.dataset for s in m.shards)}:
                if name in home:
                    raise PolyfidDataError(f"dataset {name!r} is in two shard folders: {home[name]} and {folder}")
                home[name] = folder
        unknown = sorted(set(datasets or ()) - set(home))
        if unknown:
            raise PolyfidDataError(f"unknown datasets {unknown}; the shard folders hold {sorted(home)}")
        shards: dict[str, list[ShardRef]] = {}
        for folder, m in manifests.items():
            for entry in m.select(split, None if datasets is None else list(datasets)):
                off_axis = sorted({*entry.energy_counts, *entry.force_counts} - set(levels))
                if off_axis:
                    raise PolyfidDataError(
                        f"{folder / entry.path}: levels {off_axis} are not in the level axis {levels}"
                    )
                if entry.n_samples > 0:
                    ref = ShardRef(str(folder / entry.path), entry.n_samples, entry.n_atoms, entry.sha256)
                    shards.setdefault(entry.dataset, []).append(ref)
        empty = sorted(set(datasets or ()) - set(shards))
        if empty or not shards:
            raise PolyfidDataError(f"no {split!r} samples for datasets {empty or datasets or sorted(home)}")
        return cls(level_names=levels, dataset_names=sorted(home), shards=dict(sorted(shards.items())))

    def n_samples(self, dataset: str) -> int:
        return sum(s.n_samples for s in self.shards[dataset])

    @property
    def n_atoms(self) -> int:
        """Atoms in every selected shard."""
        return sum(s.n_atoms for refs in self.shards.values() for s in refs)
