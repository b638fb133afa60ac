"""HIP-NN through the shared model tests, plus HIP-NN specifics."""

from __future__ import annotations

import pytest
import torch

from polyfid.models import Hipnn, HipnnConfig
from polyfid.models.testing.mixins import ModelTestMixin
from polyfid.models.testing.structures import ELEMENTS

SMALL = dict(n_features=16, n_sensitivities=8, n_interactions=2, n_atom_layers=2, cutoff=4.0)


def small_config(dtype: str = "float64", **kw) -> HipnnConfig:
    return HipnnConfig(**{"elements": ELEMENTS, **SMALL, **kw, "dtype": dtype})


class TestHipnn(ModelTestMixin):
    kind, settings = "hipnn", SMALL


class TestHipnnPackaged(TestHipnn):
    packaged = True


class TestHipnnConditionedPackaged(TestHipnn):
    """Fidelity embeddings (a trunk pass per head) and a delta head, reloaded from a package."""

    packaged = conditioned = True


def test_config_validation():
    assert HipnnConfig(elements=[8, 1, 1]).elements == [1, 8]
    with pytest.raises(ValueError):
        HipnnConfig(elements=[1], r_soft_min=2.0, r_soft_max=1.0)
    with pytest.raises(ValueError):
        HipnnConfig(elements=[1], n_featurs=3)
    with pytest.raises(ValueError):
        HipnnConfig(elements=[])


def test_dtype_and_feature_sizes():
    net = Hipnn(small_config("float32"))
    assert net.dtype == torch.float32 and all(p.dtype == torch.float32 for p in net.parameters())
    assert net.feature_sizes == [4, 16, 16]
    assert Hipnn(small_config("float64")).dtype == torch.float64
