"""The linear baseline: closed-form ridge path, CV choice of alpha, and frozen features that beat counts alone
on real MP2 energies of the demo target (ethanol MD geometries)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polyfid.data_shards.manifest import Manifest
from polyfid.data_shards.stream import StreamConfig, StreamPlan, make_dataloader
from polyfid.finetune.linear import _ridge_path, element_counts, fit_counts, fit_linear, structure_features
from polyfid.models import Hipnn, HipnnConfig, build_model

LEVEL = "mp2/cc-pvdz"


def test_ridge_path_matches_the_normal_equations():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)), rng.normal(size=40)
    for alpha, w in zip((1e-3, 1.0), _ridge_path(x, y, (1e-3, 1.0)), strict=True):
        expected = np.linalg.solve(x.T @ x + alpha * len(y) * np.eye(6), x.T @ y)
        np.testing.assert_allclose(w, expected, rtol=1e-8, atol=1e-10)


def _ethanol(demo_shards, split):
    manifest = Manifest.load(demo_shards)
    plan = StreamPlan.from_config(
        StreamConfig(shard_dirs=[demo_shards], split=split, datasets=["demo_target_ethanol"], max_atoms=4096)
    )
    h = plan.level_names.index(LEVEL)
    torch.manual_seed(0)
    model = build_model(Hipnn(HipnnConfig(elements=manifest.elements, n_features=16, n_sensitivities=8)), {})
    counts, feats, energy = [], [], []
    for batch in make_dataloader(plan, "eval"):
        m = batch.energy_mask[:, h].numpy()
        counts.append(element_counts(batch, manifest.elements)[m])
        feats.append(structure_features(model, batch)[m])
        energy.append(batch.energy[:, h].numpy()[m])
    return manifest.elements, np.concatenate(counts), np.concatenate(feats), np.concatenate(energy)


def test_frozen_features_beat_element_counts_on_mp2_energies(demo_shards):
    """Ethanol only: counts can only give the mean; ridge on (even untrained) HIP-NN features explains more."""
    elements, c_train, f_train, e_train = _ethanol(demo_shards, "train")
    _, c_test, f_test, e_test = _ethanol(demo_shards, "test")
    counts_only = fit_counts(c_train, e_train, elements)
    linear = fit_linear(c_train, f_train, e_train, elements, folds=5, seed=0)
    rmse = lambda model: float(np.sqrt(((model.predict(c_test, f_test) - e_test) ** 2).mean()))  # noqa: E731
    print(f"MP2 energy RMSE on {len(e_test)} test structures: counts {rmse(counts_only):.4f} eV, "
          f"ridge on frozen features {rmse(linear):.4f} eV (alpha {linear.alpha:g})")  # fmt: skip
    assert linear.alpha is not None and linear.cv_rmse > 0
    assert rmse(linear) < 0.8 * rmse(counts_only)
    again = fit_linear(c_train, f_train, e_train, elements, folds=5, seed=0)
    assert again.alpha == linear.alpha and np.array_equal(again.w, linear.w)  # deterministic for a seed
    with pytest.raises(ValueError):
        fit_linear(c_train[:1], f_train[:1], e_train[:1], elements)
