"""Irreducible Cartesian tensors and HIP-HOP-NN invariants: definitions, basis, equivariance, invariance, values."""

from __future__ import annotations

import math

import pytest
import torch

from polyfid.models.cartesian import (
    INVARIANTS,
    cartesian_basis,
    harmonic_components,
    invariants,
    invariants_einsum,
    n_components,
    select_invariants,
    to_cartesian,
)

F64 = torch.float64
ALL_NAMES = [inv.name for inv in INVARIANTS]
DEGREE = {inv.name: inv.degree for inv in INVARIANTS}

# The contractions exactly as written in the brief / science notes, independent of the module's table.
BRIEF_EINSUM = {
    "s": ("s", "...->..."),
    "vv": ("vv", "...i,...i->..."),
    "qq": ("qq", "...ij,...ij->..."),
    "tt": ("tt", "...ijk,...ijk->..."),
    "vqv": ("vqv", "...i,...ij,...j->..."),
    "qqq": ("qqq", "...ij,...jk,...ki->..."),
    "qtt": ("qtt", "...ij,...jkl,...ikl->..."),
    "vvvt": ("vvvt", "...i,...j,...k,...ijk->..."),
    "vqqv": ("vqqv", "...i,...ij,...jk,...k->..."),
    "vttv": ("vttv", "...i,...ijk,...jkl,...l->..."),
    "qqtt": ("qqtt", "...ij,...jk,...ilm,...klm->..."),
    "qttq": ("qttq", "...ij,...ijk,...kab,...ab->..."),
    "tttt": ("tttt", "...ijk,...ijl,...abk,...abl->..."),
}

# Single neighbour with weight 1 (m = harmonic_components(r_hat)); derived in closed form with
# q = rr - I/3 (eigenvalues 2/3, -1/3, -1/3), t.r = (3/5) rr - I/5, t(r, r, .) = (2/5) r, G_kl = t_ijk t_ijl =
# (4/25) rr + (2/25) I, q q = rr/3 + I/9.
RANK1 = {
    "s": 1.0,
    "vv": 1.0,
    "qq": 2 / 3,
    "tt": 2 / 5,
    "vqv": 2 / 3,
    "qqq": 2 / 9,
    "qtt": 8 / 75,
    "vvvt": 2 / 5,
    "vqqv": 4 / 9,
    "vttv": 6 / 25,
    "qqtt": 28 / 225,
    "qttq": 4 / 25,
    "tttt": 44 / 625,
}

COUNTS = {(4, 3): 13, (4, 2): 6, (3, 3): 7, (3, 2): 5, **{(2, lm): lm + 1 for lm in range(4)}}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unit(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, 3, generator=_gen(seed), dtype=F64), dim=-1)


def _rotation(seed: int, proper: bool = True) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=_gen(seed), dtype=F64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(q) < 0:
        q = -q
    return q if proper else -q


def _env(unit: torch.Tensor, weights: torch.Tensor, l_max: int = 3) -> torch.Tensor:
    """m = sum_j w_j Y(r_hat_j): unit (A, P, 3), weights (A, P) -> (A, K)."""
    return (weights.unsqueeze(-1) * harmonic_components(unit, l_max)).sum(-2)


def _brief_invariants(m: torch.Tensor, names: list[str], l_max: int) -> torch.Tensor:
    parts = dict(zip("svqt", to_cartesian(m, l_max), strict=False))
    cols = [torch.einsum(BRIEF_EINSUM[n][1], *(parts[o] for o in BRIEF_EINSUM[n][0])) for n in names]
    return torch.stack(cols, dim=-1)


