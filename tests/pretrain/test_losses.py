"""The masked multi-fidelity loss: terms only where labels exist, never NaN, RMSE + MAE per head."""

from __future__ import annotations

import torch

from polyfid.models import ModelOutput
from polyfid.models.testing.structures import LEVELS, demo_records, make_batch
from polyfid.pretrain.config import LevelWeights
from polyfid.pretrain.losses import HeadTargets, force_heads, head_stats, metrics_from_stats, multifidelity_loss


def _setup():
    batch = make_batch(list(demo_records((0, 1)))[:4])
    h = len(LEVELS)
    torch.manual_seed(0)
    out = ModelOutput(
        heads=list(LEVELS),
        energy=batch.energy + torch.randn(batch.n_structures, h, dtype=torch.float64),
        forces=batch.forces + torch.randn_like(batch.forces),
        per_layer_energy=torch.zeros(batch.n_structures, h, 2, dtype=torch.float64),
    )
    return batch, out


def _targets(weights):
    return [HeadTargets(name, i, weights) for i, name in enumerate(LEVELS)]


def test_loss_is_rmse_plus_mae_over_existing_labels():
    batch, out = _setup()
    targets = _targets(LevelWeights(energy=1.0, forces=0.0))
    expected = 0.0
    for i in range(len(LEVELS)):
        m = batch.energy_mask[:, i]
        if m.any():
            err = (out.energy[m, i] - batch.energy[m, i]).double()
            expected += float(err.pow(2).mean().sqrt() + err.abs().mean())
    assert abs(float(multifidelity_loss(out, batch, targets)) - expected) < 1e-9


def test_missing_labels_give_zero_not_nan():
    batch, out = _setup()
    batch.energy_mask[:] = False
    batch.forces_mask[:] = False
    loss = multifidelity_loss(out, batch, _targets(LevelWeights()))
    assert float(loss) == 0.0
    assert force_heads(batch, _targets(LevelWeights())) == []
    stats = head_stats(out, batch, _targets(LevelWeights()))
    assert torch.isfinite(stats).all() and metrics_from_stats(stats, LEVELS, "val") == {}


def test_zero_weight_removes_a_term_and_stats_count_labels():
    batch, out = _setup()
    full = multifidelity_loss(out, batch, _targets(LevelWeights()))
    energy_only = multifidelity_loss(out, batch, _targets(LevelWeights(forces=0.0)))
    assert float(full) > float(energy_only) > 0
    stats = head_stats(out, batch, _targets(LevelWeights()))
    for i in range(len(LEVELS)):
        assert stats[i, 2] == batch.energy_mask[:, i].sum()
        assert stats[i, 5] == 3 * batch.n_atoms[batch.forces_mask[:, i]].sum()
    metrics = metrics_from_stats(stats, LEVELS, "train")
    assert all(v >= 0 for v in metrics.values()) and metrics


def test_a_batch_without_labels_back_propagates_a_zero_gradient_at_hierarchicality_weight_zero():
    batch, out = _setup()
    energy = out.energy.clone().requires_grad_(True)
    out = ModelOutput(heads=out.heads, energy=energy, forces=out.forces, per_layer_energy=out.per_layer_energy)
    batch.energy_mask[:] = False
    batch.forces_mask[:] = False
    loss = multifidelity_loss(out, batch, _targets(LevelWeights()), hierarchicality_weight=0.0)
    loss.backward()
    assert float(loss) == 0.0 and energy.grad is not None and not energy.grad.any()


def test_each_level_is_normalised_over_its_own_labels_in_the_batch():
    """The documented choice (the reference method's loss): per level, RMSE + MAE over that level's labels in the
    batch, so a level with few labels in a batch weighs as much as one with many. Duplicating a level's labelled
    structures leaves its term unchanged; adding structures of another level leaves it unchanged too."""
    batch, out = _setup()
    targets = _targets(LevelWeights(forces=0.0))
    one_level = [targets[0]]
    base = float(multifidelity_loss(out, batch, one_level))
    batch.energy_mask[:, 1:] = True  # more labels of the other levels only
    assert float(multifidelity_loss(out, batch, one_level)) == base
