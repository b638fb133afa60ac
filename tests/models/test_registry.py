"""Every registered backbone runs the shipped model tests, fresh and after a package round trip."""

from __future__ import annotations

import importlib
import pkgutil

import tests.models
from polyfid.models.registry import BACKBONES
from polyfid.models.testing.mixins import ModelTestMixin


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def test_every_registered_backbone_has_a_mixin_subclass_fresh_and_packaged():
    for module in pkgutil.iter_modules(tests.models.__path__):
        importlib.import_module(f"tests.models.{module.name}")
    tested = {(c.kind, c.packaged) for c in _subclasses(ModelTestMixin) if c.__name__.startswith("Test")}
    missing = sorted({(kind, packaged) for kind in BACKBONES for packaged in (False, True)} - tested)
    assert not missing, f"registered backbones without ModelTestMixin subclasses (kind, packaged): {missing}"
