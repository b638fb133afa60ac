"""Small untrained HIP-NN packages over the demo shards' elements, with heads whose E0 come from the manifest."""

from __future__ import annotations

from pathlib import Path

import torch

from polyfid.data_shards.manifest import Manifest
from polyfid.models import Hipnn, HipnnConfig, PolyfidModel, build_model
from polyfid.models.package import save_package


def small_package(shards: Path, levels: tuple[str, ...], path: Path) -> tuple[Path, PolyfidModel]:
    manifest = Manifest.load(shards)
    torch.manual_seed(0)
    backbone = Hipnn(HipnnConfig(elements=manifest.elements, n_features=16, n_sensitivities=8, n_atom_layers=1))
    model = build_model(backbone, {lv: manifest.levels[lv] for lv in levels})
    return save_package(path, model, provenance={"note": "test"}), model