def _brief_y(r: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Y^(0..3) of unit vectors (..., 3) by the textbook formulas."""
    eye = torch.eye(3, dtype=r.dtype)
    y2 = r[..., :, None] * r[..., None, :] - eye / 3
    rrr = r[..., :, None, None] * r[..., None, :, None] * r[..., None, None, :]
    sym = (
        r[..., :, None, None] * eye  # r_i δ_jk
        + r[..., None, :, None] * eye[:, None, :]  # r_j δ_ik
        + r[..., None, None, :] * eye[:, :, None]  # r_k δ_ij
    )
    return torch.ones_like(r[..., 0]), r, y2, rrr - sym / 5


def test_n_components_and_bad_arguments() -> None:
    assert [n_components(lm) for lm in range(4)] == [1, 4, 9, 16]
    m = torch.zeros(2, 16)
    for bad in (lambda: n_components(4), lambda: n_components(-1), lambda: select_invariants(5, 3)):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError):
        select_invariants(0, 3)
    with pytest.raises(ValueError):
        invariants(m, 4, 2)  # 16 columns but l_max=2 wants 9
    with pytest.raises(ValueError):
        to_cartesian(m[:, :9], 3)
    with pytest.raises(ValueError):
        harmonic_components(torch.zeros(4, 2), 3)


def test_table_and_counts() -> None:
    assert len(INVARIANTS) == 13 and len(set(ALL_NAMES)) == 13
    assert [inv.degree for inv in INVARIANTS] == [1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4, 4]
    assert set(ALL_NAMES) == set(BRIEF_EINSUM)
    for inv in INVARIANTS:  # the ranks listed are those of the operands; the degree is the number of operands
        assert set(inv.ls) == {"svqt".index(o) for o in inv.operands}
        assert inv.degree == len(inv.operands)
        assert inv.equation == BRIEF_EINSUM[inv.name][1]
    for (n_max, l_max), count in COUNTS.items():
        assert len(select_invariants(n_max, l_max)) == count, (n_max, l_max)
    assert select_invariants(4, 3) == ALL_NAMES
    assert select_invariants(3, 2) == ["s", "vv", "qq", "vqv", "qqq"]
    assert select_invariants(4, 1) == ["s", "vv"] and select_invariants(1, 3) == ["s"]


@pytest.mark.parametrize("l_max", [0, 1, 2, 3])
def test_harmonic_components_match_textbook_tensors(l_max: int) -> None:
    r = _unit((4, 5), seed=1)
    h = harmonic_components(r, l_max)
    assert h.shape == (4, 5, n_components(l_max)) and h.dtype == F64
    assert torch.equal(h, harmonic_components(r, 3)[..., : n_components(l_max)])  # blocks are prefixes
    for got, want in zip(to_cartesian(h, l_max), _brief_y(r), strict=False):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-13)
    # squared norms on the unit sphere: l! / (2l-1)!! = 1, 1, 2/3, 2/5
    for lm, start, norm2 in ((0, 0, 1.0), (1, 1, 1.0), (2, 4, 2 / 3), (3, 9, 2 / 5)):
        if lm <= l_max:
            block = h[..., start : start + 2 * lm + 1]
            torch.testing.assert_close(block.square().sum(-1), torch.full(r.shape[:-1], norm2, dtype=F64))


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_basis_orthonormal_symmetric_traceless(rank: int) -> None:
    basis = cartesian_basis(rank)
    assert basis.shape == (2 * rank + 1, *(3,) * rank)
    flat = basis.flatten(1)
    torch.testing.assert_close(flat @ flat.T, torch.eye(2 * rank + 1, dtype=F64), rtol=0, atol=1e-14)
    if rank >= 2:
        torch.testing.assert_close(basis, basis.transpose(1, 2), rtol=0, atol=0)
        trace = torch.diagonal(basis, dim1=1, dim2=2).sum(-1)  # over the first two indices (all, by symmetry)
        torch.testing.assert_close(trace, torch.zeros_like(trace), rtol=0, atol=1e-15)
    if rank == 3:
        torch.testing.assert_close(basis, basis.transpose(2, 3), rtol=0, atol=0)
        torch.testing.assert_close(basis, basis.transpose(1, 3), rtol=0, atol=0)


def test_to_cartesian_preserves_norm_symmetric_traceless() -> None:
    m = torch.randn(6, 2, 16, generator=_gen(2), dtype=F64)  # arbitrary compact vectors, not only envsums
    s, v, q, t = to_cartesian(m, 3)
    assert s.shape == (6, 2) and v.shape == (6, 2, 3) and q.shape == (6, 2, 3, 3) and t.shape == (6, 2, 3, 3, 3)
    torch.testing.assert_close(v.square().sum(-1), m[..., 1:4].square().sum(-1))
    torch.testing.assert_close(q.square().sum((-2, -1)), m[..., 4:9].square().sum(-1))
    torch.testing.assert_close(t.square().sum((-3, -2, -1)), m[..., 9:16].square().sum(-1))
    zeros = torch.zeros(6, 2, dtype=F64)
    torch.testing.assert_close(q, q.transpose(-1, -2), rtol=0, atol=0)
    torch.testing.assert_close(torch.diagonal(q, dim1=-2, dim2=-1).sum(-1), zeros, rtol=0, atol=1e-14)
    for perm in ((0, 2, 1), (1, 0, 2), (2, 1, 0), (1, 2, 0)):
        torch.testing.assert_close(t, t.permute(0, 1, *(2 + p for p in perm)), rtol=0, atol=0)
    torch.testing.assert_close(torch.diagonal(t, dim1=-2, dim2=-1).sum(-1), torch.zeros_like(v), rtol=0, atol=1e-14)
    assert len(to_cartesian(m[..., :9], 2)) == 3 and len(to_cartesian(m[..., :1], 0)) == 1


@pytest.mark.parametrize("proper", [True, False])
def test_to_cartesian_equivariance(proper: bool) -> None:
    rot = _rotation(3, proper)
    r = _unit((5, 7), seed=4)
    w = torch.randn(5, 7, generator=_gen(5), dtype=F64)
    s, v, q, t = to_cartesian(_env(r, w), 3)
    s2, v2, q2, t2 = to_cartesian(_env(r @ rot.T, w), 3)
    torch.testing.assert_close(s2, s)
    torch.testing.assert_close(v2, torch.einsum("ia,...a->...i", rot, v))
    torch.testing.assert_close(q2, torch.einsum("ia,jb,...ab->...ij", rot, rot, q))
    torch.testing.assert_close(t2, torch.einsum("ia,jb,kc,...abc->...ijk", rot, rot, rot, t))


@pytest.mark.parametrize("proper", [True, False])
def test_invariants_rotation_invariant(proper: bool) -> None:
    r = _unit((8, 6), seed=6)
    w = torch.randn(8, 6, generator=_gen(7), dtype=F64)
    before = invariants(_env(r, w), 4, 3)
    for seed in (8, 9):
        after = invariants(_env(r @ _rotation(seed, proper).T, w), 4, 3)
        torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-12)
    # not trivially invariant: every invariant varies across environments
    assert (before.std(0) > 1e-3).all()


@pytest.mark.parametrize(("n_max", "l_max"), [(n, lm) for n in range(1, 5) for lm in range(4)])
def test_invariants_match_brief_einsum(n_max: int, l_max: int) -> None:
    m = torch.randn(3, 5, 16, generator=_gen(10), dtype=F64)
    names = select_invariants(n_max, l_max)
    k = n_components(l_max)
    got = invariants(m[..., :k], n_max, l_max)
    assert got.shape == (3, 5, len(names))
    want = _brief_invariants(m[..., :k], names, l_max)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(invariants_einsum(m[..., :k], n_max, l_max), want, rtol=1e-12, atol=1e-12)
    # a smaller selection is exactly the matching columns of the full one
    full = invariants(m, 4, 3)
    torch.testing.assert_close(got, full[..., [ALL_NAMES.index(n) for n in names]], rtol=0, atol=0)


def test_homogeneity() -> None:
    m = torch.randn(4, 16, generator=_gen(11), dtype=F64)
    base = invariants(m, 4, 3)
    degrees = torch.tensor([DEGREE[n] for n in ALL_NAMES], dtype=F64)
    for a in (0.6, -1.7, 2.5):
        torch.testing.assert_close(invariants(a * m, 4, 3), base * a**degrees)


def test_single_neighbour_closed_form() -> None:
    r = _unit((10,), seed=12)
    w = torch.randn(10, generator=_gen(13), dtype=F64)
    m = w[:, None] * harmonic_components(r, 3)
    want = torch.tensor([RANK1[n] for n in ALL_NAMES], dtype=F64) * w[:, None] ** torch.tensor(
        [DEGREE[n] for n in ALL_NAMES], dtype=F64
    )
    torch.testing.assert_close(invariants(m, 4, 3), want, rtol=1e-12, atol=1e-13)
    # two opposite neighbours: odd-l blocks cancel, even-l double
    m2 = harmonic_components(torch.stack([r[0], -r[0]]), 3).sum(0)
    inv2 = dict(zip(ALL_NAMES, invariants(m2, 4, 3).tolist(), strict=True))
    assert (
        inv2["s"] == pytest.approx(2)
        and inv2["qq"] == pytest.approx(4 * 2 / 3)
        and inv2["qqq"] == pytest.approx(16 / 9)
    )
    for n in ("vv", "tt", "vqv", "qtt", "vvvt", "vqqv", "vttv", "qqtt", "qttq", "tttt"):
        assert abs(inv2[n]) < 1e-14


def test_dtype_and_batching() -> None:
    for dtype in (torch.float32, torch.float64):
        r = _unit((2, 3), seed=14).to(dtype)
        h = harmonic_components(r, 3)
        assert h.dtype == dtype
        out = invariants(h, 4, 3)
        assert out.dtype == dtype and out.shape == (2, 3, 13)
        assert all(p.dtype == dtype for p in to_cartesian(h, 3))
    m = torch.randn(2, 3, 16, generator=_gen(15), dtype=F64)
    torch.testing.assert_close(invariants(m, 4, 3)[1, 2], invariants(m[1, 2], 4, 3), rtol=0, atol=0)


def test_gradcheck_and_double_backward() -> None:
    m = torch.randn(2, 16, generator=_gen(16), dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: invariants(x, 4, 3), (m,))
    assert torch.autograd.gradgradcheck(lambda x: invariants(x, 4, 3), (m,))
    u = torch.randn(3, 3, generator=_gen(17), dtype=F64, requires_grad=True)

    def through_pairs(x: torch.Tensor) -> torch.Tensor:  # unit vectors -> envsum -> invariants, as in the model
        return invariants(harmonic_components(torch.nn.functional.normalize(x, dim=-1), 3).sum(0), 4, 3)

    assert torch.autograd.gradcheck(through_pairs, (u,))
    assert torch.autograd.gradgradcheck(through_pairs, (u,))
    # forces-style double backward: d/dtheta of |dE/dx|^2 is finite
    x = torch.randn(4, 3, generator=_gen(18), dtype=F64, requires_grad=True)
    energy = through_pairs(x).sum()
    (g,) = torch.autograd.grad(energy, x, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), x)
    assert torch.isfinite(gg).all()


def test_rotation_acts_orthogonally_on_compact_blocks() -> None:
    """The compact components of rotated neighbours are an orthogonal map of the old ones (per l block)."""
    r = _unit((40,), seed=19)
    rot = _rotation(20)
    h, h_rot = harmonic_components(r, 3), harmonic_components(r @ rot.T, 3)
    for start, size in ((1, 3), (4, 5), (9, 7)):
        a, b = h[:, start : start + size], h_rot[:, start : start + size]
        d = torch.linalg.lstsq(a, b).solution  # b = a @ d
        torch.testing.assert_close(a @ d, b, rtol=0, atol=1e-12)
        torch.testing.assert_close(d.T @ d, torch.eye(size, dtype=F64), rtol=0, atol=1e-12)
    assert math.isclose(float(h[:, 0].sum()), 40.0)
