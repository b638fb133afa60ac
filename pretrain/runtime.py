"""Where a training process runs: its rank, device, checkpoint store, and the collectives the loop needs."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from polyfid.core.atomic import atomic_write_bytes
from polyfid.pretrain.checkpoints import CheckpointStore, FolderStore, RayStore


def prepare_deepspeed(use_gpu: bool) -> None:
    """Environment DeepSpeed needs before import: the CPU accelerator without a GPU, no shm op compile."""
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed.ops

    # the CPU backend would compile (40-60 s on first use) a shared-memory op used only by inference_all_reduce
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


OWNER_FILE = "owner.json"  # in the run directory: the token of the launch that owns it now
WARNINGS_FILE = "warnings.log"  # in the run directory: rank 0's warnings, one per line, printed by the Ray driver


@contextlib.contextmanager
def relay_warnings(path: Path) -> Iterator[None]:
    """polyfid's warnings and every RuntimeWarning raised here are also appended to `path`: under Ray a worker's
    stderr goes only to Ray's session logs, so the driver prints this file instead (e.g. a tracking server that
    is down)."""
    previous = warnings.showwarning

    def show(message: Any, category: type[Warning], filename: str, lineno: int, *rest: Any) -> None:
        if issubclass(category, RuntimeWarning) or "polyfid" in Path(filename).parts:  # not libraries' chatter
            with open(path, "a") as fh:
                fh.write(f"{category.__name__}: {' '.join(str(message).split())}\n")
        previous(message, category, filename, lineno, *rest)

    path.parent.mkdir(parents=True, exist_ok=True)
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def claim_run(run_dir: Path) -> str:
    """Make this launch the run directory's owner; returns its token. Workers of an earlier launch (a driver
    SIGKILLed while its Ray workers lived on, or a second command on the same run directory) see the new token at
    their next step and stop without writing anything."""
    previous = read_owner(run_dir)
    if previous.get("host") == socket.gethostname() and _alive(previous.get("pid")) and previous["pid"] != os.getpid():
        warnings.warn(
            f"{run_dir}: polyfid (pid {previous['pid']}) was running in this run directory; its workers stop at their "
            "next step and this launch takes over",
            RuntimeWarning,
            stacklevel=2,
        )
    token = uuid.uuid4().hex
    owner = {"token": token, "pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / OWNER_FILE, json.dumps(owner).encode())
    return token


def read_owner(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RunContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    store: CheckpointStore
    launcher: str  # "ray" | "torchrun"
    node: str = ""  # Ray node id, or the host name
    owner: str = ""  # the token of the launch this process belongs to (see `claim_run`); "" = no check

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_ray(cls, use_gpu: bool, owner: str) -> RunContext:
        """Inside a Ray Train worker (the process group is already up)."""
        import ray.train

        ctx = ray.train.get_context()
        rank, local = ctx.get_world_rank(), ctx.get_local_rank()
        device = torch.device("cuda", local) if use_gpu else torch.device("cpu")
        node = ray.get_runtime_context().get_node_id()
        return cls(rank, ctx.get_world_size(), local, device, RayStore(rank), "ray", node, owner)

    @classmethod
    def from_env(cls, use_gpu: bool, run_dir: Path, keep: int, owner: str = "") -> RunContext:
        """Launched by torchrun / the deepspeed launcher / srun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*):
        starts the process group (NCCL on GPU, gloo on CPU); a lone process without those variables is rank 0 of 1."""
        import deepspeed

        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" not in os.environ:
            os.environ["MASTER_PORT"] = str(free_port())
        rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        if use_gpu:
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")
        device = torch.device("cuda", local) if use_gpu else torch.device("cpu")
        store = FolderStore(run_dir / "checkpoints", keep, rank)
        return cls(rank, world, local, device, store, "torchrun", socket.gethostname(), owner)

    def all_reduce(self, tensor: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.Tensor:
        """In-place all-reduce on the context's device (a no-op for one rank)."""
        if self.world_size > 1:
            moved = tensor.to(self.device)
            dist.all_reduce(moved, op=op)
            tensor.copy_(moved.to(tensor.device))
        return tensor

    def any(self, *flags: bool) -> list[bool]:
        """Logical OR of each flag over all ranks (one collective)."""
        t = torch.tensor([float(f) for f in flags])
        return [bool(v) for v in self.all_reduce(t, dist.ReduceOp.MAX).tolist()]

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        """Every rank waits for the others (rank 0 exports and registers last), then leaves the process group:
        left to interpreter exit, gloo's threads can abort a rank that exits first ("terminate called without an
        active exception")."""
        if dist.is_initialized():
            self.barrier()
            dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
