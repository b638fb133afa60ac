"""The comparison table of fine-tuning runs (`polyfid report RUN_DIR ...`): test energy and force errors of each
run's nonlinear model and, for runs that started from pretrained weights, of the linear baseline beside it; then
the trivial baselines (`trivial.py`), once per distinct test set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS = ("energy_rmse", "energy_mae", "forces_mae", "forces_rmse")  # the last four columns, eV and eV/A
COLUMNS = ("run", "model", "start", "fitted on", "E RMSE meV", "E MAE meV", "F MAE meV/A", "F RMSE meV/A")


def _structures(section: dict[str, Any]) -> str:
    """The structures an auxiliary level or a distill teacher labels, in words."""
    where = ",".join(section["datasets"]) if section.get("datasets") else "all target train geometries"
    return where + (f", {section['n']}" if section.get("n") else "")


def describe_fit(cfg: dict[str, Any], n_train: int) -> str:
    """What a fine-tune was fitted on, in words (from its resolved config)."""
    target = cfg["target"]
    level = f"({target['level']} - {cfg['baseline_level']})" if cfg.get("baseline_level") else target["level"]
    own_forces = cfg.get("forces_weight", 0) > 0 and not cfg.get("distill")  # with distill, the teacher's forces
    text = f"{n_train} {level} E" + ("+F" if own_forces else "")
    for aux in cfg.get("auxiliary", []):
        parts = "+".join(k for k, w in (("E", aux["energy_weight"]), ("F", aux["forces_weight"])) if w > 0)
        text += f" + {aux['level']} {parts} ({_structures(aux)})"
    if cfg.get("distill"):
        text += f" + teacher E+F ({_structures(cfg['distill'])})"
    return text


def describe_start(result: dict[str, Any]) -> str:
    strategy = result.get("source_strategy") or "?"
    scratch = result.get("init") == "scratch"
    return f"scratch ({strategy} model's architecture)" if scratch else f"{strategy} pretrained"


def _ms(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    return "-" if value is None else f"{value * 1000:.1f}"


def rows(run_dirs: list[Path]) -> list[dict[str, str]]:
    """One row per run (nonlinear fine-tune) plus one per pretrained start (its linear baseline), then one per
    trivial baseline (rows equal across runs, as on one test set, are given once)."""
    out, trivial = [], []
    for run_dir in run_dirs:
        path = Path(run_dir) / "result.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not a finished fine-tuning run (no result.json)")
        result = json.loads(path.read_text())
        fitted = result.get("fitted_on") or f"{result['n_train']} {result['level']} E"  # older runs: energies only
        start = describe_start(result)
        models = [("nonlinear fine-tune", result["test"]["nonlinear"])]
        if result.get("init", "pretrained") == "pretrained":
            models.append(("linear baseline", result["test"]["linear"]))
        for model, metrics in models:
            row = {
                "run": Path(run_dir).name,
                "model": model,
                "start": start,
                "fitted on": fitted if model != "linear baseline" else f"{result['n_train']} energies",
            }
            for column, key in zip(COLUMNS[4:], METRICS, strict=True):
                row[column] = _ms(metrics, key)
            out.append(row)
        for name, metrics in result["test"].get("trivial", {}).items():
            row = {"run": f"trivial (N={result['n_train']}, {result['n_test']} test)", "model": name,
                   "start": "-", "fitted on": "offsets on the train energies"}  # fmt: skip
            row.update({column: _ms(metrics, key) for column, key in zip(COLUMNS[4:], METRICS, strict=True)})
            if row not in trivial:
                trivial.append(row)
    return out + trivial


def markdown_table(table: list[dict[str, str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(row[c] for c in COLUMNS) + " |" for row in table]
    return "\n".join(lines)
