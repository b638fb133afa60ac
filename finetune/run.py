"""`polyfid finetune`: fine-tune, fit the linear baseline beside it, score both on the test split, save the
package, and track and register the result in MLflow."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from data_shards.atomic import atomic_write_bytes
from finetune.commands import resolve_package
from finetune.config import FinetuneConfig
from finetune.evaluate import parity_plot, predict, score
from finetune.linear import element_counts, fit_linear, structure_features
from finetune.train import TargetData, energy_errors, finetune, load_target
from pretrain.package import load_package, save_package
from pretrain.tracking import Tracker

PACKAGE_NAME = "polyfid-finetuned.pt"


def linear_baseline(model, data: TargetData, cfg: FinetuneConfig) -> dict[str, Any]:
    """Ridge on the source model's frozen features (+ E0 on counts), fitted on the train subset, scored on test."""
    elements = model.backbone.elements
    h = data.level_index

    def arrays(records):
        batch = data.plan.collate(records)
        return element_counts(batch, elements), structure_features(model, batch), batch.energy[:, h].numpy()

    c, f, e = arrays(data.train)
    fit = fit_linear(c, f, e, elements, seed=cfg.seed)
    c_t, f_t, e_t = arrays(data.test)
    err = fit.predict(c_t, f_t) - e_t
    return {"energy_mae": float(np.abs(err).mean()), "energy_rmse": float(np.sqrt((err**2).mean())),
            "alpha": fit.alpha, "cv_rmse": fit.cv_rmse}  # fmt: skip


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    source = load_package(resolve_package(str(cfg.source)))
    model = source.model
    data = load_target(cfg)
    if not data.test:
        raise ValueError(f"the target has no test-split energies at {cfg.target.level!r}: nothing to score")
    tracker = Tracker(cfg.tracking, cfg.run_dir)
    provenance = source.metadata.get("provenance", {})
    tags = {"polyfid.source_package": str(source.path), "polyfid.target_level": cfg.target.level,
            "polyfid.source_mlflow_run": str(provenance.get("mlflow_run_id")),
            "polyfid.source_data_manifest_sha256": str(provenance.get("data_manifest_sha256"))}  # fmt: skip
    tracker.start(cfg.run_dir.name, cfg.model_dump(mode="json"), tags)
    linear = linear_baseline(model, data, cfg)  # features of the model as pretrained, before any step
    summary = finetune(model, cfg, data, log=tracker.log_metrics)
    nonlinear = energy_errors(model, data.batches(data.test, cfg.target.max_atoms), cfg.target.level, data.level_index)
    lineage = {"source": str(source.path), "source_provenance": provenance, "config": cfg.model_dump(mode="json")}
    path = save_package(cfg.run_dir / "model" / PACKAGE_NAME, model, provenance=lineage)
    pred = predict(model, cfg.target.shard_dirs, cfg.target.level, ("test",), cfg.target.datasets)
    plot = parity_plot(pred, score(pred, cfg.target.level), cfg.run_dir / "plots" / "parity_test.png")
    test_metrics = {f"test/nonlinear/{k}": v for k, v in nonlinear.items()}
    test_metrics.update({f"test/linear/{k}": v for k, v in linear.items() if v is not None})
    tracker.log_metrics(test_metrics, summary["epochs"])
    tracker.log_artifact(path, "package")
    tracker.log_artifact(plot, "plots")
    version = tracker.register(cfg.registered_name, path, tags)
    tracker.end()
    winner = "linear" if linear["energy_rmse"] < nonlinear["energy_rmse"] else "nonlinear"
    result = {"level": cfg.target.level, "n_train": len(data.train), "n_test": len(data.test), **summary,
              "test": {"nonlinear": nonlinear, "linear": linear}, "winner": winner, "package": str(path),
              "registered_model": cfg.registered_name, "version": version}  # fmt: skip
    atomic_write_bytes(cfg.run_dir / "result.json", json.dumps(result, indent=1).encode())
    return result
