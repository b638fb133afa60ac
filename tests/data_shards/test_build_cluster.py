"""`polyfid shards build --address` against a separately started Ray head (a real cluster of one node)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from polyfid.data_shards.manifest import Manifest
from tests.corpus import write_flat_ethanol
from tests.data_shards.test_build import _generic_source, _write_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_build_on_existing_ray_cluster(tmp_path: Path):
    data = write_flat_ethanol(tmp_path / "ethanol_mf.h5")
    config = _write_config(tmp_path, [_generic_source("ethanol", data, chunk_size=10)])
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    ray_bin = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", f"--port={port}", "--num-cpus=2", "--object-store-memory=100000000",
         "--include-dashboard=false", "--block"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        cmd = [sys.executable, "-m", "polyfid.cli", "shards", "build", str(config), "--out", str(tmp_path / "out")]
        deadline = time.monotonic() + 60
        while True:  # the head needs a few seconds before it accepts drivers
            proc = subprocess.run([*cmd, "--address", f"127.0.0.1:{port}", "--no-progress"], env=env,
                                  capture_output=True, text=True, timeout=120)  # fmt: skip
            if proc.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "50 structures written" in proc.stdout
        assert sum(s.n_samples for s in Manifest.load(tmp_path / "out").shards) == 50
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
