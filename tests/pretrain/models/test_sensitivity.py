"""HIP-NN sensitivities and the envsum."""

from __future__ import annotations

import math

import torch

from pretrain.models import InverseGaussianSensitivity, envsum
from pretrain.models import hipnn as hipnn_mod


def test_init_follows_hipnn():
    s = InverseGaussianSensitivity(20, 0.75, 5.5, 5.5)
    inv_mu = 1.0 / s.mu.detach().double()
    torch.testing.assert_close(inv_mu[0], torch.tensor(1 / 5.5, dtype=torch.float64), rtol=1e-6, atol=0)
    torch.testing.assert_close(inv_mu[-1], torch.tensor(1 / 0.75, dtype=torch.float64), rtol=1e-6, atol=0)
    diffs = inv_mu.diff()
    torch.testing.assert_close(diffs, diffs.mean().expand_as(diffs), rtol=1e-4, atol=0)
    assert torch.allclose(s.sigma, torch.tensor(2 * 20 * 0.75))


def test_values_peak_and_cutoff():
    rc = 5.0
    s = InverseGaussianSensitivity(4, 0.8, 4.0, rc).double()
    r = s.mu.detach().clone()
    out = s(r)
    want = torch.cos(math.pi * r / (2 * rc)) ** 2  # Gaussian part is 1 at its own centre
    torch.testing.assert_close(torch.diagonal(out), want)
    beyond = s(torch.tensor([rc, rc + 0.1, 9.0], dtype=torch.float64))
    assert beyond.abs().max() == 0


def test_smooth_at_cutoff():
    rc = 3.0
    s = InverseGaussianSensitivity(6, 0.7, 3.0, rc).double()
    r = torch.tensor([rc - 1e-6], dtype=torch.float64, requires_grad=True)
    val = s(r)
    (grad,) = torch.autograd.grad(val.sum(), r)
    assert val.abs().max() < 1e-10 and grad.abs().max() < 1e-5


def _naive_envsum(sens, z, pi, pj, n):
    out = torch.zeros(n, sens.shape[1], z.shape[1], dtype=z.dtype)
    for p in range(sens.shape[0]):
        out[pi[p]] += sens[p][:, None] * z[pj[p]][None, :]
    return out


def test_envsum_matches_naive_and_slices(monkeypatch):
    g = torch.Generator().manual_seed(0)
    n, p, ns, nf = 5, 12, 4, 3
    pi = torch.sort(torch.randint(0, n, (p,), generator=g)).values
    pj = torch.randint(0, n, (p,), generator=g)
    sens = torch.rand(p, ns, generator=g, dtype=torch.float64)
    z = torch.randn(n, nf, generator=g, dtype=torch.float64)
    want = _naive_envsum(sens, z, pi, pj, n)
    torch.testing.assert_close(envsum(sens, z, pi, pj, n), want)
    monkeypatch.setattr(hipnn_mod, "ENVSUM_MAX_ELEMENTS", p * nf)  # one sensitivity per slice
    torch.testing.assert_close(hipnn_mod.envsum(sens, z, pi, pj, n), want)
