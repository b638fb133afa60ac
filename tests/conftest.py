"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """One small local Ray for the whole session (2-core machines: logical CPUs oversubscribed, object store capped)."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        # address="local": our own instance even when another Ray cluster runs on this machine
        ray.init(
            address="local", num_cpus=4, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False
        )
        ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def demo_shards(tmp_path_factory):
    """The project's demo corpus built into real shards once per session (Ray build, as `polyfid shards build`)."""
    from pathlib import Path

    from polyfid.data_shards.build import build_shards
    from polyfid.data_shards.sources import load_build_config

    sources = Path(__file__).resolve().parents[1] / "data_shards" / "demo_corpus" / "sources.yaml"
    out = tmp_path_factory.mktemp("demo") / "shards"
    build_shards(load_build_config(sources), out, progress=False)
    return out


def _hypothesis_profile() -> None:
    """Fuzzing budget: a fixed, bounded run in CI (no per-example deadline: 2-core machines are noisy)."""
    from hypothesis import HealthCheck, settings

    common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
    settings.register_profile("polyfid", max_examples=60, derandomize=True, **common)  # CI: fixed, bounded
    settings.register_profile("deep", max_examples=1000, **common)  # POLYFID_HYPOTHESIS_PROFILE=deep: hunt
    settings.load_profile(os.environ.get("POLYFID_HYPOTHESIS_PROFILE", "polyfid"))


_hypothesis_profile()
