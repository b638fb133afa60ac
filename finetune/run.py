"""`polyfid finetune`: fine-tune, fit the linear baseline beside it, score both on the test split (and, when
asked, along a learning curve), save the package, and track and register the result in MLflow."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polyfid.core.atomic import atomic_write_bytes
from polyfid.core.errors import ConfigError
from polyfid.core.tracking import Tracker
from polyfid.finetune.committee import committee_scores, train_members
from polyfid.finetune.config import FinetuneConfig
from polyfid.finetune.curves import crossover, curve_plot
from polyfid.finetune.evaluate import parity_plot, predict, score, score_scan
from polyfid.finetune.linear import LinearBaseline, element_counts, fit_structures, structure_features
from polyfid.finetune.report import describe_fit
from polyfid.finetune.source import architecture_package, fresh_model, load_source
from polyfid.finetune.train import TargetData, e0_prior_head, energy_errors, finetune, head_e0, load_target
from polyfid.finetune.trivial import trivial_baselines
from polyfid.models import PolyfidModel
from polyfid.models.package import PYFUNC_CODE, LoadedPackage, save_committee, save_package

PACKAGE_NAME = "polyfid-finetuned.pt"
COMMITTEE_NAME = "polyfid-committee.pt"  # in <run_dir>/committee/: model/ holds the one package a run directory names


def linear_errors(model: PolyfidModel, fit: LinearBaseline, data: TargetData) -> np.ndarray:
    """Per test structure: the linear baseline's energy error (eV; ridge on `model`'s frozen features + E0)."""
    test = data.plan.collate(data.test)
    pred = fit.predict(element_counts(test, fit.elements), structure_features(model, test))
    return pred - test.energy[:, data.level_index].numpy()


def nonlinear_errors(model: PolyfidModel, data: TargetData, level: str, max_atoms: int) -> np.ndarray:
    """Per test structure: the model's energy error (eV) at `level`, in `data.test` order."""
    model.eval()
    out = []
    for batch in data.batches(data.test, max_atoms):
        with torch.no_grad():
            energy = model(batch, [level], compute_forces=False).energy[:, 0]
        out.append((energy - batch.energy[:, data.level_index]).numpy())
    return np.concatenate(out)


def compare(linear_err: np.ndarray, nonlinear_err: np.ndarray) -> str:
    """Which model wins on test energies, "tie" when the difference is within noise: the mean paired difference
    of squared errors within two standard errors of zero (the same structures score both models)."""
    d = linear_err**2 - nonlinear_err**2
    if len(d) < 2 or abs(d.mean()) <= 2 * d.std(ddof=1) / np.sqrt(len(d)):
        return "tie"
    return "nonlinear" if d.mean() > 0 else "linear"


def starting_model(package: LoadedPackage, cfg: FinetuneConfig) -> PolyfidModel:
    """A copy of the source model, or (init=scratch) its architecture with fresh weights."""
    return fresh_model(package, cfg.seed) if cfg.init == "scratch" else copy.deepcopy(package.model)


def fit_both(
    package: LoadedPackage, cfg: FinetuneConfig, data: TargetData, log=None, show_progress: bool = False
) -> dict[str, Any]:
    """The linear baseline (on the starting model's features) and the nonlinear fine-tune, both scored on test."""
    model = starting_model(package, cfg)
    # fitted once on the features of the model before any step: scored here, and the head's start if head_init=linear
    prior = e0_prior_head(model, cfg)
    prior_e0 = head_e0(model, prior) if prior in model.head_names else None  # an auxiliary base has no E0 yet
    fit = fit_structures(model, data.plan.collate(data.train), data.level_index, cfg.seed, prior_e0)
    lin_err = linear_errors(model, fit, data)
    linear = {"energy_mae": float(np.abs(lin_err).mean()), "energy_rmse": float(np.sqrt((lin_err**2).mean())),
              "alpha": fit.alpha, "cv_rmse": fit.cv_rmse}  # fmt: skip
    summary = finetune(model, cfg, data, log=log, linear=fit, show_progress=show_progress)
    test = data.batches(data.test, cfg.target.max_atoms)
    nonlinear = energy_errors(model, test, cfg.target.level, data.level_index)
    winner = compare(lin_err, nonlinear_errors(model, data, cfg.target.level, cfg.target.max_atoms))
    return {"model": model, "summary": summary, "n_train": len(data.train), "n_fit": len(data.fit),
            "linear": linear, "nonlinear": nonlinear, "winner": winner}  # fmt: skip


