from __future__ import annotations

import json
from pathlib import Path

import pytest

from polyfid.data_shards.errors import PolyfidDataError
from polyfid.data_shards.manifest import MANIFEST_NAME, Manifest


def test_missing_broken_and_future_manifests_give_clear_errors(tmp_path: Path):
    with pytest.raises(PolyfidDataError, match="no manifest"):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(PolyfidDataError, match="not valid JSON"):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"version": 99}))
    with pytest.raises(PolyfidDataError, match="version 99"):
        Manifest.load(tmp_path)


def test_write_load_round_trip(tmp_path: Path):
    m = Manifest(shards=[], datasets={}, levels={}, split={"val": 0.1, "test": 0.1}, build_fingerprint="f")
    m.write(tmp_path)
    assert Manifest.load(tmp_path) == m
