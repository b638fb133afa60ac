"""Committee fine-tuning: K members of one target (seeds, optionally data subsamples), and how well their spread
ranks their errors on test (Spearman), the check that makes a committee's std worth reading."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from scipy.stats import spearmanr

from polyfid.data_shards.stream.batch import Batch
from polyfid.finetune.config import FinetuneConfig
from polyfid.finetune.train import TargetData, finetune, subset
from polyfid.models import PolyfidModel


def member_config(cfg: FinetuneConfig, k: int) -> FinetuneConfig:
    """Member k's config: seed + k, the same train subset (pinned to the run's subset seed)."""
    subset_seed = cfg.seed if cfg.target.subset_seed is None else cfg.target.subset_seed
    target = cfg.target.model_copy(update={"subset_seed": subset_seed})
    return cfg.model_copy(update={"seed": cfg.seed + k, "target": target, "committee": None})


def member_data(data: TargetData, fraction: float, seed: int) -> TargetData:
    """`data` with a seeded `fraction` of the fitted records (all when 1)."""
    if fraction >= 1:
        return data
    n = max(1, round(fraction * len(data.fit)))
    return dataclasses.replace(data, fit=subset(data.fit, n, seed, "committee-member"))


def train_members(
    start: Callable[[FinetuneConfig], PolyfidModel], cfg: FinetuneConfig, data: TargetData
) -> list[PolyfidModel]:
    """Members 1..K-1 (member 0 is the run's own model), each from `start(member_cfg)`."""
    assert cfg.committee is not None
    models = []
    for k in range(1, cfg.committee.members):
        sub = member_config(cfg, k)
        model = start(sub)
        finetune(model, sub, member_data(data, cfg.committee.subsample, sub.seed), show_progress=True)
        models.append(model)
    return models


def _spearman(spread: np.ndarray, error: np.ndarray) -> float | None:
    """Rank correlation of spread and error; None with under 3 points or a constant column."""
    if len(spread) < 3 or np.ptp(spread) == 0 or np.ptp(error) == 0:
        return None
    return float(spearmanr(spread, error).statistic)


def _per_structure(x: torch.Tensor, b: Batch) -> torch.Tensor:
    """Per-structure mean of a per-atom quantity."""
    return torch.zeros(len(b.n_atoms), dtype=x.dtype).index_add_(0, b.batch, x) / b.n_atoms


def committee_scores(
    models: list[PolyfidModel], batches: list[Batch], level: str, level_index: int
) -> dict[str, float | None]:
    """Test errors of the committee mean and whether the members' std ranks them: Spearman between each structure's
    energy std and |energy error|, and between its mean per-atom force std (norm) and mean |force error| (where the
    data has forces)."""
    e_std, e_err, f_std, f_err, f_abs = [], [], [], [], []
    for b in batches:
        want_forces = bool(b.forces_mask[:, level_index].any())
        outs = []
        for model in models:
            model.eval()
            with torch.no_grad():
                outs.append(model(b, [level], compute_forces=want_forces))
        energy = torch.stack([o.energy[:, 0] for o in outs])  # (K, S)
        has_e = b.energy_mask[:, level_index]
        e_std.append(energy.std(0, correction=0)[has_e])
        e_err.append((energy.mean(0) - b.energy[:, level_index])[has_e].abs())
        if want_forces:
            forces = torch.stack([o.forces[:, 0].double() for o in outs])  # (K, A, 3)
            spread = forces.std(0, correction=0).norm(dim=-1)  # (A,)
            error = (forces.mean(0) - b.forces[:, level_index].double()).norm(dim=-1)
            has_f = b.forces_mask[:, level_index]
            f_std.append(_per_structure(spread, b)[has_f])
            f_err.append(_per_structure(error, b)[has_f])
            atoms = has_f[b.batch]
            f_abs.append((forces.mean(0) - b.forces[:, level_index].double())[atoms].abs().flatten())
    cat = lambda xs: torch.cat(xs).numpy() if xs else np.zeros(0)  # noqa: E731
    es, ee, fs, fe, fa = (cat(x) for x in (e_std, e_err, f_std, f_err, f_abs))
    out: dict[str, float | None] = {
        "members": float(len(models)),
        "energy_mae": float(ee.mean()),
        "energy_rmse": float(np.sqrt((ee**2).mean())),
        "energy_std_mean": float(es.mean()),
        "energy_spearman": _spearman(es, ee),
    }
    if len(fs):
        out |= {"forces_mae": float(fa.mean()), "forces_std_mean": float(fs.mean()),
                "forces_spearman": _spearman(fs, fe)}  # fmt: skip
    return out
