"""Configs as data: every key listed with a meaning, typos fail at load, level names normalised everywhere."""

from __future__ import annotations

import pytest

from polyfid.core.config import describe, validate_config
from polyfid.core.errors import ConfigError
from polyfid.finetune.config import FinetuneConfig
from polyfid.pretrain.config import PretrainConfig

PRETRAIN = {"run_dir": "r", "data": {"shard_dirs": ["s"]}}


@pytest.mark.parametrize("schema", [PretrainConfig, FinetuneConfig])
def test_every_key_has_a_meaning_and_a_default_column(schema):
    rows = list(describe(schema))
    assert len(rows) > 30
    undocumented = [key for key, _, _, meaning in rows if not meaning]
    assert not undocumented, undocumented
    assert all(default for _, _, default, _ in rows)


def test_backbone_settings_are_checked_at_load_against_the_registry():
    for backbone in ("hipnn", "hipnn_ts", "hiphop"):
        cfg = validate_config(
            {**PRETRAIN, "model": {"backbone": backbone, "settings": {"n_features": 8}}}, "c", PretrainConfig
        )
        assert cfg.model.backbone == backbone and cfg.model.settings.n_features == 8
    assert validate_config(PRETRAIN, "c", PretrainConfig).model.backbone == "hipnn"  # the default backbone
    with pytest.raises(ConfigError, match=r"c: invalid config: model\.hipnn\.settings\.n_featurs"):
        validate_config({**PRETRAIN, "model": {"settings": {"n_featurs": 8}}}, "c", PretrainConfig)
    with pytest.raises(ConfigError, match="l_max"):  # a HIP-HOP setting is not a HIP-NN one
        validate_config({**PRETRAIN, "model": {"backbone": "hipnn", "settings": {"l_max": 2}}}, "c", PretrainConfig)
    with pytest.raises(ConfigError, match="nope"):
        validate_config({**PRETRAIN, "model": {"backbone": "nope"}}, "c", PretrainConfig)


def test_unknown_strategy_fails_at_load():
    with pytest.raises(ConfigError, match=r"strategy\.kind.*unknown strategy 'jointt'"):
        validate_config({**PRETRAIN, "strategy": {"kind": "jointt"}}, "c", PretrainConfig)


def test_level_names_are_normalised_in_every_config():
    cfg = validate_config(
        {**PRETRAIN, "data": {"shard_dirs": ["s"], "levels": ["GFN2-xTB", "B3LYP/def2-SVP"]},
         "loss": {"per_level": {"GFN2-XTB": {"forces": 0.5}}}}, "c", PretrainConfig)  # fmt: skip
    assert cfg.data.levels == ["gfn2-xtb", "b3lyp/def2-svp"] and cfg.loss.weights("gfn2-xtb").forces == 0.5
    ft = validate_config(
        {"run_dir": "r", "source": "m.pt", "target": {"shard_dirs": ["s"], "level": "MP2/cc-pVDZ"},
         "auxiliary": [{"level": "GFN2-xTB"}]}, "c", FinetuneConfig)  # fmt: skip
    assert ft.target.level == "mp2/cc-pvdz" and ft.auxiliary[0].level == "gfn2-xtb"
    single = validate_config({**PRETRAIN, "strategy": {"kind": "single", "level": "PBE"}}, "c", PretrainConfig)
    assert single.strategy.level == "pbe"
