"""Fine-tuning sources: package files, run directories, and versions in an MLflow registry (sqlite store here; the
HTTP server case is in test_server.py), plus the "from scratch" start."""

from __future__ import annotations

import pytest
import torch

from polyfid.core.tracking import Tracker, TrackingSection
from polyfid.finetune.source import SourceError, fresh_model, load_source, local_package
from polyfid.models.package import PYFUNC_CODE, load_package
from tests.finetune.packages import small_package


@pytest.fixture(scope="module")
def registry(demo_shards, tmp_path_factory):
    """A sqlite MLflow store with two registered versions of a small package (the newest, 2, is `champion`)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("registry")
    path, _ = small_package(demo_shards, ("gfn2-xtb",), root / "pkg" / "model.pt")
    tracker = Tracker(TrackingSection(experiment="src", system_metrics=False), root)
    tracker.start("src", {}, {})
    versions = [tracker.register("polyfid-src", path, {"k": "v"}, PYFUNC_CODE, "gfn2-xtb", "src") for _ in range(2)]
    assert [v["version"] for v in versions] == ["1", "2"]
    tracker.end()
    assert str(MlflowClient(tracker.uri).get_model_version_by_alias("polyfid-src", "champion").version) == "2"
    return tracker.uri, path


@pytest.mark.parametrize("ref", ["polyfid-src/1", "polyfid-src@champion", "polyfid-src/latest"])
def test_registry_versions_resolve_to_the_package_with_lineage(registry, tmp_path, ref):
    uri, path = registry
    package, lineage = load_source(f"models:/{ref}", uri, tmp_path)
    expected = "1" if ref.endswith("/1") else "2"
    assert lineage["polyfid.source_model"] == f"polyfid-src/{expected}" and lineage["polyfid.source_registry"] == uri
    assert package.path.is_relative_to(tmp_path)
    original = load_package(path).model.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in package.model.state_dict().items() if torch.is_tensor(v))


def test_registry_errors_name_the_source_and_what_to_set(registry, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SourceError, match="registry_uri"):
        load_source("models:/polyfid-src/1", None, tmp_path)
    with pytest.raises(SourceError, match="models:/no-such-model/1"):
        load_source("models:/no-such-model/1", registry[0], tmp_path)


def test_run_directory_and_package_file(registry, tmp_path):
    _, path = registry
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "polyfid-pretrained.pt").write_bytes(path.read_bytes())
    assert local_package(str(run)) == (run / "model" / "polyfid-pretrained.pt").resolve()
    assert local_package(str(path)) == path.resolve()
    (run / "model" / "other.pt").write_bytes(b"")
    with pytest.raises(SourceError, match="exactly one package"):
        local_package(str(run))


def test_scratch_start_has_the_architecture_and_fresh_seeded_weights(registry):
    package = load_package(registry[1])
    a, b, c = fresh_model(package, 0), fresh_model(package, 0), fresh_model(package, 1)
    assert a.head_names == [] and a.backbone.elements == package.model.backbone.elements
    trained = package.model.backbone.state_dict()
    fresh = a.backbone.state_dict()
    assert fresh.keys() == trained.keys()
    assert all(torch.equal(fresh[k], b.backbone.state_dict()[k]) for k in fresh)
    assert not all(torch.equal(fresh[k], c.backbone.state_dict()[k]) for k in fresh if fresh[k].is_floating_point())
