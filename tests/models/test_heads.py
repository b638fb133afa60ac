"""Energy heads: E0 from LevelStats, names with '/', explicit choice, adding heads, checkpoints, precision."""

from __future__ import annotations

import pytest
import torch

from polyfid.models import EnergyHead, UnknownHeadError, build_model, hierarchicality
from polyfid.models.testing.structures import demo_records, level_stats, make_batch
from tests.models.test_hipnn import Hipnn, small_config

LEVELS = ["wb97x/6-31g*", "ccsd(t)*/cbs"]


def _model(levels=LEVELS, dtype="float32"):
    torch.manual_seed(0)
    stats = level_stats()["gfn2-xtb"]
    return build_model(Hipnn(small_config(dtype)), dict.fromkeys(levels, stats))


def test_e0_from_level_stats():
    stats = level_stats()["gfn2-xtb"]
    head = EnergyHead([4, 8], [1, 6, 7, 8], stats)
    assert head.e0.dtype == torch.float64
    assert head.e0.tolist() == [stats.e0[k] for k in ("1", "6", "7", "8")]
    assert float(head.scale) == pytest.approx(stats.residual_per_atom_std)
    assert float(EnergyHead([4, 8], [1, 6, 7, 8], stats, normalize=False).scale) == 1.0
    with pytest.raises(ValueError, match=r"\[16\]"):
        EnergyHead([4, 8], [1, 6, 7, 8], type(stats)(**{**stats.__dict__, "e0": {"16": 1.0}}))


def test_e0_stays_float64_when_model_is_cast():
    model = _model().float()
    head = model.heads[LEVELS[0]]
    assert head.e0.dtype == torch.float64 and head.layers[0].weight.dtype == torch.float32
    assert head.e0.tolist() == [level_stats()["gfn2-xtb"].e0[k] for k in ("1", "6", "7", "8")]


def test_names_with_special_characters_and_explicit_choice():
    model = _model()
    batch = make_batch(list(demo_records((0,)))[:2])
    out = model(batch, ["ccsd(t)*/cbs"])
    assert out.heads == ["ccsd(t)*/cbs"] and out.energy.shape == (2, 1)
    with pytest.raises(UnknownHeadError, match=r"wb97x/6-31G\*.*available.*wb97x/6-31g\*"):
        model(batch, ["wb97x/6-31G*"])
    with pytest.raises(TypeError):
        model(batch, "ccsd(t)*/cbs")
    with pytest.raises(ValueError, match="already exists"):
        model.add_head("ccsd(t)*/cbs")


def test_adding_a_head_leaves_trunk_and_other_heads_untouched():
    model = _model()
    batch = make_batch(list(demo_records((0,)))[:3])
    before = model(batch, LEVELS)
    trunk = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.add_head("mp2/cc-pvdz")
    after = model(batch, [*LEVELS, "mp2/cc-pvdz"])
    torch.testing.assert_close(after.energy[:, :2], before.energy, rtol=0, atol=0)
    assert all(torch.equal(trunk[k], v) for k, v in model.backbone.state_dict().items())
    assert model.heads["mp2/cc-pvdz"].layers[0].weight.dtype == torch.float32


def test_state_dict_round_trip_checks_head_names():
    model = _model()
    clone = _model()
    for p in clone.parameters():
        p.data.add_(0.1)
    clone.load_state_dict(model.state_dict())
    batch = make_batch(list(demo_records((0,)))[:2])
    torch.testing.assert_close(clone(batch, LEVELS).energy, model(batch, LEVELS).energy)
    other = _model(levels=LEVELS[::-1])
    with pytest.raises(ValueError, match="differ"):
        other.load_state_dict(model.state_dict())


def test_hierarchicality_penalty():
    e = torch.tensor([[[-100.0, 1.0, 0.1]]], dtype=torch.float64)
    want = 1 / (1 + 100**2) + 0.01 / (0.01 + 1)
    assert float(hierarchicality(e)) == pytest.approx(want)
    model = _model()
    out = model.train()(make_batch(list(demo_records((0,)))[:2]), LEVELS)
    pen = hierarchicality(out.per_layer_energy)
    pen.backward()
    assert 0 <= float(pen.detach()) < 2 and model.heads[LEVELS[0]].layers[1].weight.grad is not None


def test_features_are_what_the_heads_are_linear_in():
    """A head's network energy is its per-layer weights (times its scale) on the summed `model.features`."""
    model = build_model(Hipnn(small_config("float64")), level_stats())
    batch = make_batch(list(demo_records((0,))))
    features = model.features(batch)
    assert features.shape == (batch.n_atoms_total, sum(model.backbone.feature_sizes[1:]))
    head = model.heads["gfn2-xtb"]
    w = torch.cat([layer.weight[0] for layer in head.layers])
    per_structure = torch.zeros(batch.n_structures, features.shape[1], dtype=features.dtype)
    per_structure.index_add_(0, batch.batch, features)
    out = model(batch, ["gfn2-xtb"], compute_forces=False)
    e0 = out.per_layer_energy[:, 0, 0]
    torch.testing.assert_close(out.energy[:, 0] - e0, (per_structure @ w) * head.scale, rtol=1e-10, atol=1e-9)
