"""HIP-NN sensitivities and the envsum."""

from __future__ import annotations

import math

import pytest
import torch

from polyfid.models import InverseGaussianSensitivity, envsum


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


@pytest.mark.parametrize("sort_pairs", [True, False])
def test_envsum_matches_naive_with_isolated_atoms_and_any_pair_order(sort_pairs):
    g = torch.Generator().manual_seed(0)
    n, p, ns, nf = 6, 12, 4, 3
    pi = torch.randint(0, n - 1, (p,), generator=g)  # atom n-1 has no pairs
    pi = torch.sort(pi).values if sort_pairs else pi
    pj = torch.randint(0, n, (p,), generator=g)
    sens = torch.rand(p, ns, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(n, nf, generator=g, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(envsum(sens, z, pi, pj, n), _naive_envsum(sens, z, pi, pj, n))
    assert torch.autograd.gradgradcheck(lambda s, x: envsum(s, x, pi, pj, n), (sens, z))
    empty = envsum(sens[:0], z, pi[:0], pj[:0], n)
    assert empty.shape == (n, ns, nf) and not empty.any()
