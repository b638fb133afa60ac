"""Chunk files: round trip, and anything unfinished or corrupted reads as missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from polyfid.data_shards.corpus.chunks import content_key, load_chunk, save_chunk


def test_round_trip_with_strings(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    save_chunk(path, {"energy": np.arange(3.0), "error": ["", "timeout after 5 s", ""]})
    data = load_chunk(path)
    np.testing.assert_array_equal(data["energy"], np.arange(3.0))
    assert list(data["error"]) == ["", "timeout after 5 s", ""]


def test_unfinished_or_corrupted_chunks_read_as_missing(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    assert load_chunk(path) is None
    save_chunk(path, {"energy": np.arange(3.0)})
    raw = bytearray(path.read_bytes())
    raw[-30] ^= 1
    path.write_bytes(bytes(raw))
    assert load_chunk(path) is None
    save_chunk(path, {"energy": np.arange(3.0)})
    path.with_name("c.npz.sha256").unlink()  # killed between the data and its digest
    assert load_chunk(path) is None


def test_content_keys_follow_the_content() -> None:
    a = content_key("hf", [1, 2], np.zeros(3))
    assert a == content_key("hf", [1, 2], np.zeros(3))
    assert a != content_key("hf", [1, 3], np.zeros(3))
    assert a != content_key("hf", [1, 2], np.ones(3))
