"""`polyfid report`: one row per fine-tune, plus the linear baseline of runs that started from pretrained weights,
then the trivial baselines once per test set."""

from __future__ import annotations

import json

import pytest

from polyfid.finetune.report import describe_fit, rows


def _result(folder, init, fitted_on, forces=None):
    folder.mkdir(parents=True)
    errors = {"energy_rmse": 0.0921, "energy_mae": 0.0805, **({"forces_mae": forces} if forces else {})}
    trivial = {
        "E0 only": {"energy_rmse": 0.16, "energy_mae": 0.13},
        "xtb as-is": {"energy_rmse": 0.05, "energy_mae": 0.04, "forces_mae": 0.14, "forces_rmse": 0.19},
    }
    result = {"init": init, "source_strategy": "reptile", "fitted_on": fitted_on, "n_train": 100, "level": "mp2",
              "n_test": 40, "test": {"nonlinear": errors, "linear": {"energy_rmse": 0.115, "energy_mae": 0.084},
                                     "trivial": trivial}}  # fmt: skip
    (folder / "result.json").write_text(json.dumps(result))
    return folder


def test_rows_and_markdown(tmp_path, capsys):
    from polyfid.cli import main

    a = _result(tmp_path / "pre", "pretrained", "100 mp2 E", forces=0.45)
    b = _result(tmp_path / "scratch", "scratch", "100 mp2 E+F")
    table = rows([a, b])
    trivial = "trivial (N=100, 40 test)"
    assert [(r["run"], r["model"]) for r in table] == [("pre", "nonlinear fine-tune"), ("pre", "linear baseline"),
                                                       ("scratch", "nonlinear fine-tune"), (trivial, "E0 only"),
                                                       (trivial, "xtb as-is")]  # fmt: skip
    assert table[3]["F MAE meV/A"] == "-" and table[4]["F MAE meV/A"] == "140.0"  # given once for the two runs
    assert table[0]["E RMSE meV"] == "92.1" and table[0]["F MAE meV/A"] == "450.0" and table[1]["F MAE meV/A"] == "-"
    assert table[0]["start"] == "reptile pretrained" and table[2]["start"].startswith("scratch")
    assert main(["report", str(a), str(b), "--markdown", str(tmp_path / "t.md")]) == 0
    assert "linear baseline" in capsys.readouterr().out
    assert (tmp_path / "t.md").read_text().count("\n") == 7
    with pytest.raises(FileNotFoundError, match=r"result\.json"):
        rows([tmp_path])


def test_describe_fit_names_every_label_fitted():
    xtb = {"level": "xtb", "energy_weight": 0.0, "forces_weight": 1.0, "datasets": None, "n": None}
    b3lyp = {"level": "b3lyp", "energy_weight": 1.0, "forces_weight": 1.0, "datasets": ["md"], "n": 50}
    cfg = {"target": {"level": "mp2"}, "forces_weight": 0.0, "auxiliary": [xtb, b3lyp]}
    assert describe_fit(cfg, 100) == "100 mp2 E + xtb F (all target train geometries) + b3lyp E+F (md, 50)"
    cfg |= {"auxiliary": [], "forces_weight": 1.0, "distill": {"teacher": "t.pt", "datasets": None, "n": 300}}
    assert describe_fit(cfg, 100) == "100 mp2 E + teacher E+F (all target train geometries, 300)"
