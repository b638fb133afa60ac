"""Per-level-of-theory hierarchical energy heads and the explicit, name-addressed set of them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from polyfid.core.errors import PolyfidError
from polyfid.data_shards.manifest import LevelStats


class UnknownHeadError(PolyfidError, ValueError):
    """A head name the model does not have."""


class EnergyHead(nn.Module):
    """E = sum_i E0[Z_i] + scale * sum_{l>=1} sum_i w_l . (z_i^(l) - z_iso^(l)[Z_i]).

    E0 (eV, float64 buffer) comes from the level's least-squares fit when `stats` is given (0 otherwise, and for
    elements the fit did not see). Features are taken relative to those of an isolated atom of the same element
    (`reference`), so an isolated atom's energy is exactly its E0 and the head has no bias. `scale` (buffer) is the
    level's residual per-atom std when `normalize` and known, else 1. `embedding`: the level's fidelity embedding,
    added to the trunk's one-hot input when the model is conditioned (PolyfidModel.fidelity_embedding).
    """

    def __init__(
        self,
        feature_sizes: Sequence[int],
        elements: Sequence[int],
        stats: LevelStats | None = None,
        normalize: bool = True,
        embedding: bool = False,
    ):
        super().__init__()
        self.elements = [int(z) for z in elements]
        self.layers = nn.ModuleList(nn.Linear(n, 1, bias=False) for n in feature_sizes[1:])
        # the level's fidelity embedding (conditions the trunk's input; starts at zero: the unconditioned trunk)
        self.embedding = nn.Parameter(torch.zeros(feature_sizes[0])) if embedding else None
        e0 = torch.zeros(len(self.elements), dtype=torch.float64)
        scale = 1.0
        if stats is not None:
            unknown = sorted(set(int(z) for z in stats.e0) - set(self.elements))
            if unknown:
                raise ValueError(f"E0 given for elements {unknown} outside the model's elements {self.elements}")
            for k, z in enumerate(self.elements):
                e0[k] = float(stats.e0.get(str(z), 0.0))
            if normalize and stats.residual_per_atom_std > 0:
                scale = float(stats.residual_per_atom_std)
        self.register_buffer("e0", e0)
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float64))

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        # keep E0 and scale float64 (total energies need it) whatever dtype the module is cast to
        keep = {"e0": self.e0, "scale": self.scale}
        super()._apply(fn, recurse)
        for name, old in keep.items():
            setattr(self, name, old.to(device=getattr(self, name).device, dtype=torch.float64))
        return self


class EnergyHeads(nn.Module):
    """Heads in a ModuleList addressed by `head_names` (level names contain '/', '(', '*': not usable as keys).

    A delta head (`bases[name]` = another head) predicts its base head's network energy plus its own correction:
    its layer weights are added to the base's, its E0 is its own. A high level fitted on a few energies then
    inherits the forces of a low level fitted on many forces, and learns only the difference.

    A head with a baseline (`baselines[name]` = a level of theory computed outside the model, such as GFN2-xTB)
    predicts only the difference of its level from that method (Delta-learning): its level's energy is the
    baseline method's plus the head's, which is what the calculator and `evaluate` add.
    """

    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleList()
        self.head_names: list[str] = []
        self.bases: dict[str, str] = {}
        self.baselines: dict[str, str] = {}

    def add(self, name: str, head: EnergyHead, base: str | None = None) -> None:
        if name in self.head_names:
            raise ValueError(f"head {name!r} already exists")
        if base is not None:
            self.indices([base])  # the base must exist (so bases never form a cycle)
            self.bases[name] = base
        self.heads.append(head)
        self.head_names.append(name)

    def _weight(self, name: str, layer: int) -> torch.Tensor:
        """(1, F_l) the head's effective, scaled layer weights (its bases' added)."""
        head = self[name]
        w = head.layers[layer].weight * head.scale.to(head.layers[layer].weight.dtype)
        return w + self._weight(self.bases[name], layer) if name in self.bases else w

    def __len__(self) -> int:
        return len(self.head_names)

    def __getitem__(self, name: str) -> EnergyHead:
        return self.heads[self.indices([name])[0]]

    def indices(self, names: Sequence[str]) -> list[int]:
        if isinstance(names, str):
            raise TypeError(f"heads must be a sequence of names, got the string {names!r}")
        if not names:
            raise ValueError(f"choose at least one head among {self.head_names}")
        missing = [n for n in names if n not in self.head_names]
        if missing:
            raise UnknownHeadError(f"unknown head(s) {missing}; available: {self.head_names}")
        return [self.head_names.index(n) for n in names]

    def forward(
        self,
        features: Sequence[torch.Tensor],
        reference: Sequence[torch.Tensor],
        species: torch.Tensor,
        batch: torch.Tensor,
        n_structures: int,
        indices: Sequence[int],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (e0_sum (S, H) float64, net energy (S, H) model dtype, per-layer energies (S, H, L+1) float64).

        per-layer energy l=0 is the E0 sum; l>=1 the scaled layer-l terms (their sum is the net energy).
        """
        heads = [self.heads[k] for k in indices]
        n_h = len(heads)
        e0 = torch.stack([h.e0 for h in heads], dim=1)  # (n_species, H)
        e0_sum = e0.new_zeros(n_structures, n_h).index_add(0, batch, e0[species])
        layers = []
        for ell, (z, z_ref) in enumerate(zip(features[1:], reference[1:], strict=True)):
            w = torch.cat([self._weight(self.head_names[k], ell) for k in indices], dim=0)  # (H, F_l)
            atom_e = (z - z_ref[species]) @ w.t()  # (A, H)
            layers.append(atom_e.new_zeros(n_structures, n_h).index_add(0, batch, atom_e))
        stacked = torch.stack(layers, dim=2) if layers else e0_sum.new_zeros(n_structures, n_h, 0)
        net = stacked.sum(dim=2)
        per_layer = torch.cat([e0_sum[:, :, None], stacked.double()], dim=2)
        return e0_sum, net, per_layer

    def get_extra_state(self) -> dict:
        return {"head_names": list(self.head_names), "bases": dict(self.bases), "baselines": dict(self.baselines)}

    def set_extra_state(self, state: dict) -> None:
        if list(state["head_names"]) != self.head_names:
            raise ValueError(
                f"checkpoint heads {state['head_names']} differ from this model's {self.head_names}: "
                "add the same heads in the same order before loading"
            )
        bases = {str(k): str(v) for k, v in dict(state.get("bases", {})).items()}
        unknown = sorted({*bases, *bases.values()} - set(self.head_names))
        if unknown:
            raise ValueError(f"delta heads name unknown heads {unknown}")
        baselines = {str(k): str(v) for k, v in dict(state.get("baselines", {})).items()}
        if unknown := sorted(set(baselines) - set(self.head_names)):
            raise ValueError(f"baselines name unknown heads {unknown}")
        self.bases, self.baselines = bases, baselines


def hierarchicality(per_layer_energy: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean over structures and heads of sum_{l>=1} E_l^2 / (E_l^2 + E_{l-1}^2) (dimensionless; weight it small)."""
    e2 = per_layer_energy**2
    return (e2[..., 1:] / (e2[..., 1:] + e2[..., :-1] + eps)).sum(-1).mean()
