"""The model a config describes, the objective DeepSpeed wraps, the DeepSpeed engine around them, and its fp32
master weights (read for export and Reptile, written by Reptile's outer update).

Under ZeRO 1/2 (and bf16) the optimiser owns fp32 master partitions; the module's parameters are copies that the
next `engine.step()` overwrites from them, so a write must go to the masters (`safe_set_full_fp32_param`) and to the
module's parameters; without ZeRO/bf16 the parameters are the masters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from polyfid.core.config import merge
from polyfid.data_shards.stream.batch import Batch
from polyfid.data_shards.stream.catalog import ShardCatalog
from polyfid.models import PolyfidModel, build_model
from polyfid.models.registry import build_backbone
from polyfid.pretrain.checkpoint_engine import install_safe_loading
from polyfid.pretrain.config import LossSection, PretrainConfig
from polyfid.pretrain.losses import HeadTargets, force_heads, head_stats, multifidelity_loss


def build_polyfid_model(cfg: PretrainConfig, catalog: ShardCatalog, levels: Sequence[str]) -> PolyfidModel:
    """A fresh model: the configured backbone over the shards' elements (unless the settings name them), one head
    per level with its E0."""
    settings = cfg.model.settings.model_dump(mode="json")
    settings["elements"] = settings["elements"] or catalog.elements
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg.model.backbone, settings)
    stats = {lv: catalog.level_stats.get(lv) for lv in levels}
    return build_model(backbone, stats, cfg.model.normalize_heads, cfg.model.fidelity_embedding, cfg.model.charge_spin)


class TrainingObjective(nn.Module):
    """engine(batch, targets) -> (loss, per-head error sums): the loss is computed inside the module DeepSpeed
    wraps, because forces (autograd inside forward, double backward) must stay within the engine's forward."""

    def __init__(self, model: PolyfidModel, loss: LossSection):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: Batch, targets: Sequence[HeadTargets]) -> tuple[torch.Tensor, torch.Tensor]:
        wanted = force_heads(batch, targets)
        out = self.model(batch, [t.name for t in targets], compute_forces=bool(wanted), force_heads=wanted)
        loss = multifidelity_loss(
            out, batch, targets, self.loss.hierarchicality_weight, energy_per_atom=self.loss.energy_per_atom
        )
        return loss, head_stats(out, batch, targets)


def deepspeed_config(cfg: PretrainConfig) -> dict[str, Any]:
    """The DeepSpeed JSON config of a run (`deepspeed.extra` is deep-merged last)."""
    o, d = cfg.optim, cfg.deepspeed
    generated: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,  # one atom-budget batch per micro-step
        "gradient_accumulation_steps": o.grad_accum,
        "optimizer": {
            "type": "AdamW",
            # torch_adam: DeepSpeed's fused/CPU Adam would compile for 70-100 s on first use
            "params": {"lr": o.lr, "betas": list(o.betas), "weight_decay": o.weight_decay, "torch_adam": True},
        },
        "zero_optimization": {"stage": d.zero_stage},
        "gradient_clipping": o.grad_clip or 0.0,
        "bf16": {"enabled": d.precision == "bf16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return merge(generated, d.extra)


def initialize_engine(objective: TrainingObjective, cfg: PretrainConfig, device: torch.device) -> Any:
    import deepspeed

    objective.to(device)
    engine, *_ = deepspeed.initialize(
        model=objective,
        model_parameters=[p for p in objective.parameters() if p.requires_grad],
        config=deepspeed_config(cfg),
        dist_init_required=False,
    )
    install_safe_loading(engine)
    return engine


def master_weights(module: nn.Module) -> list[torch.Tensor]:
    """Full fp32 copies of the trainable parameters' master weights (a collective under ZeRO: call on all ranks)."""
    from deepspeed.utils import safe_get_full_fp32_param

    out = []
    for p in module.parameters():
        if not p.requires_grad:
            continue
        full = safe_get_full_fp32_param(p)
        out.append((p.detach() if full is None else full).float().clone())
    return out


def set_master_weights(module: nn.Module, values: list[torch.Tensor]) -> None:
    """Write full fp32 values into the masters (where DeepSpeed keeps them) and into the module's parameters."""
    from deepspeed.utils import safe_set_full_fp32_param

    params = [p for p in module.parameters() if p.requires_grad]
    if len(params) != len(values):
        raise ValueError(f"{len(values)} values for {len(params)} trainable parameters")
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            safe_set_full_fp32_param(p, v.to(p.device))
            p.copy_(v.to(p.dtype))
