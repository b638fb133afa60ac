"""Tensor-sensitivity HIP-NN trunks: HIP-NN-TS (norm invariants, l <= 2) and HIP-HOP-NN (full contractions, l <= 3).

Both replace HIP-NN's interaction layer by :class:`TensorInteractionLayer`; blocks, atom layers, residuals and the
feature list are HIP-NN's (:class:`~polyfid.models.hipnn.Hipnn`). Per pair p = (i, j) and output feature a::

    M^(l)_{i,a} = sum_{nu,b} V^nu_{ab} sum_j s_nu(r_ij) Y^(l)(r_hat_ij) z_{j,b}      (one V for every l)

stacked over l = 0..l_max as compact components (``cartesian.harmonic_components``, K = (l_max+1)^2). Per atom and
feature the invariants I_c of M are mixed per feature and added to HIP-NN's self term::

    pre_a = I_{s,a} + sum_{c != s} lambda_{c,a} I_{c,a} + sum_b W_ab z_b + b_a       (no GroupNorm)
    pre_a = sum_c lambda_{c,a} GN_c(I_c)_a + sum_b W_ab z_b + b_a                     (per-invariant GroupNorm)

With GroupNorm every invariant loses its scale, so s gets a lambda too; without it, a lambda on s would only
duplicate a row scale of V. So HIP-HOP-NN with l_max = 0 (n_max 1 or 2: only s) is exactly HIP-NN, same parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from polyfid.models.cartesian import L_MAX, N_MAX, harmonic_components, invariants, select_invariants
from polyfid.models.graph import Graph
from polyfid.models.hipnn import Hipnn, HipnnConfig, InteractionLayer, envsum
from polyfid.models.sensitivity import InverseGaussianSensitivity


class HipHopConfig(HipnnConfig):
    """HIP-HOP-NN: HIP-NN sizes plus the tensor rank l_max, the invariant degree n_max and optional GroupNorm."""

    l_max: int = Field(3, ge=0, le=L_MAX, description="highest Cartesian tensor rank of the sensitivities")
    n_max: int = Field(4, ge=1, le=N_MAX, description="highest degree of the invariant contractions")
    group_norm: bool = Field(False, description="GroupNorm each invariant (then every invariant gets a weight)")


class HipnnTSConfig(HipnnConfig):
    """HIP-NN-TS: HIP-NN sizes plus l_max (1: vectors, 2: vectors and quadrupoles) and the norm regulariser.

    ``norm_eps`` is added under the square root of every l >= 1 norm (hippynn's ``cusp_reg``, same default): it keeps
    the norm and its first two derivatives finite where M^(l) = 0 (isolated atoms, symmetric environments), at the
    price of a smooth cusp of width ~sqrt(norm_eps) in units of M.
    """

    l_max: Literal[1, 2] = Field(2, description="1: vector sensitivities, 2: vectors and quadrupoles")
    norm_eps: float = Field(1e-6, gt=0, description="added under every l >= 1 norm's square root (smooth at 0)")


def norm_invariants(m: torch.Tensor, l_max: int, eps: float) -> torch.Tensor:
    """HIP-NN-TS invariants of compact components m (..., K): [M^(0), sqrt(|M^(l)|^2 + eps) for l = 1..l_max]."""
    cols = [m[..., 0]] + [m[..., k * k : (k + 1) ** 2].square().sum(-1).add(eps).sqrt() for k in range(1, l_max + 1)]
    return torch.stack(cols, dim=-1)


class TensorInteractionLayer(InteractionLayer):
    """Pre-activation of a tensor-sensitivity interaction (module docstring); V, W, b are HIP-NN's own parameters.

    `invariant_fn` maps compact components (A, F, K) to (A, F, n_inv), the scalar M^(0) first.
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        sensitivity: InverseGaussianSensitivity,
        l_max: int,
        invariant_fn: Callable[[torch.Tensor], torch.Tensor],
        n_invariants: int,
        group_norm: bool = False,
    ):
        super().__init__(n_in, n_out, sensitivity)
        self.l_max = l_max
        self.invariant_fn = invariant_fn
        self.norm = nn.GroupNorm(n_invariants, n_invariants * n_out, affine=False) if group_norm else None
        n_mixed = n_invariants if group_norm else n_invariants - 1
        self.mix = nn.Parameter(torch.ones(n_mixed, n_out)) if n_mixed else None

    def env_tensors(self, z: torch.Tensor, graph: Graph) -> torch.Tensor:
        """M (A, K, F_out), V applied first: u_j = V z_j per sensitivity, g_p = sum_nu s_nu u_j, M_i = sum_p Y_p g_p.

        Costs A n_sens F_in F_out + P F_out (n_sens + K) multiply-adds (vs K times the V product when V acts on the
        environment sums); kept for backward: u gathered per pair (P, n_sens, F_out), never a P x n_sens x F x K.
        """
        n_atoms, n_in = z.shape
        sens = self.sensitivity(graph.dist)
        n_sens = sens.shape[1]
        weight = self.interaction.weight.view(-1, n_sens, n_in)  # V^nu_{ab} as (a, nu, b)
        u = (z @ weight.flatten(0, 1).t()).view(n_atoms, -1, n_sens).transpose(1, 2)  # (A, n_sens, F_out)
        uj = u.flatten(1).index_select(0, graph.pair_j).view(-1, n_sens, u.shape[2])  # backward: index_add
        g = torch.bmm(sens.unsqueeze(1), uj).squeeze(1)  # (P, F_out)
        y = harmonic_components(graph.vec / graph.dist.unsqueeze(-1), self.l_max)  # (P, K)
        return envsum(y, g, graph.pair_i, None, n_atoms, graph.neighbour_slots(n_atoms))

    def forward(self, z: torch.Tensor, graph: Graph) -> torch.Tensor:
        inv = self.invariant_fn(self.env_tensors(z, graph).transpose(1, 2)).transpose(1, 2)  # (A, n_inv, F_out)
        if self.norm is not None:
            out = (self.norm(inv.flatten(1)).view_as(inv) * self.mix).sum(1)
        else:
            out = inv[:, 0] if self.mix is None else inv[:, 0] + (inv[:, 1:] * self.mix).sum(1)
        return out + self.selfint(z)


class HipHop(Hipnn):
    """HIP-HOP-NN trunk: the invariants of `cartesian.invariants` (degree <= n_max, rank <= l_max)."""

    config: HipHopConfig

    @property
    def invariant_names(self) -> list[str]:
        return select_invariants(self.config.n_max, self.config.l_max)

    def make_interaction(self, n_in: int, n_out: int, sensitivity: InverseGaussianSensitivity) -> nn.Module:
        c = self.config
        fn = partial(invariants, n_max=c.n_max, l_max=c.l_max)
        return TensorInteractionLayer(n_in, n_out, sensitivity, c.l_max, fn, len(self.invariant_names), c.group_norm)


class HipnnTS(Hipnn):
    """HIP-NN-TS trunk: the scalar plus the regularised norms of M^(1..l_max), weighted by per-feature lambdas."""

    config: HipnnTSConfig

    def make_interaction(self, n_in: int, n_out: int, sensitivity: InverseGaussianSensitivity) -> nn.Module:
        c = self.config
        fn = partial(norm_invariants, l_max=c.l_max, eps=c.norm_eps)
        return TensorInteractionLayer(n_in, n_out, sensitivity, c.l_max, fn, c.l_max + 1)
