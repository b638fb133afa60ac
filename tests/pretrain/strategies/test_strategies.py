"""Strategies as objects: each plans heads and tasks from the shards; a new one is one subclass; the trainer holds
no strategy branches."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyfid.core.config import validate_config
from polyfid.core.errors import ConfigError
from polyfid.data_shards.stream.catalog import ShardCatalog
from polyfid.pretrain import trainer
from polyfid.pretrain.config import PretrainConfig
from polyfid.pretrain.strategies import STRATEGIES, Strategy, build_strategy


def _config(shards: Path, **sections) -> PretrainConfig:
    raw = {"run_dir": "r", "data": {"shard_dirs": [str(shards)], "datasets": ["demo_md_xtb", "demo_dft_subset"]}}
    return validate_config({**raw, **sections}, "test", PretrainConfig)


def test_each_strategy_plans_its_heads_and_tasks(demo_shards):
    catalog = ShardCatalog.open([demo_shards])
    single = build_strategy(_config(demo_shards, strategy={"kind": "single", "level": "B3LYP/def2-SVP"}), catalog)
    assert single.levels == ["b3lyp/def2-svp"] and single.tasks == {"b3lyp/def2-svp": ["demo_dft_subset"]}
    multi = build_strategy(_config(demo_shards, strategy={"kind": "multifidelity"}), catalog)
    assert set(multi.levels) == {"gfn2-xtb", "b3lyp/def2-svp", "mp2/cc-pvdz", "ccsd(t)/cc-pvdz"}
    assert multi.tasks == {"all": ["demo_md_xtb", "demo_dft_subset"]}
    reptile = {"kind": "reptile", "reptile": {"task_kind": "level", "inner_steps": 2}}
    levels = {"levels": ["gfn2-xtb", "b3lyp/def2-svp"]}
    by_level = build_strategy(
        _config(demo_shards, strategy=reptile, data={"shard_dirs": [str(demo_shards)], **levels}), catalog
    )
    # the torsion scan is all test (split by group), so it is no training task
    assert by_level.tasks == {"gfn2-xtb": ["demo_dft_subset", "demo_md_xtb", "demo_target_ethanol"],
                              "b3lyp/def2-svp": ["demo_dft_subset"]}  # fmt: skip
    assert by_level.at_boundary(4) and not by_level.at_boundary(3)
    weighted = {**reptile, "reptile": {**reptile["reptile"], "task_ratios": {"GFN2-xTB": 1, "b3lyp/def2-svp": 3}}}
    plan = build_strategy(_config(demo_shards, strategy=weighted, data={"shard_dirs": [str(demo_shards)], **levels}),
                          catalog)  # fmt: skip
    assert plan.task_probs == {"gfn2-xtb": 0.25, "b3lyp/def2-svp": 0.75}


def test_reptile_draws_tasks_with_the_runs_data_ratios(demo_shards):
    """Without task_ratios, dataset tasks follow data.ratios (the demo's 1:1), not dataset size: the small B3LYP
    subset, the only dataset labelled at that level, is then the task of half the outer steps, not of ~5%."""
    catalog = ShardCatalog.open([demo_shards])
    reptile = {"kind": "reptile", "reptile": {"task_kind": "dataset", "inner_steps": 5}}
    data = {"shard_dirs": [str(demo_shards)], "datasets": ["demo_md_xtb", "demo_dft_subset"]}
    by_size = build_strategy(_config(demo_shards, strategy=reptile, data=data), catalog)
    assert by_size.task_probs["demo_dft_subset"] < 0.1
    mixed = {**data, "ratios": {"demo_md_xtb": 1.0, "demo_dft_subset": 1.0}}
    plan = build_strategy(_config(demo_shards, strategy=reptile, data=mixed), catalog)
    assert plan.task_probs == {"demo_dft_subset": 0.5, "demo_md_xtb": 0.5}
    by_level = {**reptile, "reptile": {"task_kind": "level", "inner_steps": 5}}
    two = {**mixed, "levels": ["gfn2-xtb", "b3lyp/def2-svp"]}
    levels = build_strategy(_config(demo_shards, strategy=by_level, data=two), catalog)
    assert levels.task_probs == {"b3lyp/def2-svp": 1 / 3, "gfn2-xtb": 2 / 3}  # xTB labels both datasets


def test_strategy_rules_are_config_errors(demo_shards):
    with pytest.raises(ConfigError, match=r"needs strategy\.level"):
        _config(demo_shards, strategy={"kind": "single"})
    with pytest.raises(ConfigError, match="for kind 'single' only"):
        _config(demo_shards, strategy={"kind": "multifidelity", "level": "gfn2-xtb"})
    with pytest.raises(ConfigError, match=r"multiple of strategy\.reptile\.inner_steps"):
        _config(demo_shards, strategy={"kind": "reptile", "reptile": {"inner_steps": 3}})


def test_a_new_strategy_is_one_subclass(demo_shards):
    class EveryOtherDataset(Strategy):
        kind = "test_every_other"

        def plan_tasks(self, cfg, catalog, levels, datasets):
            return {"half": datasets[::2]}

    try:
        cfg = _config(demo_shards, strategy={"kind": "test_every_other"})
        plan = build_strategy(cfg, ShardCatalog.open([demo_shards]))
        assert isinstance(plan, EveryOtherDataset) and plan.tasks == {"half": ["demo_md_xtb"]}
    finally:
        del STRATEGIES["test_every_other"]


def test_the_trainer_holds_no_strategy_branches():
    source = Path(trainer.__file__).read_text()
    for kind in STRATEGIES:
        assert f'"{kind}"' not in source and f"_{kind}" not in source, kind
