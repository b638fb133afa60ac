"""Reptile pieces: task draws, eps schedule, and the outer update reaching DeepSpeed's fp32 masters (ZeRO 0/1/2)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from polyfid.pretrain.config import ReptileSection
from polyfid.pretrain.strategies.reptile import draw_task, eps_at, outer_update, reset_optimizer_state, task_weights
from tests.pretrain.runs import spawn_ranks

WORLD = 2
STAGES = (0, 1, 2)


def test_task_draws_are_seeded_and_follow_the_weights():
    weights = task_weights({"a": 300, "b": 100}, None)
    assert weights == pytest.approx({"a": 0.75, "b": 0.25})
    draws = [draw_task(weights, seed=1, outer_step=k) for k in range(2000)]
    assert draws == [draw_task(weights, seed=1, outer_step=k) for k in range(2000)]
    assert Counter(draws)["a"] / 2000 == pytest.approx(0.75, abs=0.04)
    assert task_weights({"a": 300, "b": 100}, {"b": 1.0}) == {"a": 0.0, "b": 1.0}
    with pytest.raises(ValueError, match="unknown tasks"):
        task_weights({"a": 1}, {"c": 1.0})


def test_eps_schedule_is_linear_over_outer_steps():
    s = ReptileSection(eps_start=1.0, eps_end=0.2)
    assert eps_at(s, 0, 5) == 1.0 and eps_at(s, 4, 5) == pytest.approx(0.2) and eps_at(s, 2, 5) == pytest.approx(0.6)


def test_outer_update_and_optimizer_reset_on_a_plain_module():
    torch.manual_seed(0)
    module = nn.Linear(3, 2)
    anchor = [p.detach().clone() for p in module.parameters()]
    opt = torch.optim.AdamW(module.parameters(), lr=0.1)
    module(torch.randn(4, 3)).sum().backward()
    opt.step()
    task = [p.detach().clone() for p in module.parameters()]
    outer_update(module, anchor, 0.25)
    for p, a, t in zip(module.parameters(), anchor, task, strict=True):
        torch.testing.assert_close(p.detach(), a + 0.25 * (t - a))
    reset_optimizer_state(opt)
    for state in opt.state.values():
        assert float(state["step"]) == 0 and not state["exp_avg"].any() and not state["exp_avg_sq"].any()


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    from polyfid.pretrain.engine import master_weights, set_master_weights
    from polyfid.pretrain.runtime import prepare_deepspeed

    prepare_deepspeed(use_gpu=False)
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    results = {}
    for stage in STAGES:
        torch.manual_seed(0)
        module = nn.Sequential(nn.Linear(5, 7), nn.Softplus(), nn.Linear(7, 1))
        config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": stage},
                  "optimizer": {"type": "AdamW", "params": {"lr": 0.0, "torch_adam": True}}}  # fmt: skip
        engine, *_ = deepspeed.initialize(model=module, model_parameters=module.parameters(), config=config)
        target = [torch.full_like(p, 0.5 + i) for i, p in enumerate(engine.module.parameters())]

        def zero_grad_step(engine=engine) -> None:
            loss = sum((p * 0.0).sum() for p in engine.module.parameters())
            engine.backward(loss)
            engine.step()

        with torch.no_grad():  # the naive update: module parameters only
            for p, v in zip(engine.module.parameters(), target, strict=True):
                p.copy_(v)
        zero_grad_step()
        naive = [p.detach().clone() for p in engine.module.parameters()]
        set_master_weights(engine.module, target)  # what Reptile does
        zero_grad_step()
        results[stage] = {
            "naive_kept": all(torch.equal(a, b) for a, b in zip(naive, target, strict=True)),
            "masters_kept": all(
                torch.equal(p.detach(), v) for p, v in zip(engine.module.parameters(), target, strict=True)
            ),
            "masters_read": all(torch.equal(m, v) for m, v in zip(master_weights(engine.module), target, strict=True)),
        }
        engine.destroy()
    torch.save(results, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    return spawn_ranks(_worker, WORLD, tmp_path_factory.mktemp("reptile"), 150)


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_outer_update_reaches_the_fp32_masters(ranks, stage):
    """Under ZeRO 1/2 the next engine.step() overwrites module parameters from the fp32 masters: writing only the
    module's parameters is lost, writing the masters (set_master_weights) is kept; stage 0 keeps both."""
    for r in ranks:
        res = r[stage]
        assert res["masters_kept"] and res["masters_read"], res
        assert res["naive_kept"] == (stage == 0), res
