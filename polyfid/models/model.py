"""PolyfidModel: a shared backbone, explicit per-level energy heads, forces (and stress) by autograd in forward."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from polyfid.data_shards.manifest import LevelStats
from polyfid.data_shards.stream.batch import Batch, UnsupportedStateError
from polyfid.models.graph import Graph, build_graph
from polyfid.models.heads import EnergyHead, EnergyHeads
from polyfid.models.species import SpeciesIndex


class Backbone(Protocol):
    """What PolyfidModel needs from a trunk (HIP-NN, HIP-NN-TS, HIP-HOP-NN)."""

    elements: list[int]
    cutoff: float
    feature_sizes: list[int]  # widths of the per-layer features, l = 0 (one-hot) first
    dtype: torch.dtype

    def __call__(self, species: torch.Tensor, graph: Graph) -> list[torch.Tensor]: ...


@dataclass
class ModelOutput:
    heads: list[str]  # the head of each column
    energy: torch.Tensor  # (S, H) float64, eV
    forces: torch.Tensor | None  # (A, H, 3) model dtype, eV/A
    per_layer_energy: torch.Tensor  # (S, H, L+1) float64; l=0 is the E0 sum (for the hierarchicality penalty)
    stress: torch.Tensor | None = None  # (S, H, 3, 3) eV/A^3, (1/V) dE/d(strain); 0 for non-periodic structures
    graph: Graph | None = None


class StateEmbedding(nn.Module):
    """Total charge and spin condition the trunk: each atom's one-hot input gets charge * q + (multiplicity - 1) * s
    of its structure (two learned vectors, starting at zero), so a neutral singlet sees the unconditioned trunk and
    every layer (neighbours' inputs included) learns how the state changes the features; isolated-atom references
    stay neutral, so the state's energy is the network's to learn."""

    def __init__(self, n_species: int):
        super().__init__()
        self.charge = nn.Parameter(torch.zeros(n_species))
        self.spin = nn.Parameter(torch.zeros(n_species))

    def forward(self, batch: Batch) -> torch.Tensor:
        """(A, n_species) per-atom condition."""
        q = batch.charge.to(self.charge)[batch.batch, None]
        s = (batch.multiplicity - 1).to(self.spin)[batch.batch, None]
        return q * self.charge + s * self.spin


class PolyfidModel(nn.Module):
    """forward(batch, heads) -> ModelOutput. Heads are always chosen by name; there is no default head.

    `fidelity_embedding`: every head carries a learned embedding of its level that conditions the trunk (added to
    the one-hot input), so each level gets its own features from shared weights; the trunk then runs once per
    requested head instead of once per batch. `charge_spin`: the structures' total charge and multiplicity condition
    the trunk (StateEmbedding); without it a charged or open-shell structure is refused, never run as neutral.
    """

    def __init__(
        self,
        backbone: nn.Module,
        heads: EnergyHeads | None = None,
        fidelity_embedding: bool = False,
        charge_spin: bool = False,
    ):
        super().__init__()
        if (fidelity_embedding or charge_spin) and not getattr(backbone, "accepts_condition", False):
            raise ValueError(f"{type(backbone).__name__} takes no condition (fidelity embedding, charge and spin)")
        self.backbone = backbone
        self.heads = heads if heads is not None else EnergyHeads()
        self.species = SpeciesIndex(backbone.elements)
        self.fidelity_embedding = fidelity_embedding
        self.state = StateEmbedding(len(backbone.elements)).to(backbone.dtype) if charge_spin else None

    @property
    def charge_spin(self) -> bool:
        return self.state is not None

    def _state(self, batch: Batch) -> torch.Tensor | None:
        """The per-atom charge/spin condition; None for a model without one (which refuses non-neutral states)."""
        if self.state is not None:
            return self.state(batch)
        odd = (batch.charge != 0) | (batch.multiplicity != 1)
        if bool(odd.any()):
            s = int(odd.nonzero()[0])
            raise UnsupportedStateError(
                f"record {batch.ids[s]!r}: charge {int(batch.charge[s]):+d}, multiplicity {int(batch.multiplicity[s])}:"
                " this model describes neutral closed-shell structures only (built without model.charge_spin), and "
                "refuses to run a charged or open-shell one as neutral; leave the dataset out (data.datasets / "
                "target.datasets) or train a model with charge_spin: true"
            )
        return None

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.dtype

    @property
    def head_names(self) -> list[str]:
        return list(self.heads.head_names)

    def add_head(
        self, name: str, stats: LevelStats | None = None, normalize: bool = True, base: str | None = None
    ) -> EnergyHead:
        """New head for level `name` (fine-tuning: the trunk and other heads are untouched). `base`: a delta head,
        the base head's network energy plus a correction that starts at zero."""
        ref = next(self.backbone.parameters())
        head = EnergyHead(
            self.backbone.feature_sizes, self.backbone.elements, stats, normalize, embedding=self.fidelity_embedding
        )
        if base is not None:
            for layer in head.layers:
                nn.init.zeros_(layer.weight)
        head.to(device=ref.device, dtype=ref.dtype)
        self.heads.add(name, head, base)
        return head

    def _trunk(self, species: torch.Tensor, graph: Graph, condition: torch.Tensor | None) -> list[torch.Tensor]:
        return self.backbone(species, graph) if condition is None else self.backbone(species, graph, condition)

    def isolated_features(self, like: torch.Tensor, condition: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Backbone features of one isolated atom of every element (rows in element order)."""
        species = torch.arange(len(self.backbone.elements), device=like.device)
        return self._trunk(species, Graph.empty(like), condition)

    def _layers(
        self, batch: Batch, pos: torch.Tensor, cell: torch.Tensor
    ) -> tuple[Graph, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """(graph, species, per-layer features, isolated-atom features) at positions `pos` in cells `cell` (no
        fidelity condition; the charge/spin one when the model has it)."""
        graph = build_graph(pos, batch.batch, batch.n_atoms, self.backbone.cutoff, cell, batch.pbc)
        species = self.species(batch.numbers)
        return graph, species, self._trunk(species, graph, self._state(batch)), self.isolated_features(pos)

    def _energies(
        self, batch: Batch, pos: torch.Tensor, cell: torch.Tensor, indices: list[int]
    ) -> tuple[Graph, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(graph, E0 sums, net energies, per-layer energies) of the heads `indices`: one trunk pass, or one per
        head when the trunk is conditioned on each head's fidelity embedding."""
        graph = build_graph(pos, batch.batch, batch.n_atoms, self.backbone.cutoff, cell, batch.pbc)
        species = self.species(batch.numbers)
        n_struct = int(batch.n_atoms.shape[0])
        return graph, *self.graph_energies(species, graph, batch.batch, n_struct, indices, self._state(batch))

    def graph_energies(
        self,
        species: torch.Tensor,
        graph: Graph,
        batch: torch.Tensor,
        n_struct: int,
        indices: list[int],
        state: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(E0 sums, net energies, per-layer energies) of the heads `indices` on a built graph (`state`: the
        charge/spin condition): one trunk pass, or one per head when each head's fidelity embedding conditions it.
        Free of data-dependent control flow, so the compiled inference path exports it."""
        if not self.fidelity_embedding:
            features = self._trunk(species, graph, state)
            return self.heads(features, self.isolated_features(graph.vec), species, batch, n_struct, indices)
        parts = []
        for k in indices:
            condition = self.heads.heads[k].embedding
            atoms = condition if state is None else condition + state
            features, reference = self._trunk(species, graph, atoms), self.isolated_features(graph.vec, condition)
            parts.append(self.heads(features, reference, species, batch, n_struct, [k]))
        return tuple(torch.cat(columns, dim=1) for columns in zip(*parts, strict=True))

    def features(self, batch: Batch) -> torch.Tensor:
        """(A, F) per-atom features the energy heads are linear in: each layer's (l >= 1) features relative to an
        isolated atom of the same element, concatenated (the linear baseline regresses on their sums)."""
        _, species, features, reference = self._layers(batch, batch.positions.to(self.dtype), batch.cell.to(self.dtype))
        return torch.cat([z - z0[species] for z, z0 in zip(features[1:], reference[1:], strict=True)], dim=1)

    def forward(
        self,
        batch: Batch,
        heads: Sequence[str],
        compute_forces: bool = True,
        compute_stress: bool = False,
        force_heads: Sequence[str] | None = None,
    ) -> ModelOutput:
        """Energies of `heads`; forces (and stress) of `force_heads` (default: all of `heads`; the other columns
        are zero). Each differentiated head costs one backward pass: training asks only for heads with labels."""
        indices = self.heads.indices(heads)
        names = [self.heads.head_names[k] for k in indices]
        if force_heads is None:
            force_cols = list(range(len(names)))
        else:
            unknown = sorted(set(force_heads) - set(names))
            if unknown:
                raise ValueError(f"force_heads {unknown} are not among the requested heads {names}")
            force_cols = [c for c, n in enumerate(names) if n in force_heads]
        outer_grad = torch.is_grad_enabled()
        create_graph = self.training and outer_grad
        dtype = self.dtype
        with torch.enable_grad():
            pos = batch.positions.to(dtype)
            if compute_forces and not pos.requires_grad:
                pos = pos.detach().requires_grad_(True)
            pos_in = pos
            cell = batch.cell.to(dtype)
            n_struct = int(batch.n_atoms.shape[0])
            strain = None
            if compute_stress:
                strain = torch.zeros(n_struct, 3, 3, dtype=dtype, device=pos.device, requires_grad=True)
                sym = 0.5 * (strain + strain.transpose(1, 2))
                pos = pos + torch.einsum("ax,axy->ay", pos, sym[batch.batch])
                cell = cell + cell @ sym
            graph, e0_sum, net, per_layer = self._energies(batch, pos, cell, indices)
            energy = e0_sum + net.to(torch.float64)
            forces = stress = None
            if compute_forces or compute_stress:
                forces, stress = self._derivatives(
                    net, force_cols, pos_in if compute_forces else None, strain, create_graph, outer_grad
                )
                if stress is not None:
                    volume = torch.linalg.det(batch.cell.to(dtype)).abs()
                    periodic = batch.pbc.to(pos.device).any(dim=1)
                    stress = torch.where(
                        periodic[:, None, None, None], stress / volume.clamp_min(1e-12)[:, None, None, None], 0.0
                    )
        if not outer_grad:
            energy, per_layer = energy.detach(), per_layer.detach()
        return ModelOutput(names, energy, forces, per_layer, stress, graph)

    @staticmethod
    def _derivatives(
        net: torch.Tensor,
        columns: Sequence[int],
        pos: torch.Tensor | None,
        strain: torch.Tensor | None,
        create_graph: bool,
        keep_graph: bool,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Per head h in `columns`: forces -dE_h/dR (A, H, 3) and dE_h/d(strain) (S, H, 3, 3); zero elsewhere."""
        inputs = [t for t in (pos, strain) if t is not None]
        n_h = net.shape[1]
        last = columns[-1] if columns else -1
        grads: list[list[torch.Tensor]] = []
        for h in range(n_h):
            if net.requires_grad and h in columns:
                g = torch.autograd.grad(
                    net[:, h].sum(),
                    inputs,
                    create_graph=create_graph,
                    retain_graph=create_graph or keep_graph or h < last,
                    allow_unused=True,
                )
            else:
                g = (None,) * len(inputs)
            grads.append([torch.zeros_like(x) if gi is None else gi for gi, x in zip(g, inputs, strict=True)])
        out = [torch.stack([g[k] for g in grads], dim=1) for k in range(len(inputs))]
        forces = -out[0] if pos is not None else None
        stress = out[-1] if strain is not None else None
        return forces, stress


def build_model(
    backbone: nn.Module,
    levels: Mapping[str, LevelStats | None],
    normalize: bool = True,
    fidelity_embedding: bool = False,
    charge_spin: bool = False,
) -> PolyfidModel:
    """A PolyfidModel with one head per level (e.g. `manifest.levels`), in the given order."""
    model = PolyfidModel(backbone, fidelity_embedding=fidelity_embedding, charge_spin=charge_spin)
    for name, stats in levels.items():
        model.add_head(name, stats, normalize)
    return model
