from __future__ import annotations

import pytest
from pydantic import ValidationError

from polyfid.data_shards.errors import PolyfidDataError
from polyfid.data_shards.stream.catalog import ShardCatalog
from polyfid.data_shards.stream.config import StreamConfig


def test_axes_span_all_folders_whatever_the_selection(shards):
    catalog = ShardCatalog.open(shards.dirs)
    full, one = catalog.select("train"), catalog.select("val", ["molecules"])
    assert catalog.level_names == shards.level_names and catalog.dataset_names == shards.dataset_names
    assert list(full.shards) == shards.dataset_names and list(one.shards) == ["molecules"]
    assert [len(full.shards[d]) for d in full.shards] == [8, 4, 3]
    assert full.n_samples("ethanol_ccsdt") == 320
    assert full.n_atoms == sum(r.n_atoms for r in shards.records["train"].values())


def test_catalog_errors(shards, tmp_path):
    with pytest.raises(PolyfidDataError, match="unknown datasets \\['nope'\\]"):
        ShardCatalog.open(shards.dirs).select("train", ["nope"])
    with pytest.raises(PolyfidDataError, match="no 'test' samples"):
        ShardCatalog.open(shards.dirs).select("test")
    with pytest.raises(PolyfidDataError, match="listed twice"):
        ShardCatalog.open([shards.dirs[0], shards.dirs[0]])
    with pytest.raises(PolyfidDataError, match="no manifest"):
        ShardCatalog.open([tmp_path])


def test_training_facts(shards):
    catalog = ShardCatalog.open(shards.dirs)
    assert catalog.elements == [1, 6, 7, 8] and catalog.datasets("val") == shards.dataset_names
    assert catalog.labelled["ccsd(t)/cc-pvdz"] == {"ethanol_ccsdt"}
    assert catalog.labelled["b3lyp/def2-svp"] == {"molecules"}
    assert catalog.samples[("ethanol_mf", "train")] == 29 and len(catalog.fingerprint) == 64


def test_config_validation(shards):
    with pytest.raises(ValidationError, match="not both"):
        StreamConfig(shard_dirs=shards.dirs, max_atoms=10, ratios={"molecules": 1}, temperature=2)
    with pytest.raises(ValidationError, match="not all 0"):
        StreamConfig(shard_dirs=shards.dirs, max_atoms=10, ratios={"molecules": 0})
    with pytest.raises(ValidationError):
        StreamConfig(shard_dirs=shards.dirs, max_atoms=0)
    with pytest.raises(ValidationError):
        StreamConfig(shard_dirs=[], max_atoms=10)
