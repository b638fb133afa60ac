"""`reptile`: tasks are datasets or levels; k inner steps on one task, then theta += eps (theta_task - theta).

The outer update is written into DeepSpeed's fp32 masters and the module's parameters (`engine.set_master_weights`:
under ZeRO 1/2 a write to the parameters alone is lost at the next step). Every rank runs the same task (drawn from
the shared seed), so the update is identical everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from polyfid.core.errors import ConfigError
from polyfid.data_shards.record import normalize_level
from polyfid.data_shards.stream.sampling import dataset_weights
from polyfid.data_shards.stream.seeding import derive_rng
from polyfid.pretrain.config import LevelWeights, ReptileSection
from polyfid.pretrain.engine import master_weights, set_master_weights
from polyfid.pretrain.strategies import Strategy

if TYPE_CHECKING:
    from polyfid.data_shards.stream.catalog import ShardCatalog
    from polyfid.pretrain.config import PretrainConfig
    from polyfid.pretrain.losses import HeadTargets


class Reptile(Strategy):
    """Task draws are a pure function of (seed, outer step): the same on every rank and after a resume. The
    anchor (theta at the start of an outer step) is not checkpointed: checkpoints happen between outer steps."""

    kind = "reptile"

    def __init__(self, cfg: PretrainConfig, catalog: ShardCatalog):
        super().__init__(cfg, catalog)
        self.rep = cfg.strategy.reptile
        sizes = {t: sum(catalog.samples.get((d, "train"), 0) for d in ds) for t, ds in self.tasks.items()}
        ratios = self.rep.task_ratios
        if ratios is not None and self.rep.task_kind == "level":  # level tasks are named like any level
            ratios = {normalize_level(name): weight for name, weight in ratios.items()}
        if ratios is None and cfg.data.ratios is not None:  # the run's explicit mixing ratios, per task
            ratios = {t: sum(cfg.data.ratios.get(d, 0.0) for d in ds) for t, ds in self.tasks.items()}
        self.task_probs = task_weights(sizes, ratios, cfg.data.temperature)
        self.n_outer = cfg.optim.max_steps // self.rep.inner_steps
        self._task = ""
        self._anchor: list[torch.Tensor] = []

    @classmethod
    def check_config(cls, cfg: PretrainConfig) -> None:
        super().check_config(cfg)
        k = cfg.strategy.reptile.inner_steps
        for name in ("val_every", "checkpoint_every"):
            if getattr(cfg.schedule, name) % k:
                raise ValueError(
                    f"schedule.{name} must be a multiple of strategy.reptile.inner_steps ({k}): "
                    "validation and checkpoints happen between Reptile outer steps"
                )
        if cfg.optim.max_steps % k:
            raise ValueError(f"optim.max_steps must be a multiple of strategy.reptile.inner_steps ({k})")

    def plan_tasks(
        self, cfg: PretrainConfig, catalog: ShardCatalog, levels: list[str], datasets: list[str]
    ) -> dict[str, list[str]]:
        if cfg.strategy.reptile.task_kind == "dataset":
            return {d: [d] for d in datasets}
        return {lv: [d for d in datasets if d in catalog.labelled[lv]] for lv in levels}

    def begin_step(self, step: int, engine: Any) -> str:
        outer, inner = divmod(step, self.rep.inner_steps)
        if inner == 0:
            self._task = draw_task(self.task_probs, self.cfg.seed, outer)
            self._anchor = master_weights(engine.module)
            if self.rep.optimizer_state == "reset":
                reset_optimizer_state(engine.optimizer)
        return self._task

    def end_step(self, step: int, engine: Any) -> None:
        if step % self.rep.inner_steps == 0:
            outer_update(engine.module, self._anchor, eps_at(self.rep, step // self.rep.inner_steps - 1, self.n_outer))
            self._anchor = []

    def at_boundary(self, step: int) -> bool:
        return step % self.rep.inner_steps == 0

    def targets(self, task: str, targets: list[HeadTargets]) -> list[HeadTargets]:
        """A level task trains only its level's head (the others weigh 0)."""
        if self.rep.task_kind != "level":
            return targets
        off = LevelWeights(energy=0.0, forces=0.0)
        return [t if t.name == task else type(t)(t.name, t.level_index, off) for t in targets]

    def metrics(self, step: int) -> dict[str, float]:
        return {"reptile/eps": eps_at(self.rep, (step - 1) // self.rep.inner_steps, self.n_outer)}


def task_weights(
    task_sizes: Mapping[str, int], ratios: Mapping[str, float] | None, temperature: float | None = None
) -> dict[str, float]:
    """Sampling probability per task: the given ratios (unnamed tasks weigh 0), else train samples^(1/T).

    A Reptile run draws tasks with `strategy.reptile.task_ratios`, else with the run's `data.ratios` summed over each
    task's datasets (the sampling the user chose for the data: without this, a small dataset such as the only one
    labelled at some level was almost never the task, and its head barely trained), else by size (`data.temperature`).
    """
    if ratios is not None:
        unknown = sorted(set(ratios) - set(task_sizes))
        if unknown:
            raise ConfigError(
                f"strategy.reptile.task_ratios names unknown tasks {unknown}; tasks: {sorted(task_sizes)}"
            )
        ratios = {t: float(ratios.get(t, 0.0)) for t in task_sizes}
    return dataset_weights(task_sizes, ratios, temperature)


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
