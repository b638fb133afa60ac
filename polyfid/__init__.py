"""polyfid: pretrain one machine-learning interatomic potential on many QM datasets at different levels of theory
(one energy head per level), then fine-tune it to small high-level sets.

The public API, imported on first use (so `import polyfid` stays fast)::

    from polyfid import PolyfidCalculator, load_package
    calc = PolyfidCalculator(load_package("model.pt"), level="mp2/cc-pvdz")

Layers (enforced by the import contract in pyproject.toml): polyfid.core < polyfid.data_shards < polyfid.models <
polyfid.pretrain < polyfid.finetune < polyfid.cli.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polyfid.core.errors import ConfigError, PolyfidError
    from polyfid.data_shards.stream import Batch, StreamConfig, StreamPlan
    from polyfid.finetune.config import FinetuneConfig, load_finetune_config
    from polyfid.finetune.run import run_finetune
    from polyfid.models import PolyfidModel, build_model
    from polyfid.models.calculator import PolyfidCalculator
    from polyfid.models.package import LoadedPackage, load_package, save_package
    from polyfid.models.registry import BACKBONES, build_backbone
    from polyfid.pretrain.config import PretrainConfig, load_config
    from polyfid.pretrain.launch import launch

# public name -> module that defines it
_API = {
    "PolyfidCalculator": "polyfid.models.calculator",
    "load_package": "polyfid.models.package",
    "save_package": "polyfid.models.package",
    "LoadedPackage": "polyfid.models.package",
    "PolyfidModel": "polyfid.models",
    "build_model": "polyfid.models",
    "BACKBONES": "polyfid.models.registry",
    "build_backbone": "polyfid.models.registry",
    "Batch": "polyfid.data_shards.stream",
    "StreamConfig": "polyfid.data_shards.stream",
    "StreamPlan": "polyfid.data_shards.stream",
    "PretrainConfig": "polyfid.pretrain.config",
    "load_config": "polyfid.pretrain.config",
    "launch": "polyfid.pretrain.launch",
    "FinetuneConfig": "polyfid.finetune.config",
    "load_finetune_config": "polyfid.finetune.config",
    "run_finetune": "polyfid.finetune.run",
    "PolyfidError": "polyfid.core.errors",
    "ConfigError": "polyfid.core.errors",
}
__all__ = [
    "BACKBONES",
    "Batch",
    "ConfigError",
    "FinetuneConfig",
    "LoadedPackage",
    "PolyfidCalculator",
    "PolyfidError",
    "PolyfidModel",
    "PretrainConfig",
    "StreamConfig",
    "StreamPlan",
    "build_backbone",
    "build_model",
    "launch",
    "load_config",
    "load_finetune_config",
    "load_package",
    "run_finetune",
    "save_package",
]  # the keys of _API (tests/test_api.py)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'polyfid' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
