"""HIP-NN-TS and HIP-HOP-NN through the shared model tests, plus their specifics and a short training run each."""

from __future__ import annotations

import pytest
import torch

from polyfid.models import (
    HipHop,
    HipHopConfig,
    Hipnn,
    HipnnConfig,
    HipnnTS,
    HipnnTSConfig,
    PolyfidModel,
    build_graph,
    build_model,
)
from polyfid.models.cartesian import harmonic_components, invariants
from polyfid.models.hiphop import norm_invariants
from polyfid.models.testing.mixins import HEADS, ModelTestMixin
from polyfid.models.testing.structures import (
    ELEMENTS,
    demo_records,
    level_stats,
    make_batch,
    record,
    water_box_record,
)

SMALL = dict(elements=ELEMENTS, n_features=16, n_sensitivities=8, n_interactions=2, n_atom_layers=2, cutoff=4.0)


class TestHipnnTS(ModelTestMixin):
    kind, settings = "hipnn_ts", {**SMALL, "l_max": 2}


class TestHipnnTSPackaged(TestHipnnTS):
    packaged = True


class TestHipHop43(ModelTestMixin):
    kind, settings = "hiphop", {**SMALL, "n_max": 4, "l_max": 3}


class TestHipHop43Packaged(TestHipHop43):
    packaged = True


class TestHipHop43ConditionedPackaged(TestHipHop43):
    packaged = conditioned = True


class TestHipHop43GroupNorm(ModelTestMixin):
    kind, settings = "hiphop", {**SMALL, "n_max": 4, "l_max": 3, "group_norm": True}


class TestHipHop32(ModelTestMixin):
    kind, settings = "hiphop", {**SMALL, "n_max": 3, "l_max": 2}


def test_config_validation_and_sizes():
    assert HipHopConfig(elements=[1]).model_dump()["l_max"] == 3 and HipHopConfig(elements=[1]).n_max == 4
    for bad in (dict(l_max=4), dict(l_max=-1), dict(n_max=0), dict(n_max=5), dict(lmax=2)):
        with pytest.raises(ValueError):
            HipHopConfig(elements=[1], **bad)
    for bad in (dict(l_max=0), dict(l_max=3), dict(norm_eps=0.0), dict(group_norm=True)):
        with pytest.raises(ValueError):
            HipnnTSConfig(elements=[1], **bad)
    assert len(HipHop(HipHopConfig(**SMALL)).invariant_names) == 13
    counts = {(4, 2): 6, (3, 3): 7, (3, 2): 5, (2, 3): 4, (1, 3): 1}
    for (n, ell), k in counts.items():
        assert len(HipHop(HipHopConfig(**SMALL, n_max=n, l_max=ell)).invariant_names) == k
    net = HipHop(HipHopConfig(**SMALL, dtype="float32"))
    assert net.dtype == torch.float32 and all(p.dtype == torch.float32 for p in net.parameters())
    assert net.feature_sizes == [4, 16, 16] and HipnnTS(HipnnTSConfig(**SMALL, dtype="float64")).dtype == torch.float64


def _graph_inputs(n: int = 2):
    batch = make_batch(list(demo_records((0,)))[:n])
    species = PolyfidModel(Hipnn(HipnnConfig(**SMALL))).species(batch.numbers)
    graph = build_graph(batch.positions, batch.batch, batch.n_atoms, SMALL["cutoff"])
    return species, graph


@pytest.mark.parametrize("n_max", [1, 2])
def test_scalar_only_hiphop_is_exactly_hipnn(n_max):
    """l_max = 0: only s survives, no extra parameter; HIP-NN's state dict loads strictly and gives its features."""
    torch.manual_seed(0)
    ref = Hipnn(HipnnConfig(**SMALL, dtype="float64"))
    net = HipHop(HipHopConfig(**SMALL, n_max=n_max, l_max=0, dtype="float64"))
    net.load_state_dict(ref.state_dict(), strict=True)
    species, graph = _graph_inputs()
    for a, b in zip(net(species, graph), ref(species, graph), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_env_tensors_match_environment_first_reference():
    """V applied first equals the literal M_{i,a,k} = sum_{nu,b} V^nu_ab sum_j s_nu Y_k z_jb (env summed first)."""
    torch.manual_seed(0)
    net = HipHop(HipHopConfig(**SMALL, dtype="float64"))
    species, graph = _graph_inputs()
    z = torch.randn(species.shape[0], SMALL["n_features"], dtype=torch.float64)
    layer = net.blocks[1][0].base
    sens = layer.sensitivity(graph.dist)
    y = harmonic_components(graph.vec / graph.dist[:, None], 3)
    env = torch.zeros(z.shape[0], sens.shape[1], y.shape[1], z.shape[1], dtype=torch.float64)
    env.index_add_(0, graph.pair_i, torch.einsum("pn,pk,pb->pnkb", sens, y, z[graph.pair_j]))
    weight = layer.interaction.weight.view(z.shape[1], sens.shape[1], z.shape[1])
    want = torch.einsum("anb,inkb->ika", weight, env)
    torch.testing.assert_close(layer.env_tensors(z, graph), want, rtol=1e-10, atol=1e-12)


def test_norm_invariants_are_regularised_norms():
    m = torch.randn(5, 7, 9, dtype=torch.float64)
    got = norm_invariants(m, 2, 1e-6)
    full = invariants(m, 2, 2)  # s, vv, qq (squared norms)
    torch.testing.assert_close(got, torch.cat([full[..., :1], (full[..., 1:] + 1e-6).sqrt()], -1))
    assert norm_invariants(torch.zeros(2, 4), 1, 1e-6)[:, 1].eq(1e-3).all()


@pytest.mark.parametrize(
    "backbone",
    [
        lambda: HipnnTS(HipnnTSConfig(**SMALL, l_max=2)),
        lambda: HipHop(HipHopConfig(**SMALL)),
        lambda: HipHop(HipHopConfig(**SMALL, group_norm=True)),
    ],
    ids=["ts", "hiphop", "hiphop-gn"],
)
def test_zero_tensors_give_finite_double_backward(backbone):
    """Isolated atoms and a pair beyond the cutoff (M^(l>=1) = 0, where a bare sqrt breaks): finite gradients."""
    torch.manual_seed(0)
    model = build_model(backbone(), level_stats()).train()
    far = record([1, 8], [[0, 0, 0], [0, 0, SMALL["cutoff"] + 0.5]], rid="far")
    atoms = [record([z], [[0.0, 0.0, 0.0]], rid=str(z)) for z in (1, 6)]
    near = record([1, 8, 1], [[0, 0, 0], [0, 0, 1.0], [0, 0, 2.0]], rid="linear")  # linear: M^(1) of O is 0
    out = model(make_batch([far, *atoms, near, water_box_record()]), HEADS)
    (out.forces.pow(2).mean() + out.energy.float().pow(2).mean() * 1e-6).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(out.forces).all()
