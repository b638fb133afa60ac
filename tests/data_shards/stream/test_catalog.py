from __future__ import annotations

import pytest
from polyfid.data_shards.errors import PolyfidDataError
from polyfid.data_shards.stream.catalog import ShardCatalog
from polyfid.data_shards.stream.config import StreamConfig
from pydantic import ValidationError

pytestmark = pytest.mark.shared


def test_axes_span_all_folders_whatever_the_selection(shards):
    full = ShardCatalog.open(shards.dirs, "train")
    one = ShardCatalog.open(shards.dirs, "val", ["ani1"])
    assert full.level_names == one.level_names == shards.level_names
    assert full.dataset_names == one.dataset_names == shards.dataset_names
    assert list(full.shards) == shards.dataset_names and list(one.shards) == ["ani1"]
    assert [len(full.shards[d]) for d in full.shards] == [3, 8, 4]
    assert full.n_samples("ethanol_ccsdt") == 800
    assert full.n_atoms == sum(r.n_atoms for r in shards.records["train"].values())


def test_catalog_errors(shards, tmp_path):
    with pytest.raises(PolyfidDataError, match="unknown datasets \\['nope'\\]"):
        ShardCatalog.open(shards.dirs, "train", ["nope"])
    with pytest.raises(PolyfidDataError, match="no 'test' samples"):
        ShardCatalog.open(shards.dirs, "test")
    with pytest.raises(PolyfidDataError, match="listed twice"):
        ShardCatalog.open([shards.dirs[0], shards.dirs[0]], "train")
    with pytest.raises(PolyfidDataError, match="no manifest"):
        ShardCatalog.open([tmp_path], "train")


def test_config_validation(shards):
    with pytest.raises(ValidationError, match="not both"):
        StreamConfig(shard_dirs=shards.dirs, max_atoms=10, ratios={"ani1": 1}, temperature=2)
    with pytest.raises(ValidationError, match="not all 0"):
        StreamConfig(shard_dirs=shards.dirs, max_atoms=10, ratios={"ani1": 0})
    with pytest.raises(ValidationError):
        StreamConfig(shard_dirs=shards.dirs, max_atoms=0)
    with pytest.raises(ValidationError):
        StreamConfig(shard_dirs=[], max_atoms=10)
