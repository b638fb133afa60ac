"""A polyfid head as a TorchSim model (`torch-sim-atomistic`): batched MD, relaxation and static evaluation of many
systems in one call, on the model's device, with no trip through ASE."""

from __future__ import annotations

from pathlib import Path

import torch
from torch_sim.models.interface import ModelInterface
from torch_sim.state import SimState

from polyfid.data_shards.record import normalize_level
from polyfid.data_shards.stream.batch import Batch
from polyfid.models.heads import UnknownHeadError
from polyfid.models.package import LoadedPackage, load_package


class PolyfidTorchSimModel(ModelInterface):
    """energy (S,), forces (A, 3) and, when `compute_stress` and the state is periodic, stress (S, 3, 3; eV/A^3,
    (1/V) dE/d(strain), the ASE sign) from head `level` of a package, in TorchSim's metal units (eV, A).

    The model is cast to `dtype` (TorchSim's states carry it; float64 suits MD). Structures are neutral singlets
    (TorchSim's state has no charge or spin). A Delta-learning head needs its baseline method and is refused.
    """

    def __init__(
        self,
        package: str | Path | LoadedPackage,
        level: str,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
        compute_stress: bool = True,
    ):
        super().__init__()
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._dtype = dtype
        self._compute_forces = True
        self._compute_stress = compute_stress
        loaded = package if isinstance(package, LoadedPackage) else load_package(package, self._device)
        self.model = loaded.model.to(device=self._device, dtype=dtype).eval()
        self.level = normalize_level(level)
        if self.level not in self.model.head_names:
            heads = self.model.head_names
            raise UnknownHeadError(f"level {level!r} is not a head of this package; choose one of {heads}")
        if self.level in self.model.heads.baselines:
            raise UnknownHeadError(f"head {self.level!r} is a Delta-learning correction: TorchSim has no baseline")
        self.cutoff = self.model.backbone.cutoff

    def forward(self, state: SimState | dict, **_: object) -> dict[str, torch.Tensor]:
        if isinstance(state, dict):
            state = SimState(**state, masses=torch.ones_like(state["positions"][:, 0]))
        n_systems = int(state.n_systems)
        pbc = torch.full((n_systems, 3), bool(state.pbc), dtype=torch.bool, device=self._device)
        batch = Batch.unlabelled(
            state.atomic_numbers, state.positions, state.system_idx, n_systems, state.row_vector_cell, pbc
        )
        stress = self._compute_stress and bool(state.pbc)
        out = self.model(batch, [self.level], compute_forces=True, compute_stress=stress)
        result = {"energy": out.energy[:, 0].to(self._dtype).detach(), "forces": out.forces[:, 0].detach()}
        if self._compute_stress:
            result["stress"] = (
                out.stress[:, 0].detach()
                if stress
                else torch.zeros(n_systems, 3, 3, dtype=self._dtype, device=self._device)
            )
        return result
