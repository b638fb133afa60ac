"""`single`: one level, one head, the datasets labelled at it (the single-fidelity baseline)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyfid.pretrain.strategies import Strategy

if TYPE_CHECKING:
    from polyfid.data_shards.stream.catalog import ShardCatalog
    from polyfid.pretrain.config import PretrainConfig


class Single(Strategy):
    kind = "single"

    @classmethod
    def check_config(cls, cfg: PretrainConfig) -> None:
        if not cfg.strategy.level:
            raise ValueError("strategy.kind 'single' needs strategy.level (the level of theory to train)")

    def plan_levels(self, cfg: PretrainConfig, catalog: ShardCatalog) -> list[str]:
        return [cfg.strategy.level]

    def plan_tasks(
        self, cfg: PretrainConfig, catalog: ShardCatalog, levels: list[str], datasets: list[str]
    ) -> dict[str, list[str]]:
        return {levels[0]: [d for d in datasets if d in catalog.labelled[levels[0]]]}
