"""Shard writes are atomic and reproducible; the atomic-write helper leaves nothing behind on failure."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from polyfid.core.atomic import atomic_open
from polyfid.core.digest import sha256_file
from polyfid.data_shards.codec import decode
from polyfid.data_shards.record import LevelLabels, Record
from polyfid.data_shards.shard_writer import pack_into_shards, write_shard


def _records(n: int) -> list[Record]:
    water = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    return [
        Record(f"w.h5:g:{i}", "water", np.array([8, 1, 1]), water * (1 + 0.01 * i), {"l": LevelLabels(-2079.0 + i)})
        for i in range(n)
    ]


def test_write_shard_is_reproducible_and_readable_as_webdataset_tar(tmp_path: Path):
    a = write_shard(tmp_path / "a" / "s.tar", tmp_path, _records(5))
    b = write_shard(tmp_path / "b" / "s.tar", tmp_path, _records(5))
    assert a.sha256 == b.sha256 == sha256_file(tmp_path / "a" / "s.tar")
    assert (a.n_samples, a.n_atoms, a.energy_counts, a.elements) == (5, 15, {"l": 5}, [1, 8])
    with tarfile.open(tmp_path / "a" / "s.tar") as tar:
        names = tar.getnames()
        assert all(n.endswith(".msgpack") and n.count(".") == 1 for n in names)
        assert decode(tar.extractfile(names[2]).read()).id == "w.h5:g:2"


def test_a_failed_write_leaves_neither_target_nor_temp_file(tmp_path: Path):
    target = tmp_path / "s.tar"
    target.write_bytes(b"previous")

    def exploding():
        yield from _records(2)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_shard(target, tmp_path, exploding())
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tar"]
    with pytest.raises(ZeroDivisionError), atomic_open(tmp_path / "new.bin") as fh:
        fh.write(b"x")
        _ = 1 / 0
    assert not (tmp_path / "new.bin").exists()


def test_pack_into_shards_respects_limits():
    groups = list(pack_into_shards(_records(10), max_bytes=10**9, max_samples=4))
    assert [len(g) for g in groups] == [4, 4, 2]
    assert [len(g) for g in pack_into_shards(_records(3), max_bytes=1, max_samples=100)] == [1, 1, 1]
