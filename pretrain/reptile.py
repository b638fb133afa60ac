"""Reptile meta-learning pieces: task draws, the eps schedule, and the outer update on DeepSpeed's fp32 masters.

Under ZeRO 1/2 (and bf16) the optimiser owns fp32 master partitions; the module's parameters are copies that the
next `engine.step()` overwrites from them. So the outer update theta += eps (theta_task - theta) is applied to the
masters (`safe_set_full_fp32_param`) AND to the module's parameters; without ZeRO/bf16 the parameters are the
masters. Every rank runs the same task (drawn from the shared seed), so the update is identical everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param
from torch import nn

from data_shards.stream.sampling import dataset_weights
from data_shards.stream.seeding import derive_rng
from pretrain.config import ReptileSection


def task_weights(task_sizes: Mapping[str, int], ratios: Mapping[str, float] | None) -> dict[str, float]:
    """Sampling probability per task: the given ratios (every task named) or proportional to train samples."""
    if ratios is not None:
        unknown = sorted(set(ratios) - set(task_sizes))
        if unknown:
            raise ValueError(f"strategy.reptile.task_ratios names unknown tasks {unknown}; tasks: {sorted(task_sizes)}")
        ratios = {t: float(ratios.get(t, 0.0)) for t in task_sizes}
    return dataset_weights(task_sizes, ratios)


def draw_task(weights: Mapping[str, float], seed: int, outer_step: int) -> str:
    """The task of an outer step: a pure function of (seed, outer step), the same on every rank and on resume."""
    names = sorted(weights)
    probs = [weights[n] for n in names]
    return names[int(derive_rng(seed, outer_step, "reptile-task").choice(len(names), p=probs))]


def eps_at(section: ReptileSection, outer_step: int, n_outer: int) -> float:
    """Outer step size, linear from eps_start to eps_end over the run's outer steps."""
    if n_outer <= 1:
        return section.eps_start
    frac = min(max(outer_step / (n_outer - 1), 0.0), 1.0)
    return section.eps_start + frac * (section.eps_end - section.eps_start)


def master_weights(module: nn.Module) -> list[torch.Tensor]:
    """Full fp32 copies of the trainable parameters' master weights (a collective under ZeRO: call on all ranks)."""
    out = []
    for p in module.parameters():
        if not p.requires_grad:
            continue
        full = safe_get_full_fp32_param(p)
        out.append((p.detach() if full is None else full).float().clone())
    return out


def set_master_weights(module: nn.Module, values: list[torch.Tensor]) -> None:
    """Write full fp32 values into the masters (where DeepSpeed keeps them) and into the module's parameters."""
    params = [p for p in module.parameters() if p.requires_grad]
    if len(params) != len(values):
        raise ValueError(f"{len(values)} values for {len(params)} trainable parameters")
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            safe_set_full_fp32_param(p, v.to(p.device))
            p.copy_(v.to(p.dtype))


def outer_update(module: nn.Module, anchor: list[torch.Tensor], eps: float) -> None:
    """theta <- anchor + eps (theta_task - anchor), with theta_task the current masters."""
    task = master_weights(module)
    set_master_weights(module, [a + eps * (t - a) for a, t in zip(anchor, task, strict=True)])


def base_optimizer(optimizer: object) -> torch.optim.Optimizer:
    """The torch optimizer inside DeepSpeed's wrappers (ZeRO, bf16)."""
    opt = optimizer
    while not isinstance(opt, torch.optim.Optimizer):
        inner = getattr(opt, "optimizer", None)
        if inner is None or inner is opt:
            raise TypeError(f"cannot find the torch optimizer inside {type(optimizer).__name__}")
        opt = inner
    return opt


def reset_optimizer_state(optimizer: object) -> None:
    """Zero Adam's moments and step counts in place (references DeepSpeed keeps to them stay valid)."""
    for state in base_optimizer(optimizer).state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                value.zero_()
            elif key == "step":
                state[key] = 0
