"""HIP-NN backbone (Lubbers, Smith, Barros 2018): one-hot species -> interaction blocks -> per-layer features."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from polyfid.models.graph import Graph, neighbour_slots
from polyfid.models.sensitivity import InverseGaussianSensitivity

# Envsum transient budget (elements): pairs x sensitivities x features above this are processed in slices of nu.

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class HipnnConfig(BaseModel):
    """HIP-NN sizes; defaults are the reference settings of science.md."""

    model_config = ConfigDict(extra="forbid")

    elements: list[int] = Field(description="atomic numbers the model knows (default in a config: the shards')")
    n_features: int = Field(64, description="width of every interaction and atom layer")
    n_sensitivities: int = Field(20, description="inverse-distance Gaussian sensitivity functions per pair")
    n_interactions: int = Field(2, description="interaction blocks (each: interaction layer + atom layers)")
    n_atom_layers: int = Field(3, description="residual atom layers after each interaction layer")
    cutoff: float = Field(5.5, description="pair cutoff radius (Angstrom; cos^2 switch to 0 at it)")
    r_soft_min: float = Field(0.75, description="smallest sensitivity centre (Angstrom)")
    r_soft_max: float = Field(5.5, description="largest sensitivity centre (Angstrom)")
    dtype: Literal["float32", "float64"] = Field("float32", description="floating point type of the weights")

    @field_validator("elements")
    @classmethod
    def _elements(cls, v: list[int] | None) -> list[int] | None:
        if v is None:  # a pretraining config's settings: the shards' elements are filled in later
            return v
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
    sens: torch.Tensor,
    z: torch.Tensor,
    pair_i: torch.Tensor,
    pair_j: torch.Tensor | None,
    n_atoms: int,
    slots: torch.Tensor | None = None,
) -> torch.Tensor:
    """e[i, nu, b] = sum_{pairs (i, j)} sens[p, nu] z[j, b] -> (A, n_sens, F).

    `pair_j=None` means z is already per pair (P, F): e[i, nu, b] = sum_{pairs p of i} sens[p, nu] z[p, b].
    Pairs are grouped by centre atom into zero-padded blocks of K = max neighbours, so the sum is one batched
    matmul (A, n_sens, K) @ (A, K, F): no P x n_sens x F tensor exists, and backward and double backward are
    batched matmuls too (measured 2.2x faster than scattering per-sensitivity products). `slots`: those blocks'
    pair indices when already known (Graph.slots, built once per graph).
    """
    zj = z if pair_j is None else z[pair_j]
    idx = neighbour_slots(pair_i, n_atoms) if slots is None else slots  # (A, K); n_pairs marks an empty slot
    s_pad = torch.cat([sens, sens.new_zeros(1, sens.shape[1])])[idx]
    z_pad = torch.cat([zj, zj.new_zeros(1, zj.shape[1])])[idx]
    return torch.bmm(s_pad.transpose(1, 2), z_pad)


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
        env = envsum(sens, z, graph.pair_i, graph.pair_j, z.shape[0], graph.neighbour_slots(z.shape[0]))
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

    accepts_condition = True  # forward(species, graph, condition): fidelity embeddings, charge and spin

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
            layers = [ResidualBlock(self.make_interaction(n_in, nf, sens), n_in, nf, nf)]
            layers += [ResidualBlock(nn.Linear(nf, nf), nf, nf, nf) for _ in range(config.n_atom_layers)]
            blocks.append(nn.ModuleList(layers))
        self.blocks = nn.ModuleList(blocks)
        self.to(config.torch_dtype)

    def make_interaction(self, n_in: int, n_out: int, sensitivity: InverseGaussianSensitivity) -> nn.Module:
        """The pre-activation interaction layer of a block (overridden by the tensor-sensitivity trunks)."""
        return InteractionLayer(n_in, n_out, sensitivity)

    @property
    def dtype(self) -> torch.dtype:
        return self.blocks[0][0].res.weight.dtype

    def forward(self, species: torch.Tensor, graph: Graph, condition: torch.Tensor | None = None) -> list[torch.Tensor]:
        """`condition` (n_species,) or (A, n_species): a level's fidelity embedding and/or each atom's charge/spin
        condition added to the one-hot inputs, so the whole trunk (neighbours' inputs included) computes level- and
        state-specific features."""
        z = F.one_hot(species, len(self.elements)).to(self.dtype)
        if condition is not None:
            z = z + condition.to(self.dtype)
        features = [z]
        for block in self.blocks:
            z = block[0](z, graph)
            for layer in block[1:]:
                z = layer(z)
            features.append(z)
        return features
