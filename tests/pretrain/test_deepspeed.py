"""DeepSpeed ZeRO-1/2 force training of a PolyfidModel on CPU: 2 spawned ranks (gloo), real demo-corpus batches.

Both stages run in one pair of spawned processes (process start + imports dominate: ~10 s). Forces come from
inside the model's forward (double backward through the engine works for ZeRO 0-2; ZeRO-3 does not support
force training, see /work/shared/notes/stack-on-cpu.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.pretrain.runs import spawn_ranks

STAGES = (1, 2)
N_STEPS = 4
WORLD = 2
TIMEOUT_S = 150


class EnergyForceLoss(nn.Module):
    """engine(batch) -> loss: the PolyfidModel forward takes (batch, heads) and returns a ModelOutput, so the
    energy+force loss is computed inside the engine's module."""

    def __init__(self, model: nn.Module, level: str, level_index: int):
        super().__init__()
        self.model = model
        self.level = level
        self.h = level_index

    def forward(self, batch) -> torch.Tensor:
        out = self.model(batch, [self.level])
        e_err = (out.energy[:, 0] - batch.energy[:, self.h]) / batch.n_atoms
        f_err = out.forces[:, 0] - batch.forces[:, self.h]
        return e_err.pow(2).mean().to(f_err.dtype) + f_err.pow(2).mean()


def _flat_params(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double().cpu() for p in module.parameters()])


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    import deepspeed
    import deepspeed.ops

    # DeepSpeed's CPU backend otherwise compiles (first run on a machine: 40-60 s) and loads (~3 s) a shared-memory
    # op used only by inference_all_reduce; training collectives go through torch.distributed (gloo) either way.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False

    from polyfid.models import Hipnn, HipnnConfig, build_model
    from polyfid.models.testing.structures import ELEMENTS, LEVEL, LEVELS, demo_records, level_stats, make_batch

    deepspeed.init_distributed(dist_backend="gloo")
    records = list(demo_records(tuple(range(rank, 40, 10))))  # rank-specific frames, 8 molecules each
    results = {}
    for stage in STAGES:
        torch.manual_seed(0)
        config = HipnnConfig(elements=ELEMENTS, n_features=8, n_sensitivities=4, n_interactions=2, n_atom_layers=1)
        model = build_model(Hipnn(config), {LEVEL: level_stats()[LEVEL]})
        wrapper = EnergyForceLoss(model, LEVEL, LEVELS.index(LEVEL))
        before = _flat_params(wrapper)
        ds_config = {
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": 1,
            "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
            "zero_optimization": {"stage": stage},
            "gradient_clipping": 10.0,
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        engine, *_ = deepspeed.initialize(model=wrapper, model_parameters=wrapper.parameters(), config=ds_config)
        losses = []
        for step in range(N_STEPS):
            batch = make_batch(records[(step * 8) % len(records) :][:8])
            engine.train()
            loss = engine(batch)
            engine.backward(loss)
            engine.step()
            losses.append(float(loss.detach()))
        results[stage] = {"losses": losses, "before": before, "after": _flat_params(engine.module)}
        engine.destroy()
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    pytest.importorskip("deepspeed")
    return spawn_ranks(_worker, WORLD, tmp_path_factory.mktemp("deepspeed"), TIMEOUT_S)


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_zero_force_training_step(ranks, stage):
    r0, r1 = ranks[0][stage], ranks[1][stage]
    for r in (r0, r1):
        assert all(torch.isfinite(torch.tensor(r["losses"]))), r["losses"]
        assert not torch.equal(r["before"], r["after"])  # parameters changed
    assert r0["losses"] != r1["losses"]  # the ranks saw different batches
    assert torch.equal(r0["before"], r1["before"])
    torch.testing.assert_close(r0["after"], r1["after"], rtol=0, atol=0)  # identical after all-reduced steps
