"""Two real DDP ranks (gloo): each runs a train epoch with one all_reduce per batch; no rank may hang."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from polyfid.data_shards.stream.config import StreamConfig
from polyfid.data_shards.stream.torch_loader import make_dataloader

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, cfg: StreamConfig, port: int, out: Path) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", timeout=timedelta(seconds=30))
    try:
        steps, total = 0, torch.zeros(1)
        # the ranks use different worker counts: the per-rank batch count must not depend on it
        for batch in make_dataloader(cfg, "train", rank, WORLD, num_workers=2 * rank, epoch=0):
            n = torch.tensor([float(batch.n_structures)])
            dist.all_reduce(n)
            total += n
            steps += 1
        (out / f"rank{rank}.json").write_text(json.dumps({"steps": steps, "total": total.item()}))
    finally:
        dist.destroy_process_group()


def test_ranks_get_equal_batch_counts(shards, tmp_path):
    # default epoch length, and a dataset layout where per-rank sample counts are unequal (320 + 29 + 6)
    cfg = StreamConfig(shard_dirs=shards.dirs, max_atoms=48, shuffle_buffer=20)
    ctx = mp.start_processes(
        _rank_main, args=(cfg, _free_port(), tmp_path), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("a rank hung")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    expected = sum(r.n_atoms for r in shards.records["train"].values()) // (48 * WORLD)
    assert [r["steps"] for r in results] == [expected] * WORLD
    assert results[0]["total"] == results[1]["total"]
