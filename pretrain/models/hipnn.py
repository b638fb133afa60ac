"""HIP-NN backbone (Lubbers, Smith, Barros 2018): one-hot species -> interaction blocks -> per-layer features."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from torch import nn

from pretrain.models.graph import Graph
from pretrain.models.sensitivity import InverseGaussianSensitivity

# Envsum transient budget (elements): pairs x sensitivities x features above this are processed in slices of nu.
ENVSUM_MAX_ELEMENTS = 1 << 24

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class HipnnConfig(BaseModel):
    """HIP-NN sizes; defaults are the reference settings of science.md."""

    model_config = ConfigDict(extra="forbid")

    elements: list[int]
    n_features: int = 64
    n_sensitivities: int = 20
    n_interactions: int = 2
    n_atom_layers: int = 3
    cutoff: float = 5.5
    r_soft_min: float = 0.75
    r_soft_max: float = 5.5
    dtype: Literal["float32", "float64"] = "float32"

    @field_validator("elements")
    @classmethod
    def _elements(cls, v: list[int]) -> list[int]:
        if not v or any(z < 1 for z in v):
            raise ValueError(f"elements must be positive atomic numbers, got {v}")
        return sorted(set(v))

    @model_validator(mode="after")
    def _sizes(self) -> HipnnConfig:
        if min(self.n_features, self.n_sensitivities, self.n_interactions) < 1 or self.n_atom_layers < 0:
            raise ValueError("n_features, n_sensitivities, n_interactions must be >= 1, n_atom_layers >= 0")
        if not 0 < self.r_soft_min < self.r_soft_max or self.cutoff <= self.r_soft_min:
            raise ValueError("need 0 < r_soft_min < r_soft_max and r_soft_min < cutoff")
        return self

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def envsum(
    sens: torch.Tensor, z: torch.Tensor, pair_i: torch.Tensor, pair_j: torch.Tensor, n_atoms: int
) -> torch.Tensor:
    """e[i, nu, b] = sum_{pairs (i, j)} sens[p, nu] z[j, b] -> (A, n_sens, F).

    Only the inputs are kept for backward (the P x n_sens x F product feeds index_add, whose backward needs only
    the index); the transient product is sliced over nu to stay under ENVSUM_MAX_ELEMENTS.
    """
    n_pairs, n_sens = sens.shape
    n_feat = z.shape[1]
    zj = z[pair_j]
    step = max(1, min(n_sens, ENVSUM_MAX_ELEMENTS // max(n_pairs * n_feat, 1)))
    parts = []
    for a in range(0, n_sens, step):
        k = min(step, n_sens - a)
        prod = (sens[:, a : a + k, None] * zj[:, None, :]).reshape(n_pairs, k * n_feat)
        parts.append(z.new_zeros(n_atoms, k * n_feat).index_add(0, pair_i, prod).view(n_atoms, k, n_feat))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class InteractionLayer(nn.Module):
    """sum_{nu,b} V^nu_{ab} e_{i,nu,b} + sum_b W_{ab} z_{i,b} + b_a (pre-activation)."""

    def __init__(self, n_in: int, n_out: int, sensitivity: InverseGaussianSensitivity):
        super().__init__()
        self.sensitivity = sensitivity
        n_sens = sensitivity.n_sensitivities
        self.interaction = nn.Linear(n_sens * n_in, n_out, bias=False)  # V, flattened over (nu, b)
        self.selfint = nn.Linear(n_in, n_out)  # W, b
        nn.init.xavier_normal_(self.interaction.weight)

    def forward(self, z: torch.Tensor, graph: Graph) -> torch.Tensor:
        sens = self.sensitivity(graph.dist)
        env = envsum(sens, z, graph.pair_i, graph.pair_j, z.shape[0])
        return self.interaction(env.reshape(z.shape[0], -1)) + self.selfint(z)


class ResidualBlock(nn.Module):
    """out = res(softplus(base(x, ...))) + adjust(x), adjust = identity when widths match (hippynn's ResNetWrapper).

    The residual linear has no bias: a bias there would only shift energies per atom, which the isolated-atom
    reference of the heads cancels (a dead parameter).
    """

    def __init__(self, base: nn.Module, n_in: int, n_mid: int, n_out: int):
        super().__init__()
        self.base = base
        self.res = nn.Linear(n_mid, n_out, bias=False)
        self.adjust = nn.Linear(n_in, n_out, bias=False) if n_in != n_out else None

    def forward(self, x: torch.Tensor, *args: object) -> torch.Tensor:
        out = self.res(F.softplus(self.base(x, *args) if args else self.base(x)))
        return out + (x if self.adjust is None else self.adjust(x))


class Hipnn(nn.Module):
    """HIP-NN trunk. forward(species, graph) -> [z^(0) one-hot, z^(1), ..., z^(n_interactions)].

    Each z^(l) (l >= 1) is the output of interaction block l followed by its atom layers.
    """

    def __init__(self, config: HipnnConfig):
        super().__init__()
        self.config = config
        self.elements = list(config.elements)
        self.cutoff = float(config.cutoff)
        n_sp, nf = len(self.elements), config.n_features
        self.feature_sizes = [n_sp] + [nf] * config.n_interactions
        blocks = []
        for n_in in self.feature_sizes[:-1]:
            sens = InverseGaussianSensitivity(
                config.n_sensitivities, config.r_soft_min, config.r_soft_max, config.cutoff
            )
            layers = [ResidualBlock(InteractionLayer(n_in, nf, sens), n_in, nf, nf)]
            layers += [ResidualBlock(nn.Linear(nf, nf), nf, nf, nf) for _ in range(config.n_atom_layers)]
            blocks.append(nn.ModuleList(layers))
        self.blocks = nn.ModuleList(blocks)
        self.to(config.torch_dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.blocks[0][0].res.weight.dtype

    def forward(self, species: torch.Tensor, graph: Graph) -> list[torch.Tensor]:
        z = F.one_hot(species, len(self.elements)).to(self.dtype)
        features = [z]
        for block in self.blocks:
            z = block[0](z, graph)
            for layer in block[1:]:
                z = layer(z)
            features.append(z)
        return features
