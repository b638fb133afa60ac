"""Against a real `mlflow server` on loopback: register a pretrained package there, fine-tune from its registry URI
with tracking on the server (multi-fidelity auxiliary level, a learning curve and a scan included), and load the
registered fine-tune back from the server as a pyfunc model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from polyfid.core.tracking import Tracker, TrackingSection
from polyfid.models.package import PYFUNC_CODE
from polyfid.pretrain.runtime import free_port
from tests.finetune.packages import small_package

LEVEL = "mp2/cc-pvdz"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
               "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]  # fmt: skip
    with open(root / "server.log", "wb") as log:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "mlflow server did not come up in 120 s"
            time.sleep(0.5)
    yield url
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


def test_finetune_from_a_registry_uri_on_a_server(server, demo_shards, tmp_path, capsys, monkeypatch):
    import mlflow
    import pandas as pd
    from ase.build import molecule
    from mlflow import MlflowClient

    from polyfid.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path, _ = small_package(demo_shards, ("gfn2-xtb",), tmp_path / "src" / "model.pt")
    tracker = Tracker(TrackingSection(mlflow_uri=server, experiment="pretrain", system_metrics=False), tmp_path / "src")
    tracker.start("pretrain", {}, {})
    assert tracker.register("polyfid-pretrained", path, {}, PYFUNC_CODE, "gfn2-xtb", "pretrained")["version"] == "1"
    tracker.end()
    MlflowClient(server).set_registered_model_alias("polyfid-pretrained", "champion", "1")

    run_dir = tmp_path / "ft"
    overrides = [f"run_dir={run_dir}", "source=models:/polyfid-pretrained@champion", f"tracking.mlflow_uri={server}",
                 "tracking.system_metrics=false", f"target.shard_dirs=[{demo_shards}]", f"target.level={LEVEL}",
                 "target.datasets=[demo_target_ethanol]", "target.n_train=24", "target.max_atoms=180",
                 "max_epochs=3", "patience=3", "head_init=gfn2-xtb", "learning_curve=[8,16]",
                 "auxiliary=[{level: gfn2-xtb, n: 48}]", "scan=demo_scan_ethanol"]  # fmt: skip
    config = tmp_path / "ft.yaml"
    config.write_text("{}\n")
    assert main(["finetune", str(config), *[a for o in overrides for a in ("--set", o)]]) == 0
    assert "N=16" in capsys.readouterr().out
    result = json.loads((run_dir / "result.json").read_text())
    assert result["source"]["polyfid.source_model"] == "polyfid-pretrained/1"
    assert result["n_train"] == 24 and 48 <= result["n_fit"] <= 72
    assert [p["n_train"] for p in result["learning_curve"]] == [8, 16] and "crossover_n" in result
    assert (run_dir / "plots" / "learning_curve.png").stat().st_size > 1000
    assert result["scan"]["points"] == 36 and result["scan"]["roughness_ratio"] > 0

    client = MlflowClient(server)
    version = client.get_model_version("polyfid-mp2-cc-pvdz", result["version"])
    assert version.tags["polyfid.source_model"] == "polyfid-pretrained/1"
    run = client.get_run(version.run_id)
    assert "test/linear/energy_rmse" in run.data.metrics and "curve/nonlinear/energy_rmse" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "plots")}
    assert {"plots/parity_test.png", "plots/learning_curve.png", "plots/scan.png"} <= artifacts

    mlflow.set_tracking_uri(server)
    ethanol = molecule("CH3CH2OH")
    frame = pd.DataFrame({"numbers": [ethanol.numbers.tolist()], "positions": [ethanol.positions.tolist()]})
    predicted = mlflow.pyfunc.load_model("models:/polyfid-mp2-cc-pvdz/1").predict(frame, params={"level": LEVEL})
    assert len(predicted["forces"][0]) == len(ethanol)
