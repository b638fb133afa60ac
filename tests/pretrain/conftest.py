"""Model tests run tiny tensor ops: one intra-op thread is faster and far less sensitive to CPU contention."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def demo_shards(tmp_path_factory):
    """The project's demo corpus built into real shards once per session (Ray build, as `polyfid shards build`)."""
    from pathlib import Path

    from data_shards.build import build_shards
    from data_shards.sources import load_build_config

    sources = Path(__file__).resolve().parents[2] / "data_shards" / "demo_corpus" / "sources.yaml"
    out = tmp_path_factory.mktemp("demo") / "shards"
    build_shards(load_build_config(sources), out, progress=False)
    return out
