"""Irreducible Cartesian tensors (l <= 3) and their full contractions (degree <= 4), the algebra of HIP-HOP-NN.

Per pair, ``Y^(l)(r_hat)`` is the symmetric traceless part of ``r_hat^{⊗l}``:

- l=0: ``1``;  l=1: ``r_i``;  l=2: ``r_i r_j - δ_ij / 3``;
- l=3: ``r_i r_j r_k - (r_i δ_jk + r_j δ_ik + r_k δ_ij) / 5`` (for a unit vector).

Compact basis. Symmetric traceless rank-l tensors form a (2l+1)-dimensional space; we fix an orthonormal basis
``{B^(l)_a}`` of it for the Frobenius inner product ``<A, B> = A_ijk.. B_ijk..`` and store a tensor ``T`` by its
coordinates ``c_a = <B^(l)_a, T>``. Hence ``T = sum_a c_a B^(l)_a`` and ``|T|_F = |c|_2`` (orthonormal). For
``T = Y^(l)(r)`` the coordinates are ``c_a = B^(l)_a(r, .., r)``, i.e. real solid harmonics, normalised so that
``sum_a c_a^2 = |Y^(l)(r)|_F^2 = l! / (2l-1)!!`` on the unit sphere: 1, 1, 2/3, 2/5 for l = 0..3. Component order
(real-spherical-harmonic order m = -l..l, except l=1 which is kept as x, y, z so that ``v`` is the identity map):

- l=0: ``1``
- l=1: ``x, y, z``
- l=2: ``√2 xy, √2 yz, (2z² - x² - y²)/√6, √2 xz, (x² - y²)/√2``
- l=3: ``y(3x² - y²)/2, √6 xyz, √(3/20) y(4z² - x² - y²), z(2z² - 3x² - 3y²)/√10, √(3/20) x(4z² - x² - y²),
  √(3/2) z(x² - y²), x(x² - 3y²)/2``

The l blocks are stacked: ``K = (l_max + 1)^2`` columns (1 + 3 + 5 + 7 = 16 for l_max = 3). Since the basis maps
are linear, ``m = sum_j w_j harmonic_components(r_hat_j)`` has Cartesian parts ``sum_j w_j Y^(l)(r_hat_j)``, so one
envsum over the K stacked columns gives every ``M^(l)`` at once. Rotations act on each l block by an orthogonal
(2l+1)x(2l+1) matrix; the invariants below are full contractions, invariant under O(3) (every term has even total l).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "INVARIANTS",
    "L_MAX",
    "N_MAX",
    "Invariant",
    "cartesian_basis",
    "harmonic_components",
    "invariants",
    "invariants_einsum",
    "n_components",
    "select_invariants",
    "to_cartesian",
]

L_MAX = 3  # highest tensor rank supported
N_MAX = 4  # highest invariant degree supported

_Poly = dict[tuple[int, int, int], float]  # exponents (of x, y, z) -> coefficient

_R2, _R6 = math.sqrt(2.0), math.sqrt(6.0)
_A3, _B3, _C3 = math.sqrt(3.0 / 20.0), 1.0 / math.sqrt(10.0), math.sqrt(1.5)

# Coordinates c_a(r) = B_a(r, .., r) of each orthonormal basis tensor, as homogeneous harmonic polynomials.
_POLYS: tuple[tuple[_Poly, ...], ...] = (
    ({(0, 0, 0): 1.0},),
    ({(1, 0, 0): 1.0}, {(0, 1, 0): 1.0}, {(0, 0, 1): 1.0}),
    (
        {(1, 1, 0): _R2},
        {(0, 1, 1): _R2},
        {(0, 0, 2): 2.0 / _R6, (2, 0, 0): -1.0 / _R6, (0, 2, 0): -1.0 / _R6},
        {(1, 0, 1): _R2},
        {(2, 0, 0): 1.0 / _R2, (0, 2, 0): -1.0 / _R2},
    ),
    (
        {(2, 1, 0): 1.5, (0, 3, 0): -0.5},
        {(1, 1, 1): _R6},
        {(0, 1, 2): 4.0 * _A3, (2, 1, 0): -_A3, (0, 3, 0): -_A3},
        {(0, 0, 3): 2.0 * _B3, (2, 0, 1): -3.0 * _B3, (0, 2, 1): -3.0 * _B3},
        {(1, 0, 2): 4.0 * _A3, (3, 0, 0): -_A3, (1, 2, 0): -_A3},
        {(2, 0, 1): _C3, (0, 2, 1): -_C3},
        {(3, 0, 0): 0.5, (1, 2, 0): -1.5},
    ),
)

# Monomials of degree 2 and 3, in the order used by harmonic_components: deg2 = r[a] * r[b]; deg3 = deg2[p] * r[c].
_MONO2 = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
_MONO3 = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2), (3, 1), (3, 2), (4, 2), (5, 2))  # (index in deg2, coord)


def _exponents(index: tuple[int, ...]) -> tuple[int, int, int]:
    return (index.count(0), index.count(1), index.count(2))


def _mono_exponents(deg: int) -> list[tuple[int, int, int]]:
    if deg == 2:
        return [_exponents(ab) for ab in _MONO2]
    return [_exponents((*_MONO2[p], c)) for p, c in _MONO3]


@functools.cache
def _basis64(rank: int) -> Tensor:
    """(2l+1, 3^l) float64: row a is the flattened symmetric traceless basis tensor B^(l)_a (l = rank)."""
    rows = []
    for poly in _POLYS[rank]:
        entries = []
        for index in itertools.product(range(3), repeat=rank):
            alpha = _exponents(index)
            multinomial = math.factorial(rank) // math.prod(math.factorial(k) for k in alpha)
            entries.append(poly.get(alpha, 0.0) / multinomial)
        rows.append(entries)
    return torch.tensor(rows, dtype=torch.float64)


@functools.cache
def _mono_coeffs64(rank: int) -> Tensor:
    """(n_monomials, 2l+1) float64: polynomial coefficients of the compact components, l = rank in (2, 3)."""
    return torch.tensor([[p.get(e, 0.0) for p in _POLYS[rank]] for e in _mono_exponents(rank)], dtype=torch.float64)


@functools.lru_cache(maxsize=64)
def _constants(rank: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    return _basis64(rank).to(dtype=dtype, device=device), _mono_coeffs64(rank).to(dtype=dtype, device=device)


def _check_l(l_max: int) -> None:
    if not 0 <= l_max <= L_MAX:
        raise ValueError(f"l_max must be in 0..{L_MAX}, got {l_max}")


def n_components(l_max: int) -> int:
    """Number of stacked compact components for l = 0..l_max: (l_max + 1)^2."""
    _check_l(l_max)
    return (l_max + 1) ** 2


def cartesian_basis(rank: int, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """The orthonormal basis of rank-l symmetric traceless tensors (l = rank): shape (2l+1, 3, .., 3), l threes."""
    _check_l(rank)
    return _basis64(rank).to(dtype=dtype, device=device).reshape((2 * rank + 1,) + (3,) * rank)


def harmonic_components(unit_vectors: Tensor, l_max: int) -> Tensor:
    """Stacked compact components of Y^(0..l_max)(r_hat): (..., 3) unit vectors -> (..., (l_max+1)^2).

    Exact polynomials of the input (no normalisation inside): for non-unit r the l block scales as |r|^l.
    """
    _check_l(l_max)
    if unit_vectors.shape[-1] != 3:
        raise ValueError(f"unit_vectors must end in 3, got shape {tuple(unit_vectors.shape)}")
    r = unit_vectors
    cols = [torch.ones_like(r[..., :1])]
    if l_max >= 1:
        cols.append(r)
    if l_max >= 2:  # unbind + stack: twice as fast as fancy indexing (whose backward is a scatter)
        xyz = r.unbind(-1)
        mono2 = [xyz[a] * xyz[b] for a, b in _MONO2]
        cols.append(torch.stack(mono2, dim=-1) @ _constants(2, r.dtype, r.device)[1])
        if l_max >= 3:
            mono3 = torch.stack([mono2[p] * xyz[c] for p, c in _MONO3], dim=-1)
            cols.append(mono3 @ _constants(3, r.dtype, r.device)[1])
    return torch.cat(cols, dim=-1)


def _check_m(m: Tensor, l_max: int) -> None:
    if m.shape[-1] != n_components(l_max):
        raise ValueError(f"m must end in {n_components(l_max)} components for l_max={l_max}, got {m.shape[-1]}")


def to_cartesian(m: Tensor, l_max: int) -> tuple[Tensor, ...]:
    """Compact components (..., K) -> full Cartesian tensors (s (...), v (..., 3), q (..., 3, 3), t (..., 3, 3, 3)).

    Only the first l_max + 1 of them are returned. q and t are symmetric and traceless by construction.
    """
    _check_m(m, l_max)
    out: list[Tensor] = [m[..., 0]]
    if l_max >= 1:
        out.append(m[..., 1:4])
    for rank, start in ((2, 4), (3, 9)):
        if l_max >= rank:
            basis = _constants(rank, m.dtype, m.device)[0]
            out.append((m[..., start : start + 2 * rank + 1] @ basis).unflatten(-1, (3,) * rank))
    return tuple(out)


class Invariant(NamedTuple):
    """One full contraction: its name, polynomial degree in m, the tensor ranks it uses, and its einsum form."""

    name: str
    degree: int
    ls: tuple[int, ...]
    operands: str  # one letter per einsum operand: s (l=0), v (l=1), q (l=2), t (l=3)
    equation: str


INVARIANTS: tuple[Invariant, ...] = (
    Invariant("s", 1, (0,), "s", "...->..."),
    Invariant("vv", 2, (1,), "vv", "...i,...i->..."),
    Invariant("qq", 2, (2,), "qq", "...ij,...ij->..."),
    Invariant("tt", 2, (3,), "tt", "...ijk,...ijk->..."),
    Invariant("vqv", 3, (1, 2), "vqv", "...i,...ij,...j->..."),
    Invariant("qqq", 3, (2,), "qqq", "...ij,...jk,...ki->..."),
    Invariant("qtt", 3, (2, 3), "qtt", "...ij,...jkl,...ikl->..."),
    Invariant("vvvt", 4, (1, 3), "vvvt", "...i,...j,...k,...ijk->..."),
    Invariant("vqqv", 4, (1, 2), "vqqv", "...i,...ij,...jk,...k->..."),
    Invariant("vttv", 4, (1, 3), "vttv", "...i,...ijk,...jkl,...l->..."),
    Invariant("qqtt", 4, (2, 3), "qqtt", "...ij,...jk,...ilm,...klm->..."),
    Invariant("qttq", 4, (2, 3), "qttq", "...ij,...ijk,...kab,...ab->..."),
    Invariant("tttt", 4, (3,), "tttt", "...ijk,...ijl,...abk,...abl->..."),
)


def select_invariants(n_max: int, l_max: int) -> list[str]:
    """Names, in table order, of the invariants of degree <= n_max using only tensors with l <= l_max."""
    _check_l(l_max)
    if not 1 <= n_max <= N_MAX:
        raise ValueError(f"n_max must be in 1..{N_MAX}, got {n_max}")
    return [inv.name for inv in INVARIANTS if inv.degree <= n_max and max(inv.ls) <= l_max]


def invariants_einsum(m: Tensor, n_max: int, l_max: int) -> Tensor:
    """Reference implementation: each selected invariant by its literal einsum on the Cartesian tensors."""
    names = set(select_invariants(n_max, l_max))
    parts = dict(zip("svqt", to_cartesian(m, l_max), strict=False))
    cols = [torch.einsum(inv.equation, *(parts[o] for o in inv.operands)) for inv in INVARIANTS if inv.name in names]
    return torch.stack(cols, dim=-1)


def invariants(m: Tensor, n_max: int, l_max: int) -> Tensor:
    """Selected invariants (table order) of compact components m (..., K) -> (..., n_inv).

    Equal to :func:`invariants_einsum`, computed through shared intermediates: the quadratic ones as sums of squares
    of compact components (orthonormal basis), the others from q v, q q, G_kl = t_ijk t_ijl, (t v)_ij = t_ijk v_k and
    (q:t)_k = q_ij t_ijk; no intermediate is larger than (..., 3, 3, 3).
    """
    names = select_invariants(n_max, l_max)
    _check_m(m, l_max)
    parts = to_cartesian(m, l_max) if n_max >= 3 else ()  # degree <= 2 needs only the compact components
    v, q, t = (parts[k] if len(parts) > k else None for k in (1, 2, 3))
    cache: dict[str, Tensor] = {}

    def get(key: str) -> Tensor:  # lazily computed intermediates
        if key not in cache:
            if key == "qv":
                cache[key] = (q @ v.unsqueeze(-1)).squeeze(-1)
            elif key == "qq":
                cache[key] = q @ q
            elif key == "t9":
                cache[key] = t.flatten(-3, -2)  # (..., 9, 3)
            elif key == "G":
                cache[key] = get("t9").transpose(-1, -2) @ get("t9")
            elif key == "tv":
                cache[key] = (get("t9") @ v.unsqueeze(-1)).unflatten(-2, (3, 3)).squeeze(-1)
            elif key == "qt":
                cache[key] = (q.flatten(-2).unsqueeze(-2) @ get("t9")).squeeze(-2)
        return cache[key]

    def dot(a: Tensor, b: Tensor, ndim: int) -> Tensor:
        return (a * b).sum(dim=tuple(range(-ndim, 0)))

    compute = {
        "s": lambda: m[..., 0],
        "vv": lambda: m[..., 1:4].square().sum(-1),
        "qq": lambda: m[..., 4:9].square().sum(-1),
        "tt": lambda: m[..., 9:16].square().sum(-1),
        "vqv": lambda: dot(v, get("qv"), 1),
        "qqq": lambda: dot(get("qq"), q, 2),  # q symmetric: (qq)_ik q_ki = (qq)_ik q_ik
        "qtt": lambda: dot(q, get("G"), 2),  # t symmetric: t_jkl t_ikl = G_ji
        "vvvt": lambda: dot((get("tv") @ v.unsqueeze(-1)).squeeze(-1), v, 1),
        "vqqv": lambda: get("qv").square().sum(-1),
        "vttv": lambda: get("tv").square().sum((-2, -1)),
        "qqtt": lambda: dot(get("qq"), get("G"), 2),
        "qttq": lambda: get("qt").square().sum(-1),
        "tttt": lambda: get("G").square().sum((-2, -1)),
    }
    return torch.stack([compute[name]() for name in names], dim=-1)
