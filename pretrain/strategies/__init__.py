"""Training strategies: what the shared training loop trains on, step by step.

A strategy decides which heads a run trains and its tasks (name -> datasets), which task each optimiser step
draws from, which heads a task's loss weighs, and what happens around steps (Reptile's outer update). The trainer
holds no strategy branches. A new strategy is one new module in this package defining a `Strategy` subclass with a
`kind`: it registers itself and `strategy.kind: <kind>` selects it.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, ClassVar

from polyfid.core.errors import ConfigError

if TYPE_CHECKING:
    from polyfid.data_shards.stream.catalog import ShardCatalog
    from polyfid.pretrain.config import PretrainConfig
    from polyfid.pretrain.losses import HeadTargets

STRATEGIES: dict[str, type[Strategy]] = {}


class Strategy:
    """Defaults: one task, every step on it, every head weighed, nothing around steps."""

    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        STRATEGIES[cls.kind] = cls

    def __init__(self, cfg: PretrainConfig, catalog: ShardCatalog):
        self.cfg = cfg
        self.levels = self.plan_levels(cfg, catalog)
        catalog.check_levels(self.levels)
        self.tasks = self.plan_tasks(cfg, catalog, self.levels, trained_datasets(cfg, catalog, self.levels))

    # ----- config and planning -----
    @classmethod
    def check_config(cls, cfg: PretrainConfig) -> None:
        """Strategy-specific rules on the whole config (raise ValueError: it becomes a config error)."""
        if cfg.strategy.level:
            raise ValueError(f"strategy.level is for kind 'single' only (kind is {cls.kind!r}); use data.levels")

    def plan_levels(self, cfg: PretrainConfig, catalog: ShardCatalog) -> list[str]:
        """The levels trained, one head each."""
        return list(cfg.data.levels or catalog.level_names)

    def plan_tasks(
        self, cfg: PretrainConfig, catalog: ShardCatalog, levels: list[str], datasets: list[str]
    ) -> dict[str, list[str]]:
        """Task name -> its datasets (every dataset labelled at a trained level: `datasets`)."""
        return {"all": datasets}

    # ----- the loop -----
    def begin_step(self, step: int, engine: Any) -> str:
        """Called before optimiser step `step`; returns the task it trains on."""
        return next(iter(self.tasks))

    def end_step(self, step: int, engine: Any) -> None:
        """Called after optimiser step `step` - 1 finished (`step` steps done)."""

    def at_boundary(self, step: int) -> bool:
        """Whether validation, checkpoints and stops may happen after `step` steps."""
        return True

    def targets(self, task: str, targets: list[HeadTargets]) -> list[HeadTargets]:
        """The heads (and loss weights) a task's loss takes."""
        return targets

    def metrics(self, step: int) -> dict[str, float]:
        """Extra train metrics of the strategy at `step`."""
        return {}


def trained_datasets(cfg: PretrainConfig, catalog: ShardCatalog, levels: list[str]) -> list[str]:
    """The configured datasets (default: all with a train split) that have train labels at a trained level."""
    train = catalog.datasets("train")
    chosen = cfg.data.datasets or train
    missing = sorted(set(chosen) - set(train))
    if missing:
        raise ConfigError(f"data.datasets {missing} have no train split in the shards (datasets there: {train})")
    labelled = set().union(*(catalog.labelled[lv] for lv in levels))
    datasets = [d for d in chosen if d in labelled]
    if not datasets:
        raise ConfigError(f"none of the datasets {chosen} has train labels at the trained levels {levels}")
    return datasets


def build_strategy(cfg: PretrainConfig, catalog: ShardCatalog) -> Strategy:
    """The configured strategy planned against the shards (config errors name what is missing)."""
    return STRATEGIES[cfg.strategy.kind](cfg, catalog)


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
