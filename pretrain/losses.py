"""The multi-fidelity loss: per head, energy and force RMSE + MAE over the labels that exist, and error sums.

A head's term is present only where its level has labels in the batch and a positive weight; a batch with no
label of a level contributes exactly 0 for it (never NaN: every mean divides by max(count, 1)).

Normalisation (a choice, tested): each level's RMSE + MAE is over that level's own labels in the batch, as in the
reference method (arXiv:2505.01590), not over all labels of the batch. A level with a few labels in a batch (100
high-level energies among 720 low-level structures) then weighs as much as the abundant one, instead of being
diluted by its share of the batch; its term is noisier, which the per-level weights can offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from polyfid.data_shards.stream.batch import Batch
from polyfid.models import ModelOutput, hierarchicality
from polyfid.pretrain.config import LevelWeights

# Columns of the per-head error sums (float64): reduced across ranks by summation, turned into metrics at the end.
STAT_FIELDS = ("e_abs", "e_sq", "e_n", "f_abs", "f_sq", "f_n")
_RMSE_EPS = 1e-12  # keeps d sqrt(x)/dx finite at a perfect fit


@dataclass(frozen=True)
class HeadTargets:
    """What a head is trained on: its column on the batch's level axis and its weights."""

    name: str
    level_index: int
    weights: LevelWeights


def energy_errors(out: ModelOutput, batch: Batch, col: int, level_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(errors (n,) eV of the structures with an energy label, their atom counts)."""
    mask = batch.energy_mask[:, level_index]
    return (out.energy[:, col] - batch.energy[:, level_index])[mask], batch.n_atoms[mask]


def force_errors(out: ModelOutput, batch: Batch, col: int, level_index: int) -> torch.Tensor:
    """Force component errors (n, 3) eV/A of the atoms whose structure has force labels at the level."""
    if out.forces is None:
        return batch.forces.new_zeros(0, 3)
    atoms = batch.forces_mask[batch.batch, level_index]
    return (out.forces[:, col].to(batch.forces.dtype) - batch.forces[:, level_index])[atoms]


def _rmse_plus_mae(err: torch.Tensor) -> torch.Tensor:
    n = max(err.numel(), 1)
    return torch.sqrt(err.pow(2).sum() / n + _RMSE_EPS) + err.abs().sum() / n


def head_stats(out: ModelOutput, batch: Batch, targets: Sequence[HeadTargets]) -> torch.Tensor:
    """(H, 6) float64 sums |dE|, dE^2, n_E, |dF|, dF^2, n_F (components) per head (total energies, eV)."""
    rows = []
    with torch.no_grad():
        for col, t in enumerate(targets):
            de, _ = energy_errors(out, batch, col, t.level_index)
            df = force_errors(out, batch, col, t.level_index).double()
            rows.append(
                torch.stack(
                    [
                        de.abs().sum(),
                        de.pow(2).sum(),
                        de.new_tensor(float(de.numel())),
                        df.abs().sum().to(de.device),
                        df.pow(2).sum().to(de.device),
                        de.new_tensor(float(df.numel())),
                    ]
                )
            )
    return torch.stack(rows).double()


def multifidelity_loss(
    out: ModelOutput,
    batch: Batch,
    targets: Sequence[HeadTargets],
    hierarchicality_weight: float = 0.0,
    energy_per_atom: bool = False,
) -> torch.Tensor:
    """Sum over heads of w_E (RMSE + MAE)(E) + w_F (RMSE + MAE)(F) where labels exist, + w_h hierarchicality.

    `out` columns follow `targets`. Energies are total (eV) unless `energy_per_atom` (eV/atom).
    """
    # zero, but on the graph: a batch with no label of any trained level (hierarchicality_weight 0) still
    # back-propagates (a zero gradient) instead of failing
    total = out.energy.sum() * 0.0
    for col, t in enumerate(targets):
        if t.weights.energy > 0:
            de, n_atoms = energy_errors(out, batch, col, t.level_index)
            if de.numel():
                total = total + t.weights.energy * _rmse_plus_mae(de / n_atoms if energy_per_atom else de)
        if t.weights.forces > 0:
            df = force_errors(out, batch, col, t.level_index)
            if df.numel():
                total = total + t.weights.forces * _rmse_plus_mae(df).double()
    if hierarchicality_weight > 0:
        total = total + hierarchicality_weight * hierarchicality(out.per_layer_energy)
    return total


def force_heads(batch: Batch, targets: Sequence[HeadTargets]) -> list[str]:
    """Heads with a positive force weight and force labels in this batch (the only ones worth a backward pass)."""
    return [t.name for t in targets if t.weights.forces > 0 and bool(batch.forces_mask[:, t.level_index].any())]


def metrics_from_stats(stats: torch.Tensor, names: Sequence[str], prefix: str) -> dict[str, float]:
    """`{prefix}/{head}/energy_mae` (eV), `energy_rmse`, `forces_mae` (eV/A), `forces_rmse` where counted."""
    out: dict[str, float] = {}
    for row, name in zip(stats.tolist(), names, strict=True):
        e_abs, e_sq, e_n, f_abs, f_sq, f_n = row
        if e_n:
            out[f"{prefix}/{name}/energy_mae"] = e_abs / e_n
            out[f"{prefix}/{name}/energy_rmse"] = (e_sq / e_n) ** 0.5
        if f_n:
            out[f"{prefix}/{name}/forces_mae"] = f_abs / f_n
            out[f"{prefix}/{name}/forces_rmse"] = (f_sq / f_n) ** 0.5
    return out
