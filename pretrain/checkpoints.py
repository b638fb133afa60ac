"""Where training checkpoints live: Ray Train's checkpoint store, or a folder of the run directory.

Both keep the last K and never expose a half-written checkpoint: Ray registers a checkpoint only once every
worker's files are persisted; the folder store writes `<root>/.tmp-step-N/`, fsyncs it and renames it to
`<root>/step-N/` (a crash mid-write leaves a temp folder that is ignored and cleaned up, and the previous
checkpoint stays the latest). Every rank writes its own files (DeepSpeed ZeRO shards optimiser state).

Every file's sha256 is recorded at save (`polyfid_checksums*.json`) and checked before a resume reads anything:
a corrupted, truncated, missing or stray file is named instead of being loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import torch.distributed as dist

from polyfid.core.atomic import atomic_write_bytes, fsync_dir
from polyfid.core.digest import sha256_file
from polyfid.pretrain.checkpoint_engine import CheckpointError

WriteFn = Callable[[Path], None]  # called on every rank with the folder to write into
META_NAME = "polyfid_checkpoint.json"
CHECKSUMS_PREFIX = "polyfid_checksums"


def _payload(folder: Path) -> list[Path]:
    """The checkpoint's data files (everything but polyfid's own metadata)."""
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.name != META_NAME and not p.name.startswith(CHECKSUMS_PREFIX)
    )  # fmt: skip


def write_checksums(folder: Path, name: str = f"{CHECKSUMS_PREFIX}.json") -> None:
    """Record the sha256 of every data file under `folder` (relative paths) in `folder/name`."""
    digests = {p.relative_to(folder).as_posix(): sha256_file(p) for p in _payload(folder)}
    atomic_write_bytes(folder / name, json.dumps(digests, indent=1, sort_keys=True).encode())


def verify_checksums(folder: Path) -> None:
    """Raise `CheckpointError` naming the first file that is missing, unlisted or differs from its recorded sha256."""
    lists = sorted(folder.glob(f"{CHECKSUMS_PREFIX}*.json"))
    if not lists:
        raise CheckpointError(f"{folder}: no {CHECKSUMS_PREFIX}*.json: not a complete polyfid checkpoint")
    recorded: dict[str, str] = {}
    for path in lists:
        try:
            recorded.update(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable checksum list ({exc})") from None
    for rel, digest in sorted(recorded.items()):
        path = folder / rel
        if not path.is_file():
            raise CheckpointError(f"{path}: missing from the checkpoint (listed in its checksums)")
        if sha256_file(path) != digest:
            raise CheckpointError(f"{path}: sha256 differs from the one recorded at save (corrupted or modified)")
    for path in _payload(folder):
        if path.relative_to(folder).as_posix() not in recorded:
            raise CheckpointError(f"{path}: not written by the save (no recorded checksum); remove it or the step")


class CheckpointStore(Protocol):
    def latest(self) -> contextlib.AbstractContextManager[Path | None]: ...

    def save(self, step: int, write: WriteFn, metrics: dict[str, float]) -> None: ...


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        elif path.is_dir():
            fsync_dir(path)
    fsync_dir(folder)


class FolderStore:
    """Checkpoints as `<root>/step-<N>/` (torchrun / deepspeed launcher; `root` on a filesystem all ranks see)."""

    def __init__(self, root: Path, keep: int, rank: int):
        self.root, self.keep, self.rank = Path(root), keep, rank

    def complete(self) -> list[Path]:
        """Finished checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("step-*") if (p / META_NAME).is_file())

    @contextlib.contextmanager
    def latest(self) -> Iterator[Path | None]:
        done = self.complete()
        if done:
            verify_checksums(done[-1])
        yield done[-1] if done else None

    def save(self, step: int, write: WriteFn, metrics: dict[str, float]) -> None:
        tmp = self.root / f".tmp-step-{step:09d}"
        final = self.root / f"step-{step:09d}"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        write(tmp)
        _barrier()
        if self.rank == 0:
            write_checksums(tmp)
            atomic_write_bytes(tmp / META_NAME, json.dumps({"step": step, "metrics": metrics}).encode())
            _fsync_tree(tmp)
            if final.exists():  # the same step saved again (e.g. a finished run re-run): swap, never delete first
                old = self.root / f".old-step-{step:09d}"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old)
            else:
                os.replace(tmp, final)
            fsync_dir(self.root)
            for stale in self.complete()[: -self.keep]:
                shutil.rmtree(stale)
            for leftover in self.root.glob(".tmp-step-*"):
                shutil.rmtree(leftover, ignore_errors=True)
        _barrier()


class RayStore:
    """Checkpoints reported to Ray Train (`ray.train.report`), which persists them and keeps the last K."""

    def __init__(self, rank: int):
        self.rank = rank

    @contextlib.contextmanager
    def latest(self) -> Iterator[Path | None]:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as folder:
            verify_checksums(Path(folder))
            yield Path(folder)

    def save(self, step: int, write: WriteFn, metrics: dict[str, float]) -> None:
        import ray.train
        from ray.train import Checkpoint

        with tempfile.TemporaryDirectory(prefix=f"polyfid-ckpt-{step}-") as tmp:
            folder = Path(tmp)
            write(folder)
            write_checksums(folder, f"{CHECKSUMS_PREFIX}-rank-{self.rank}.json")  # Ray merges the ranks' folders
            if self.rank == 0:
                (folder / META_NAME).write_text(json.dumps({"step": step, "metrics": metrics}))
            ray.train.report({"step": step, **metrics}, checkpoint=Checkpoint.from_directory(tmp))
