"""What the shards hold (levels, datasets, E0, lineage hash) and which tasks and heads a config trains on them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from data_shards.manifest import MANIFEST_NAME, LevelStats, Manifest
from pretrain.config import ConfigError, PretrainConfig


@dataclass(frozen=True)
class ShardInfo:
    """Facts from the manifests of the configured shard folders."""

    level_names: list[str]  # the batch level axis (sorted union)
    elements: list[int]
    level_stats: dict[str, LevelStats]  # E0 etc. per level (from the folder with most energies of it)
    samples: dict[tuple[str, str], int]  # (dataset, split) -> structures
    labelled: dict[str, set[str]]  # level -> datasets with train labels (energies or forces) of it
    fingerprint: str  # sha256 over the manifests: the data lineage of a model

    @classmethod
    def open(cls, shard_dirs: list[Path]) -> ShardInfo:
        manifests = [Manifest.load(d) for d in shard_dirs]
        stats: dict[str, LevelStats] = {}
        samples: dict[tuple[str, str], int] = {}
        labelled: dict[str, set[str]] = {}
        for m in manifests:
            for name, st in m.levels.items():
                if name not in stats or st.n_energy > stats[name].n_energy:
                    stats[name] = st
            for s in m.shards:
                samples[(s.dataset, s.split)] = samples.get((s.dataset, s.split), 0) + s.n_samples
                if s.split == "train":
                    for level, n in {**s.energy_counts, **s.force_counts}.items():
                        if n:
                            labelled.setdefault(level, set()).add(s.dataset)
        digest = hashlib.sha256()
        for d in sorted(Path(p).resolve() for p in shard_dirs):
            digest.update((d / MANIFEST_NAME).read_bytes())
        return cls(
            level_names=sorted({n for m in manifests for n in m.level_names}),
            elements=sorted({z for m in manifests for z in m.elements}),
            level_stats=stats,
            samples=samples,
            labelled=labelled,
            fingerprint=digest.hexdigest(),
        )

    def datasets(self, split: str = "train") -> list[str]:
        return sorted(d for (d, s), n in self.samples.items() if s == split and n > 0)

    def check_levels(self, levels: list[str]) -> None:
        unknown = sorted(set(levels) - set(self.level_names))
        if unknown:
            raise ConfigError(f"levels {unknown} are not in the shards (levels there: {self.level_names})")
        unlabelled = [lv for lv in levels if not self.labelled.get(lv)]
        if unlabelled:
            raise ConfigError(f"levels {unlabelled} have no train labels in the shards")


def plan_tasks(cfg: PretrainConfig, info: ShardInfo) -> tuple[list[str], dict[str, list[str]]]:
    """(levels trained = the model's heads, task name -> its datasets), checked against the shards.

    `single`: one task, the datasets labelled at its level; `multifidelity`: one task, every dataset labelled at a
    trained level; `reptile`: one task per such dataset, or per level (the datasets labelled at it)."""
    kind = cfg.strategy.kind
    levels = [cfg.strategy.level] if kind == "single" else list(cfg.data.levels or info.level_names)
    info.check_levels(levels)
    train = info.datasets("train")
    chosen = cfg.data.datasets or train
    missing = sorted(set(chosen) - set(train))
    if missing:
        raise ConfigError(f"data.datasets {missing} have no train split in the shards (datasets there: {train})")
    labelled = set().union(*(info.labelled[lv] for lv in levels))
    datasets = [d for d in chosen if d in labelled]
    if not datasets:
        raise ConfigError(f"none of the datasets {chosen} has train labels at the trained levels {levels}")
    if kind == "single":
        return levels, {levels[0]: [d for d in datasets if d in info.labelled[levels[0]]]}
    if kind == "multifidelity":
        return levels, {"all": datasets}
    if cfg.strategy.reptile.task_kind == "dataset":
        return levels, {d: [d] for d in datasets}
    return levels, {lv: [d for d in datasets if d in info.labelled[lv]] for lv in levels}
