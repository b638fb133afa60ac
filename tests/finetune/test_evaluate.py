"""`polyfid evaluate`: errors per level on real demo shards, per-element force errors, plots, scan smoothness."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from polyfid.data_shards.stream import StreamConfig, StreamPlan, make_dataloader
from polyfid.finetune.evaluate import Predictions, predict, scan_roughness, score
from tests.finetune.packages import small_package

LEVEL = "mp2/cc-pvdz"


@pytest.fixture(scope="module")
def package(demo_shards, tmp_path_factory):
    return small_package(demo_shards, ("gfn2-xtb", LEVEL), tmp_path_factory.mktemp("pkg") / "model.pt")


def test_scores_match_a_direct_computation(demo_shards, package):
    _, model = package
    pred = predict(model, [demo_shards], LEVEL, ("test",))
    ev = score(pred, LEVEL)
    plan = StreamPlan.from_config(StreamConfig(shard_dirs=[demo_shards], split="test", max_atoms=1024))
    h = plan.level_names.index(LEVEL)
    de, df, n = [], [], 0
    for batch in make_dataloader(plan, "eval"):
        out = model(batch, [LEVEL])
        m = batch.energy_mask[:, h]
        de.append((out.energy[m, 0] - batch.energy[m, h]).detach())
        atoms = batch.forces_mask[batch.batch, h]
        df.append((out.forces[atoms, 0].double() - batch.forces[atoms, h].double()).detach())
        n += int(m.sum())
    de, df = torch.cat(de), torch.cat(df)
    assert ev.n_energies == n > 0 and ev.n_force_atoms == df.shape[0] > 0
    assert ev.energy_mae == pytest.approx(float(de.abs().mean()), rel=1e-9)
    assert ev.forces_rmse == pytest.approx(float(df.pow(2).mean().sqrt()), rel=1e-6)
    assert set(ev.forces_mae_per_element) == {"H", "C", "O"}  # ethanol and its scan


def test_scan_roughness_orders_points_and_is_one_for_a_perfect_model():
    e = np.sin(np.linspace(0, np.pi, 12))
    order = np.random.default_rng(0).permutation(12)
    ids = [f"scan.h5:/:{i}" for i in order]
    perfect = Predictions(ids=ids, energy_ref=list(e[order]), energy_pred=list(e[order]))
    assert scan_roughness(perfect)["roughness_ratio"] == pytest.approx(1.0)
    noisy = Predictions(ids=ids, energy_ref=list(e[order]), energy_pred=list(e[order] + 0.05 * (order % 2)))
    assert scan_roughness(noisy)["roughness_ratio"] > 1.5
    with pytest.raises(ValueError, match="at least 3"):
        scan_roughness(Predictions(ids=ids[:2], energy_ref=[0.0, 1.0], energy_pred=[0.0, 1.0]))


def test_cli_json_plots_and_scan(demo_shards, package, tmp_path, capsys):
    from polyfid.cli import main

    path, _ = package
    argv = ["evaluate", "--model", str(path), "--data", str(demo_shards), "--level", LEVEL, "--split", "val", "test",
            "--scan", "demo_scan_ethanol", "--plots", str(tmp_path), "--json"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["level"] == LEVEL and result["forces_mae"] > 0
    assert result["scan"]["points"] == 36 and result["scan"]["roughness_ratio"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parity_val+test.png", "scan.png"]  # one file per plot
    assert (tmp_path / "scan.png").stat().st_size > 1000
    assert main(argv[:-1]) == 0  # the terminal form: rounded, labelled, element symbols
    out = capsys.readouterr().out
    assert "forces MAE" in out and "meV/A (per element: H " in out and "roughness" in out
    assert main(["evaluate", "--model", str(path), "--data", str(demo_shards), "--level", "nope"]) == 2
