"""`polyfid register`: a package file becomes a registry version that fine-tunes load by URI, tagged with its
checksum and provenance; a file that is not a package is refused before the store is touched."""

from __future__ import annotations

import torch
from mlflow import MlflowClient

from polyfid.cli import main
from polyfid.core.digest import sha256_file
from polyfid.finetune.source import load_source
from polyfid.models.package import load_package


def test_a_registered_package_loads_by_uri_with_its_tags(source, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    for version in ("1", "2"):
        assert main(["register", str(source), "--name", "polyfid-foundation", "--mlflow-uri", uri]) == 0
        assert f"models:/polyfid-foundation/{version}" in capsys.readouterr().out
    package, lineage = load_source("models:/polyfid-foundation/latest", uri, tmp_path / "download")
    assert lineage["polyfid.source_model"] == "polyfid-foundation/2"
    original = load_package(source).model.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in package.model.state_dict().items() if torch.is_tensor(v))
    tags = MlflowClient(uri).get_model_version("polyfid-foundation", "2").tags
    assert tags["polyfid.package_sha256"] == sha256_file(source)
    assert tags["polyfid.levels"] == ",".join(load_package(source).heads)


def test_a_file_that_is_not_a_package_is_refused_before_the_store_is_written(tmp_path, capsys):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a package")
    store = tmp_path / "mlflow.db"
    assert main(["register", str(bad), "--name", "x", "--mlflow-uri", f"sqlite:///{store}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0]
    assert not store.exists()
