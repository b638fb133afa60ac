"""Experiment tracking: MLflow (local sqlite store in the run directory by default) plus local logs that never fail.

Every metric also goes to `<run_dir>/metrics.jsonl`. A tracking server that is down or errors makes the tracker
warn once and carry on with the local logs: training is never killed by tracking. The MLflow run id is kept in
`<run_dir>/tracking.json`, so a resumed run logs into the same MLflow run.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field

from polyfid.core.atomic import atomic_write_bytes
from polyfid.core.config import Section
from polyfid.core.plots import pyplot, save_figure

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_AFTER_S = 60.0  # after a tracking failure, MLflow is not called again for this long
CHAMPION = "champion"  # the registry alias of the newest accepted version of a model


class TrackingSection(Section):
    mlflow_uri: str | None = Field(
        default=None, description="MLflow tracking URI; null: sqlite store <run_dir>/mlflow.db (registry included)"
    )
    experiment: str = Field(default="polyfid-pretrain", description="MLflow experiment name")
    registered_model: str | None = Field(
        default="polyfid-pretrained", description="registered model name of the package; null: do not register"
    )
    register_model: bool = Field(default=True, description="false: track the run, register nothing (sweeps)")
    system_metrics: bool = Field(default=True, description="log CPU/GPU/memory system metrics")


def default_tracking_uri(run_dir: Path) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)[:500]


class Tracker:
    """MLflow run of one training run (rank 0 only; `enabled=False` makes every call a no-op)."""

    def __init__(self, cfg: TrackingSection, run_dir: Path, enabled: bool = True):
        self.cfg, self.run_dir, self.enabled = cfg, Path(run_dir), enabled
        self.uri = cfg.mlflow_uri or default_tracking_uri(self.run_dir)
        self.run_id: str | None = None
        self._down_since: float | None = None
        self._warned = False
        self.failure: str | None = None  # the last tracking failure, for result.json
        self.metrics_path = self.run_dir / "metrics.jsonl"
        # a server that is down must not stall training for minutes of HTTP retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

    @property
    def online(self) -> bool:
        return self.enabled and self.run_id is not None

    def _call(self, what: str, fn: Callable[[], T]) -> T | None:
        if not self.enabled or (self._down_since and time.monotonic() - self._down_since < RETRY_AFTER_S):
            return None
        try:
            result = fn()
        except Exception as exc:  # any tracking failure: warn, keep training, keep local logs
            self._down_since = time.monotonic()
            self.failure = f"{what}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"MLflow tracking at {self.uri} failed ({what}: {type(exc).__name__}: {exc}); training goes on, "
                    f"metrics are kept in {self.metrics_path}",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return None
        self._down_since = None
        return result

    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str]) -> None:
        """Start (or, after a resume, reopen) the MLflow run and log params and tags."""
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state_path = self.run_dir / "tracking.json"
        previous = json.loads(state_path.read_text()).get("run_id") if state_path.exists() else None

        def _start() -> str:
            import mlflow

            if self.cfg.mlflow_uri is None and not (self.run_dir / "mlflow.db").exists():
                from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

                # a new store's Default experiment would otherwise root its artefacts in the working directory
                SqlAlchemyStore(self.uri, self._artifact_root())
            mlflow.set_tracking_uri(self.uri)
            mlflow.set_registry_uri(self.uri)  # never a registry left over from earlier calls in this process
            if mlflow.get_experiment_by_name(self.cfg.experiment) is None:
                mlflow.create_experiment(self.cfg.experiment, artifact_location=self._artifact_root())
            mlflow.set_experiment(self.cfg.experiment)
            run = mlflow.start_run(
                run_id=previous, run_name=None if previous else run_name, log_system_metrics=self.cfg.system_metrics
            )
            if previous is None:
                flat: dict[str, str] = {}
                _flatten("", params, flat)
                mlflow.log_params(flat)
            mlflow.set_tags(tags)
            return run.info.run_id

        self.run_id = self._call("start run", _start)
        if self.run_id and self.run_id != previous:
            atomic_write_bytes(state_path, json.dumps({"run_id": self.run_id, "uri": self.uri}).encode())

    def _artifact_root(self) -> str | None:
        """Where a new experiment keeps artefacts: the run directory for its own sqlite store, beside the database
        for a shared sqlite store (never the first run's folder), and the server's choice for a server."""
        if self.cfg.mlflow_uri is None:
            return (self.run_dir / "mlartifacts").resolve().as_uri()
        if self.uri.startswith("sqlite:///"):
            return (Path(self.uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
        return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.enabled:
            return
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        if self.online:
            import mlflow

            clean = {k.replace("(", "_").replace(")", "_").replace("*", "star"): v for k, v in metrics.items()}
            self._call("log metrics", lambda: mlflow.log_metrics(clean, step=step))

    def log_dataset(self, name: str, source: Path, digest: str, context: str, counts: dict[str, int]) -> None:
        """The data a run trained on as an MLflow dataset input (name, source folder, the manifests' sha256) with
        its counts as input tags, so the run page and lineage queries show it."""
        if not self.online:
            return
        import mlflow
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        def _log() -> None:
            with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are the local folder
                warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\.")
                found = resolve_dataset_source(str(Path(source).resolve()))
            dataset = MetaDataset(found, name=name, digest=digest[:36])
            mlflow.log_input(dataset, context=context, tags={k: str(v) for k, v in counts.items()})

        self._call(f"log dataset {name}", _log)

    def log_config(self, config: dict[str, Any], name: str = "config.resolved.yaml") -> None:
        """The resolved config (every key, defaults filled in) as a YAML artefact of the run."""
        if self.online:
            import mlflow

            self._call("log config", lambda: mlflow.log_dict(config, f"config/{name}"))

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if self.online:
            import mlflow

            self._call(f"log artifact {path}", lambda: mlflow.log_artifact(str(path), folder))

    def register(
        self,
        name: str,
        package: Path,
        tags: dict[str, str],
        python_model: Path,
        level: str,
        description: str,
        alias: str | None = CHAMPION,
    ) -> dict[str, Any]:
        """Log `package` as an MLflow pyfunc model ("models from code": `python_model` is the code file, nothing
        pickled; the package is its artefact `package`) with a signature (structures in, energy and forces out, the
        head as the required `level` param) and an input example (a water molecule at `level`, the fitted head),
        and register it as a new version of model `name` with `tags` and `description`; `alias` (default
        "champion") then names this newest accepted version. Returns `registered_model`, `version` and
        `registration` ("registered", or "failed" with `registration_error`). Load it with
        `mlflow.pyfunc.load_model("models:/<name>@champion")` after `mlflow.set_tracking_uri(<store>)`."""
        if not self.online:
            return self._registration(name, None, self.failure or "the MLflow run never started")
        import mlflow
        import pandas as pd
        from mlflow import MlflowClient
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
        from mlflow.types.schema import Array

        signature = ModelSignature(
            inputs=Schema([ColSpec(Array("long"), "numbers"), ColSpec(Array(Array("double")), "positions"),
                           ColSpec(Array(Array("double")), "cell", required=False)]),
            outputs=Schema([ColSpec("double", "energy"), ColSpec(Array(Array("double")), "forces")]),
            params=ParamSchema([ParamSpec("level", "string", "")]),  # no default head: predict refuses ""
        )  # fmt: skip
        water = [[0.0, 0.0, 0.119], [0.0, 0.763, -0.477], [0.0, -0.763, -0.477]]
        water = pd.DataFrame({"numbers": [[8, 1, 1]], "positions": [water]})

        def _register() -> str:
            with warnings.catch_warnings():  # MLflow's advice on type hints does not apply
                warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\.")
                info = mlflow.pyfunc.log_model(
                    signature=signature,
                    input_example=(water, {"level": level}),
                    name="model",
                    python_model=str(python_model),
                    artifacts={"package": str(package)},
                    registered_model_name=name,
                    pip_requirements=["polyfid", "torch", "ase", "numpy", "pandas"],
                )
            version = str(info.registered_model_version)
            client = MlflowClient(self.uri)
            for key, value in tags.items():
                client.set_model_version_tag(name, version, key, value)
            client.update_model_version(name, version, description=description)
            if alias:
                client.set_registered_model_alias(name, alias, version)
            return version

        return self._registration(name, self._call(f"register {name}", _register), self.failure)

    @staticmethod
    def _registration(name: str, version: str | None, failure: str | None) -> dict[str, Any]:
        if version is not None:
            return {"registered_model": name, "version": version, "registration": "registered"}
        why = failure or "MLflow was skipped after an earlier failure"
        return {"registered_model": name, "version": None, "registration": "failed", "registration_error": why}

    def end(self, status: str = "FINISHED") -> None:
        if self.online:
            import mlflow

            self._call("end run", lambda: mlflow.end_run(status=status))


def report_registration(result: dict[str, Any]) -> None:
    """One stderr line when a command's model was not registered: the JSON result alone is easy to miss."""
    if result.get("registration") == "failed":
        print(
            f"polyfid: warning: {result.get('package')} was not registered as {result.get('registered_model')!r}: "
            f"{result.get('registration_error')}",
            file=sys.stderr,
        )


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The local metrics log (one JSON object per line; a torn last line from a crash is skipped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def plot_learning_curves(metrics_path: Path, out: Path) -> Path | None:
    """Train loss and per-head validation errors against step, as a PNG."""
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [("train/loss", axes[0], "train loss"), ("energy_mae", axes[1], "val energy MAE (eV)")]
    panels.append(("forces_mae", axes[2], "val force MAE (eV/A)"))
    for key, ax, title in panels:
        names = sorted({k for r in rows for k in r if (k == key or (k.startswith("val/") and k.endswith(key)))})
        for name in names:
            pts = [(r["step"], r[name]) for r in rows if name in r]
            ax.plot(*zip(*pts, strict=True), marker="." if len(pts) < 50 else None, label=name.removeprefix("val/"))
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        if names:
            ax.legend(fontsize=7)
    return save_figure(fig, out)
