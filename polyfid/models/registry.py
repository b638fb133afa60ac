"""Backbone registry: the architecture kind written into a model package -> (its pydantic config, its module).

Adding a backbone is one line here: ``"kind": (ItsConfig, ItsModule)``. The module's constructor takes the config
(``Module(config)``) and keeps it as ``module.config``; packages store ``config.model_dump(mode="json")``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from torch import nn

from polyfid.core.errors import PolyfidError
from polyfid.models.hiphop import HipHop, HipHopConfig, HipnnTS, HipnnTSConfig
from polyfid.models.hipnn import Hipnn, HipnnConfig

BACKBONES: dict[str, tuple[type[BaseModel], type[nn.Module]]] = {
    "hipnn": (HipnnConfig, Hipnn),
    "hipnn_ts": (HipnnTSConfig, HipnnTS),
    "hiphop": (HipHopConfig, HipHop),
}


class UnknownBackboneError(PolyfidError, ValueError):
    """A backbone kind (or class) that is not in :data:`BACKBONES`."""


def backbone_kind(backbone: nn.Module) -> str:
    """The registry kind of a backbone instance (exact class match)."""
    for kind, (_, cls) in BACKBONES.items():
        if type(backbone) is cls:
            return kind
    raise UnknownBackboneError(
        f"backbone class {type(backbone).__name__} is not registered in polyfid.models.registry.BACKBONES "
        f"(known kinds: {sorted(BACKBONES)})"
    )


def backbone_spec(backbone: nn.Module) -> dict[str, Any]:
    """``{"kind": ..., "config": <plain data>}`` describing how to rebuild `backbone` (weights not included)."""
    kind = backbone_kind(backbone)
    config = getattr(backbone, "config", None)
    if not isinstance(config, BaseModel):
        raise UnknownBackboneError(f"backbone {kind!r} has no pydantic `config` attribute to record")
    return {"kind": kind, "config": config.model_dump(mode="json")}


def build_backbone(kind: str, config: dict[str, Any]) -> nn.Module:
    """A freshly initialised backbone of registered `kind` from its config as plain data."""
    try:
        config_cls, module_cls = BACKBONES[kind]
    except KeyError:
        raise UnknownBackboneError(
            f"backbone kind {kind!r} is not known to this polyfid (known: {sorted(BACKBONES)}); "
            "a newer polyfid may be needed"
        ) from None
    return module_cls(config_cls.model_validate(config))
