"""Fixtures of the fine-tuning tests."""

from __future__ import annotations

import pytest

from tests.finetune.packages import small_package


@pytest.fixture(scope="module")
def source(demo_shards, tmp_path_factory):
    """A small HIP-NN package with a gfn2-xtb head (its E0 is hundreds of eV away from MP2's)."""
    return small_package(demo_shards, ("gfn2-xtb",), tmp_path_factory.mktemp("source") / "source.pt")[0]
