"""Register an existing model package in an MLflow registry: a shipped foundation model put into a user's (or the
demo's) store, or a package moved from one store to another. Fine-tunes then name it by registry URI
(`models:/polyfid-foundation/latest`) like any model a pretraining run registered itself."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from polyfid.core.digest import sha256_file
from polyfid.core.tracking import Tracker, TrackingSection
from polyfid.models.package import PYFUNC_CODE, load_package


def register_package(package: Path, name: str, mlflow_uri: str, experiment: str = "polyfid-register") -> dict[str, Any]:
    """Log `package` in a run of `experiment` and register it as a new version of `name`, tagged with its sha256,
    heads and the provenance it carries (strategy, pretraining step, data manifests). The package is read first:
    a file that is not a polyfid package is refused before anything is written to the store."""
    loaded = load_package(package)
    provenance = loaded.metadata.get("provenance") or {}
    config = provenance.get("config") if isinstance(provenance.get("config"), dict) else {}
    strategy = (config.get("strategy") or {}).get("kind", "unknown")
    tags = {"polyfid.package_sha256": sha256_file(package), "polyfid.levels": ",".join(loaded.heads),
            "polyfid.strategy": str(strategy), "polyfid.step": str(provenance.get("step", "unknown")),
            "polyfid.data_manifest_sha256": str(provenance.get("data_manifest_sha256", "unknown")),
            "polyfid.git_commit": str(provenance.get("git_commit", "unknown"))}  # fmt: skip
    description = (f"polyfid package {package.name} ({strategy}, heads {', '.join(loaded.heads)}, step "
                   f"{tags['polyfid.step']}), registered from a file")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="polyfid-register-") as local:  # local logs only: the store keeps all
        section = TrackingSection(mlflow_uri=mlflow_uri, experiment=experiment, registered_model=name)
        tracker = Tracker(section.model_copy(update={"system_metrics": False}), Path(local))
        tracker.start(f"register {package.name}", {"package": str(package.resolve())}, tags)
        tracker.log_artifact(package, "package")
        result = tracker.register(name, package, tags, PYFUNC_CODE, loaded.heads[0], description)
        tracker.end("FINISHED" if result["registration"] == "registered" else "FAILED")
    return {"package": str(package), **result}
