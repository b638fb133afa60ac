"""Tracking: MLflow sqlite store + registry offline; a tracking server that is down only warns."""

from __future__ import annotations

import shutil

import pytest

from polyfid.core.tracking import Tracker, TrackingSection, plot_learning_curves, read_metrics
from polyfid.models.package import PYFUNC_CODE
from tests.models.test_package import PACKAGE_V1_0


def test_local_sqlite_run_metrics_artifact_and_registry(tmp_path):
    t = Tracker(TrackingSection(system_metrics=False), tmp_path)
    t.start("run", {"optim": {"lr": 1e-3}}, {"polyfid.strategy": "single"})
    assert t.online
    t.log_metrics({"train/loss": 1.0, "val/gfn2-xtb/forces_mae": 0.5}, step=1)
    t.log_metrics({"train/loss": 0.5, "val/gfn2-xtb/forces_mae": 0.25}, step=2)
    model = shutil.copy(PACKAGE_V1_0, tmp_path / "model.pt")
    t.log_artifact(model, "package")
    t.log_dataset("demo", tmp_path, "ab" * 32, "training", {"train": 10})
    t.log_config({"lr": 1e-3, "target": {"level": "x"}})
    first = t.register("polyfid-test", model, {"polyfid.git_commit": "abc"}, PYFUNC_CODE, "gfn2-xtb", "first")
    assert first["version"] == "1"
    assert t.register("polyfid-test", model, {}, PYFUNC_CODE, "gfn2-xtb", "second")["version"] == "2"
    t.end()
    from mlflow import MlflowClient

    client = MlflowClient(t.uri)
    run = client.get_run(t.run_id)
    assert run.data.metrics["train/loss"] == 0.5
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "demo" and {x.key: x.value for x in dataset.tags}["train"] == "10"
    assert "config/config.resolved.yaml" in [a.path for a in client.list_artifacts(t.run_id, "config")]
    version = client.get_model_version("polyfid-test", "1")
    assert version.run_id == t.run_id and version.tags["polyfid.git_commit"] == "abc" and version.description == "first"
    assert str(client.get_model_version_by_alias("polyfid-test", "champion").version) == "2"  # the newest accepted
    png = plot_learning_curves(t.metrics_path, tmp_path / "curves.png")
    assert png.stat().st_size > 1000
    # a resumed run reopens the same MLflow run
    again = Tracker(TrackingSection(system_metrics=False), tmp_path)
    again.start("run", {}, {})
    assert again.run_id == t.run_id
    again.end()


def test_server_down_warns_and_keeps_local_logs(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    t = Tracker(TrackingSection(mlflow_uri="http://127.0.0.1:9", system_metrics=False), tmp_path)
    with pytest.warns(RuntimeWarning, match="training goes on"):
        t.start("run", {}, {})
    assert not t.online
    t.log_metrics({"train/loss": 1.0}, step=1)
    registration = t.register("x", tmp_path / "model.pt", {}, PYFUNC_CODE, "gfn2-xtb", "")
    assert registration["version"] is None and registration["registration"] == "failed"
    assert "start run" in registration["registration_error"] and "127.0.0.1:9" in t.failure
    t.end()
    assert read_metrics(t.metrics_path) == [
        {"step": 1, "time": read_metrics(t.metrics_path)[0]["time"], "train/loss": 1.0}
    ]


def test_artefact_roots_never_follow_the_working_directory_or_the_first_run(tmp_path, monkeypatch):
    """The Default experiment of a new store used to root its artefacts in the cwd (Ray's session folder for a
    worker), and a shared store's experiment in the folder of whichever run created it."""
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path.parent)
    own = Tracker(TrackingSection(system_metrics=False), tmp_path / "own")
    own.start("run", {}, {})
    own.end()
    default = MlflowClient(own.uri).get_experiment("0").artifact_location
    assert default.startswith((tmp_path / "own" / "mlartifacts").resolve().as_uri())

    shared = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    (tmp_path / "shared").mkdir()
    for name in ("first", "second"):
        t = Tracker(TrackingSection(mlflow_uri=shared, system_metrics=False), tmp_path / name)
        t.start(name, {}, {})
        t.end()
    experiment = MlflowClient(shared).get_experiment_by_name("polyfid-pretrain")
    assert experiment.artifact_location == (tmp_path / "shared" / "mlartifacts").resolve().as_uri()
