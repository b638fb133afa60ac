"""PretrainConfig: YAML + overlays + --set overrides, defaults, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from polyfid.core.config import apply_overrides
from polyfid.core.errors import ConfigError
from polyfid.pretrain.config import load_config


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def base(tmp_path):
    return _write(tmp_path / "base.yaml", {"run_dir": "runs/x", "data": {"shard_dirs": ["shards"]}})


def test_paths_resolve_against_the_file_and_defaults_fill_in(base, tmp_path):
    cfg = load_config(base)
    assert cfg.run_dir == (tmp_path / "runs/x").resolve()
    assert cfg.data.shard_dirs == [tmp_path / "shards"]
    assert cfg.strategy.kind == "multifidelity" and cfg.deepspeed.zero_stage == 1


def test_overlays_merge_and_set_overrides_win(base, tmp_path):
    overlay = _write(tmp_path / "zero2.yaml", {"deepspeed": {"zero_stage": 2}, "optim": {"lr": 1e-4}})
    cfg = load_config([base, overlay], ["optim.lr=3e-4", "data.levels=[gfn2-xtb]", "strategy.kind=reptile"])
    assert cfg.deepspeed.zero_stage == 2 and cfg.optim.lr == 3e-4
    assert cfg.data.levels == ["gfn2-xtb"] and cfg.strategy.kind == "reptile"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=-1", "optim.lr"),
        ("deepspeed.zero_stage=3", "deepspeed.zero_stage"),
        ("strategy.kind=single", "strategy.level"),
        ("optim.bogus=1", "optim.bogus"),
        ("strategy.kind=reptile", "multiple of strategy.reptile.inner_steps"),
    ],
)
def test_bad_values_name_the_file_and_key(base, override, message):
    extra = ["schedule.val_every=7"] if "reptile" in override else []
    with pytest.raises(ConfigError, match=r"base\.yaml") as err:
        load_config(base, [override, *extra])
    assert message in str(err.value)


def test_bad_override_syntax_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1,")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_shipped_configs_validate():
    configs = Path(__file__).resolve().parents[2] / "pretrain" / "configs"
    cfg = load_config(configs / "demo.yaml")
    assert cfg.strategy.kind == "multifidelity" and cfg.scaling.num_workers == 2
    foundation = load_config(configs / "foundation.yaml")
    assert set(foundation.data.ratios) == set(foundation.data.datasets)  # every corpus tier drawn explicitly
    reptile = load_config([configs / "foundation.yaml", configs / "foundation_reptile.yaml"])
    assert reptile.strategy.reptile.task_kind == "level" and set(reptile.strategy.reptile.task_ratios) == set(
        reptile.data.levels
    )
    assert reptile.run_dir != foundation.run_dir and reptile.model == foundation.model
    low = load_config([configs / "foundation.yaml", configs / "foundation_lowlevel.yaml"])
    assert low.data.levels == ["gfn2-xtb"] and low.strategy.kind == "single" and low.model == foundation.model


def test_cli_reports_a_bad_config_and_exits_2(base, capsys):
    from polyfid.cli import main

    assert main(["pretrain", str(base), "--set", "optim.max_steps=0"]) == 2
    err = capsys.readouterr().err
    assert "base.yaml" in err and "optim.max_steps" in err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.levels=[wb97x/6-31g*]", "not in the shards"),
        ("data.datasets=[nope]", "no train split"),
        ("strategy.level=ccsd(t)/cc-pvdz", "none of the datasets"),
    ],
)
def test_config_checked_against_the_shards(demo_shards, tmp_path, override, message):
    from polyfid.data_shards.stream.catalog import ShardCatalog
    from polyfid.pretrain.strategies import build_strategy

    path = _write(tmp_path / "c.yaml", {"run_dir": "r", "data": {"shard_dirs": [str(demo_shards)]}})
    extra = ["strategy.kind=single", "data.datasets=[demo_md_xtb]"] if "strategy.level" in override else []
    cfg = load_config(path, [*extra, override])
    with pytest.raises(ConfigError, match=message):
        build_strategy(cfg, ShardCatalog.open(cfg.data.shard_dirs))
