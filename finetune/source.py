"""Where a fine-tune (or an evaluation) starts: a model package file, a pretraining run directory, or a version in
an MLflow model registry (`models:/polyfid-pretrained/3`, `models:/polyfid-pretrained@champion`,
`models:/polyfid-pretrained/latest`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from polyfid.core.errors import PolyfidError
from polyfid.models import PolyfidModel
from polyfid.models.package import LoadedPackage, conditioning, load_package
from polyfid.models.registry import backbone_spec, build_backbone

REGISTRY_SCHEME = "models:/"


class SourceError(PolyfidError, ValueError):
    """A source that cannot be resolved (message names it and what was tried)."""


def local_package(source: str) -> Path:
    """A package file, or the one package under `<run dir>/model/` (a pretraining or fine-tuning run directory)."""
    path = Path(source).expanduser().resolve()
    if not path.is_dir():
        return path
    found = sorted((path / "model").glob("*.pt"))
    if len(found) != 1:
        raise SourceError(f"{path}: a run directory must hold exactly one package in model/, found {found}")
    return found[0]


def _registry(registry_uri: str | None) -> str:
    uri = registry_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise SourceError(
            "a models:/ source needs the MLflow store that holds the registry: set registry_uri (fine-tune config), "
            "--registry-uri, or MLFLOW_TRACKING_URI (e.g. sqlite:///runs/demo/pretrain/mlflow.db or http://host:5000)"
        )
    return uri


def download_registered(source: str, registry_uri: str | None, download_to: Path) -> tuple[Path, dict[str, str]]:
    """Download the package of a registered model version; returns (package path, lineage tags naming the
    version and its run)."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = _registry(registry_uri)
    ref = source.removeprefix(REGISTRY_SCHEME)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, _, number = ref.rpartition("/")
            if number == "latest":
                found = client.search_model_versions(f"name='{name}'")
                if not found:
                    raise SourceError(f"{source}: model {name!r} has no versions in {uri}")
                version = max(found, key=lambda v: int(v.version))
            else:
                version = client.get_model_version(name, number)
        folder = download_to / f"{version.name}-v{version.version}"
        location = client.get_model_version_download_uri(version.name, version.version)
        local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(folder), tracking_uri=uri)
    except MlflowException as exc:
        raise SourceError(f"{source}: cannot resolve it in the registry at {uri}: {exc.message}") from exc
    packages = sorted(Path(local).glob("artifacts/*.pt"))
    if len(packages) != 1:
        raise SourceError(f"{source} (version {version.version}): expected one package artefact, found {packages}")
    lineage = {"polyfid.source_model": f"{version.name}/{version.version}", "polyfid.source_registry": uri,
               "polyfid.source_mlflow_run": str(version.run_id)}  # fmt: skip
    return packages[0], lineage


def source_path(source: str, registry_uri: str | None, download_to: Path) -> tuple[Path, dict[str, str]]:
    """The package file a source names (downloaded when registered), with lineage tags of a registered version."""
    if source.startswith(REGISTRY_SCHEME):
        return download_registered(source, registry_uri, download_to)
    return local_package(source), {}


def load_source(source: str, registry_uri: str | None, download_to: Path) -> tuple[LoadedPackage, dict[str, str]]:
    """The source package loaded, with lineage tags (the package path; the registered version when there is one)."""
    path, lineage = source_path(source, registry_uri, download_to)
    package = load_package(path)
    provenance = package.metadata.get("provenance", {})
    found = {"polyfid.source_package": str(path), "polyfid.source_mlflow_run": provenance.get("mlflow_run_id"),
             "polyfid.source_data_manifest_sha256": provenance.get("data_manifest_sha256")}  # fmt: skip
    lineage |= {k: str(v) for k, v in found.items() if v is not None and k not in lineage}  # one tag per fact
    return package, lineage


def architecture_package(cfg: Any, elements: list[int]) -> LoadedPackage:
    """An untrained, headless model of a `model` section (pretrain's) over `elements` unless it names them: the
    source of a fine-tune from scratch on one dataset, with no pretrained package."""
    settings = cfg.settings.model_dump(mode="json")
    settings["elements"] = settings["elements"] or elements
    backbone = build_backbone(cfg.backbone, settings)
    flags = conditioning(cfg.model_dump())
    meta = {"backbone": backbone_spec(backbone), "heads": [], "provenance": {}, **flags}
    return LoadedPackage(model=PolyfidModel(backbone, **flags), metadata=meta)


def fresh_model(package: LoadedPackage, seed: int) -> PolyfidModel:
    """The package's architecture with freshly initialised weights (seeded) and no heads: "trained from scratch"."""
    spec = package.metadata["backbone"]
    torch.manual_seed(seed)
    return PolyfidModel(build_backbone(spec["kind"], spec["config"]), **conditioning(package.metadata)).eval()