def learning_curve(package: LoadedPackage, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    """`fit_both` at every `cfg.learning_curve` size (the same seed, so smaller train sets nest in larger ones)."""
    points = []
    for n in cfg.learning_curve:
        sized = cfg.model_copy(update={"target": cfg.target.model_copy(update={"n_train": n})})
        fit = fit_both(package, sized, load_target(sized))
        points.append({k: fit[k] for k in ("n_train", "linear", "nonlinear", "winner")})
        non, lin = fit["nonlinear"]["energy_rmse"], fit["linear"]["energy_rmse"]
        print(f"  N={n}: nonlinear {non:.4f} eV, linear {lin:.4f} eV -> {fit['winner']}")
    return points


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    data = load_target(cfg)
    if cfg.source is None:  # one dataset, from scratch: the architecture over the target's elements
        package, lineage = architecture_package(cfg.model, data.plan.catalog.elements), {"polyfid.source": "scratch"}
    else:
        package, lineage = load_source(cfg.source, cfg.registry_uri or cfg.tracking.mlflow_uri, cfg.run_dir / "source")
    if not data.test:
        raise ConfigError(f"the target has no test-split energies at {cfg.target.level!r}: nothing to score")
    tracker = Tracker(cfg.tracking, cfg.run_dir)
    tags = {**lineage, "polyfid.target_level": cfg.target.level, "polyfid.init": cfg.init}
    tracker.start(cfg.run_dir.name, cfg.model_dump(mode="json"), tags)
    tracker.log_config(cfg.model_dump(mode="json"))
    counts = {"train": len(data.train), "fit": len(data.fit), "val": len(data.val), "test": len(data.test)}
    name = f"{'+'.join(cfg.target.datasets or data.plan.catalog.dataset_names)}@{cfg.target.level}"
    tracker.log_dataset(name, cfg.target.shard_dirs[0], data.plan.catalog.fingerprint, "training", counts)
    try:
        fit = fit_both(package, cfg, data, log=tracker.log_metrics, show_progress=True)
        model, summary = fit["model"], fit["summary"]
        provenance = package.metadata.get("provenance", {})
        lineage_meta = {"source": lineage, "source_provenance": provenance, "config": cfg.model_dump(mode="json")}
        path = save_package(cfg.run_dir / "model" / PACKAGE_NAME, model, provenance=lineage_meta)
        pred = predict(model, cfg.target.shard_dirs, cfg.target.level, ("test",), cfg.target.datasets)
        title = cfg.run_dir.name
        plots = [parity_plot(pred, score(pred, cfg.target.level), cfg.run_dir / "plots" / "parity_test.png", title)]
        test_metrics = {f"test/nonlinear/{k}": v for k, v in fit["nonlinear"].items()}
        test_metrics.update({f"test/linear/{k}": v for k, v in fit["linear"].items() if v is not None})
        trivial = trivial_baselines(data, cfg.baseline_level)
        test_metrics.update({f"test/trivial/{name}/{k}": v for name, m in trivial.items() for k, v in m.items()})
        scan = None
        if cfg.scan:
            plot = cfg.run_dir / "plots" / "scan.png"
            scan = score_scan(model, cfg.target.shard_dirs, cfg.target.level, cfg.scan, plot, title)
            plots.append(Path(scan["plot"]))
            test_metrics.update({f"scan/{k}": v for k, v in scan.items() if isinstance(v, float)})
        committee = None
        if cfg.committee is not None:
            models = [model, *train_members(lambda member: starting_model(package, member), cfg, data)]
            committee_path = save_committee(cfg.run_dir / "committee" / COMMITTEE_NAME, models, provenance=lineage_meta)
            test = data.batches(data.test, cfg.target.max_atoms)
            committee = {"package": str(committee_path), "subsample": cfg.committee.subsample,
                         **committee_scores(models, test, cfg.target.level, data.level_index)}  # fmt: skip
            test_metrics.update({f"test/committee/{k}": v for k, v in committee.items() if isinstance(v, float)})
            tracker.log_artifact(committee_path, "committee")
        tracker.log_metrics(test_metrics, summary["epochs"])
        curve = learning_curve(package, cfg) if cfg.learning_curve else []
        for point in curve:
            tracker.log_metrics({f"curve/{m}/energy_rmse": point[m]["energy_rmse"] for m in ("linear", "nonlinear")},
                                point["n_train"])  # fmt: skip
        if curve:
            plots.append(curve_plot(curve, cfg.target.level, cfg.run_dir / "plots" / "learning_curve.png"))
        tracker.log_artifact(path, "package")
        for plot in plots:
            tracker.log_artifact(plot, "plots")
        registration: dict[str, Any] = {"registered_model": None, "version": None, "registration": "disabled"}
        if cfg.tracking.register_model:
            fitted = describe_fit(cfg.model_dump(mode="json"), fit["n_train"])
            origin = lineage.get("polyfid.source_model") or cfg.source or "scratch"
            rmse = fit["nonlinear"]["energy_rmse"]
            description = (f"polyfid fine-tune to {cfg.target.level}: {fitted}, from {origin}; test energy RMSE "
                           f"{rmse:.4f} eV on {len(data.test)} structures")  # fmt: skip
            registration = tracker.register(cfg.registered_name, path, tags, PYFUNC_CODE, cfg.target.level, description)
    except BaseException:
        tracker.end("FAILED")  # never leave an active MLflow run behind (the next run in this process would fail)
        raise
    tracker.end()
    strategy = provenance.get("config", {}).get("strategy", {}).get("kind") if isinstance(provenance, dict) else None
    result = {"level": cfg.target.level, "init": cfg.init, "source_strategy": strategy,
              "fitted_on": describe_fit(cfg.model_dump(mode="json"), fit["n_train"]),
              "n_train": fit["n_train"], "n_fit": fit["n_fit"],
              "n_test": len(data.test), **summary,
              "test": {"nonlinear": fit["nonlinear"], "linear": fit["linear"], "trivial": trivial},
              "winner": fit["winner"], "committee": committee, "scan": scan, "learning_curve": curve,
              "crossover_n": crossover(curve) if curve else None,
              "source": lineage, "package": str(path), "plots": [str(p) for p in plots],
              **registration}  # fmt: skip
    atomic_write_bytes(cfg.run_dir / "result.json", json.dumps(result, indent=1).encode())
    return result
