"""The folder checkpoint store: atomic (a crash mid-write leaves the previous one latest), keeps the last K."""

from __future__ import annotations

import pytest

from polyfid.pretrain.checkpoint_engine import CheckpointError
from polyfid.pretrain.checkpoints import FolderStore


def _write(text):
    def write(folder):
        (folder / "weights.txt").write_text(text)

    return write


def test_keeps_last_k_and_latest_is_newest(tmp_path):
    store = FolderStore(tmp_path / "ckpt", keep=2, rank=0)
    for step in (10, 20, 30):
        store.save(step, _write(str(step)), {"loss": 1.0})
    assert [p.name for p in store.complete()] == ["step-000000020", "step-000000030"]
    with store.latest() as folder:
        assert (folder / "weights.txt").read_text() == "30"


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path):
    store = FolderStore(tmp_path / "ckpt", keep=3, rank=0)
    store.save(10, _write("10"), {})

    def crash(folder):
        (folder / "weights.txt").write_text("partial")
        raise KeyboardInterrupt("killed mid-write")

    with pytest.raises(KeyboardInterrupt):
        store.save(20, crash, {})
    with store.latest() as folder:
        assert folder.name == "step-000000010" and (folder / "weights.txt").read_text() == "10"
    store.save(20, _write("20"), {})  # the stray temp folder is replaced and cleaned
    assert not list((tmp_path / "ckpt").glob(".tmp-*"))


def test_same_step_saved_again_replaces_it(tmp_path):
    store = FolderStore(tmp_path / "ckpt", keep=2, rank=0)
    store.save(10, _write("a"), {})
    store.save(10, _write("b"), {})
    with store.latest() as folder:
        assert (folder / "weights.txt").read_text() == "b"
    assert not list((tmp_path / "ckpt").glob(".old-*"))


def test_checksums_name_a_corrupted_missing_or_stray_file(tmp_path):
    store = FolderStore(tmp_path / "ckpt", keep=2, rank=0)
    store.save(10, _write("10"), {})
    folder = store.complete()[-1]
    with store.latest() as latest:
        assert latest == folder
    (folder / "weights.txt").write_text("11")  # same size, other bytes
    with pytest.raises(CheckpointError, match=r"weights.txt: sha256 differs"), store.latest():
        pass
    (folder / "weights.txt").unlink()
    with pytest.raises(CheckpointError, match=r"weights.txt: missing"), store.latest():
        pass
    store.save(10, _write("10"), {})
    (folder / "planted.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"planted.pt: not written by the save"), store.latest():
        pass
