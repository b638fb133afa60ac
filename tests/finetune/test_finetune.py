"""Fine-tuning to the demo's MP2 ethanol energies (ethanol is not in the source model's data): E0 refit before any
step, freezing strategies, determinism, and the full `polyfid finetune` run with the linear baseline and registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from polyfid.finetune.config import load_finetune_config
from polyfid.finetune.source import fresh_model
from polyfid.finetune.train import energy_errors, finetune, load_target, prepare_model
from polyfid.models.package import load_package

LEVEL = "mp2/cc-pvdz"


def _config(tmp_path, source, demo_shards, **extra):
    raw = {"run_dir": str(tmp_path / "run"), "source": str(source), "max_epochs": 8, "patience": 8, "lr": 2e-3,
           "target": {"shard_dirs": [str(demo_shards)], "level": LEVEL, "datasets": ["demo_target_ethanol"],
                      "n_train": 40, "max_atoms": 180}, **extra}  # fmt: skip
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_finetune_config([path])


def _params(model, prefix):
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith(prefix)}


def test_e0_refit_makes_step_zero_errors_sane_and_the_best_weights_are_kept(source, demo_shards, tmp_path):
    cfg = _config(tmp_path, source, demo_shards)
    data = load_target(cfg)
    assert len(data.train) == 40 and data.val and data.test
    model = load_package(source).model
    summary = finetune(model, cfg, data)
    assert summary["head_init"] == "fresh"
    assert summary["step0_val"]["energy_mae"] < 2.0  # MP2 total energies are ~ -4200 eV
    assert summary["best_val_energy_rmse"] <= summary["step0_val"]["energy_rmse"]
    val = energy_errors(model, data.batches(data.val, 180), LEVEL, data.level_index)
    assert val["energy_rmse"] == pytest.approx(summary["best_val_energy_rmse"])  # the best epoch's weights


@pytest.mark.parametrize(("strategy", "frozen", "trained"), [("head", "backbone.", "heads.heads.1."),
                         ("freeze", "backbone.blocks.0.", "backbone.blocks.1.")])  # fmt: skip
def test_freezing_strategies_leave_frozen_weights_untouched(source, demo_shards, tmp_path, strategy, frozen, trained):
    cfg = _config(tmp_path, source, demo_shards, strategy=strategy, freeze_blocks=1, max_epochs=3)
    model = load_package(source).model
    prepare_model(model, cfg)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    assert not any(v for n, v in flags.items() if n.startswith(frozen))
    assert all(v for n, v in flags.items() if n.startswith(trained))
    before = _params(model, frozen)
    cfg = _config(tmp_path, source, demo_shards, strategy=strategy, freeze_blocks=1, max_epochs=3)
    finetune(model, cfg, load_target(cfg))  # the head exists already: reused, and frozen weights stay
    after = _params(model, frozen)
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_deterministic_for_a_seed(source, demo_shards, tmp_path):
    states = []
    for _ in range(2):
        cfg = _config(tmp_path, source, demo_shards, max_epochs=3, head_init="gfn2-xtb")
        model = load_package(source).model
        assert finetune(model, cfg, load_target(cfg))["head_init"] == "copied from head 'gfn2-xtb'"
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0] if torch.is_tensor(states[0][k]))


def test_cli_run_reports_linear_baseline_and_registers(source, demo_shards, tmp_path, capsys):
    from polyfid.cli import main

    cfg = _config(tmp_path, source, demo_shards)
    config = tmp_path / "ft.yaml"
    assert main(["finetune", str(config), "--set", "max_epochs=5"]) == 0
    out = capsys.readouterr().out
    assert "linear baseline" in out and ("wins" in out or "tie (the difference is within noise" in out)
    result = json.loads((cfg.run_dir / "result.json").read_text())
    assert result["winner"] in ("linear", "nonlinear", "tie") and result["epochs"] == 5
    assert result["test"]["linear"]["energy_rmse"] > 0 and result["test"]["nonlinear"]["forces_mae"] > 0
    assert "trivial baseline gfn2-xtb as-is" in out and result["test"]["trivial"]["E0 only"]["energy_rmse"] > 0
    assert result["registered_model"] == "polyfid-mp2-cc-pvdz" and result["version"] == "1"
    first = json.loads((cfg.run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0 and first["val/energy_rmse"] == result["step0_val"]["energy_rmse"]  # the kept start
    assert "result.json" in out and '"status"' not in out  # a short summary; --json prints everything
    package = load_package(result["package"])
    assert package.heads == ["gfn2-xtb", LEVEL]
    assert (cfg.run_dir / "plots" / "parity_test.png").stat().st_size > 1000
    # the registered version: an MLflow pyfunc model whose package also loads into the ASE calculator
    import mlflow
    import pandas as pd
    from ase.build import molecule

    from polyfid.models.calculator import PolyfidCalculator

    mlflow.set_tracking_uri(f"sqlite:///{cfg.run_dir / 'mlflow.db'}")
    uri = "models:/polyfid-mp2-cc-pvdz/1"
    ethanol = molecule("CH3CH2OH")
    frame = pd.DataFrame({"numbers": [ethanol.numbers.tolist()], "positions": [ethanol.positions.tolist()]})
    pyfunc = mlflow.pyfunc.load_model(uri)
    predicted = pyfunc.predict(frame, params={"level": LEVEL})
    with pytest.raises(Exception, match="needs params"):  # no silent default head
        pyfunc.predict(frame)
    version = mlflow.MlflowClient().get_model_version_by_alias("polyfid-mp2-cc-pvdz", "champion")
    assert str(version.version) == "1" and "test energy RMSE" in version.description
    assert pyfunc.metadata.get_input_schema() is not None  # the signature names the structure columns
    folder = Path(mlflow.artifacts.download_artifacts(uri))
    ethanol.calc = PolyfidCalculator(next(folder.rglob("polyfid-finetuned.pt")), level=LEVEL)
    assert predicted["energy"][0] == pytest.approx(ethanol.get_potential_energy(), abs=1e-6)
    assert np.allclose(predicted["forces"][0], ethanol.get_forces(), atol=1e-5)


def test_auxiliary_level_fits_low_level_labels_and_never_leaks_target_labels(source, demo_shards, tmp_path):
    cfg = _config(tmp_path, source, demo_shards, init="scratch", max_epochs=2, auxiliary=[{"level": "gfn2-xtb"}])
    data = load_target(cfg)
    ids = {r.id for r in data.train}
    assert len(data.train) == 40 and len(data.fit) > 100  # every ethanol train geometry has xTB labels
    assert all(set(r.labels) == ({LEVEL, "gfn2-xtb"} if r.id in ids else {"gfn2-xtb"}) for r in data.fit)
    assert all(r.labels["gfn2-xtb"].forces is not None for r in data.fit)
    model = fresh_model(load_package(source), cfg.seed)
    finetune(model, cfg, data)
    assert model.head_names == [LEVEL, "gfn2-xtb"]
    xtb = energy_errors(model, data.batches(data.fit[:20], 180), "gfn2-xtb", data.plan.level_names.index("gfn2-xtb"))
    assert xtb["forces_mae"] < 5.0 and abs(xtb["energy_mae"]) < 5.0  # E0 refitted, xTB forces in the fit


@pytest.mark.parametrize(("extra", "message"), [({"init": "scratch", "head_init": "gfn2-xtb"}, "init=scratch"),
                         ({"auxiliary": [{"level": LEVEL}]}, "auxiliary levels"),
                         ({"init": "scratch", "e0_prior": "gfn2-xtb"}, "starts with no heads")])  # fmt: skip
def test_inconsistent_configs_are_refused(source, demo_shards, tmp_path, extra, message):
    from polyfid.core.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, source, demo_shards, **extra)


def test_crossover_is_where_nonlinear_wins_for_good():
    from polyfid.finetune.curves import crossover

    def point(n, lin, non):
        return {"n_train": n, "linear": {"energy_rmse": lin}, "nonlinear": {"energy_rmse": non}}

    assert crossover([point(25, 1, 2), point(50, 1, 0.5), point(100, 1, 0.4)]) == 50
    assert crossover([point(25, 1, 0.5), point(50, 1, 2), point(100, 1, 0.4)]) == 100
    assert crossover([point(25, 1, 0.5), point(100, 1, 2)]) is None


def test_linear_head_init_starts_the_fine_tune_at_the_linear_baseline(source, demo_shards, tmp_path):
    from polyfid.finetune.linear import element_counts, fit_structures, structure_features

    cfg = _config(tmp_path, source, demo_shards, head_init="linear", max_epochs=1)
    data = load_target(cfg)
    model = load_package(source).model
    fit = fit_structures(model, data.plan.collate(data.train), data.level_index, cfg.seed)
    val = data.plan.collate(data.val)
    err = (
        fit.predict(element_counts(val, fit.elements), structure_features(model, val))
        - val.energy[:, data.level_index].numpy()
    )
    summary = finetune(model, cfg, data)
    assert summary["head_init"] == "linear baseline's ridge weights"
    assert summary["step0_val"]["energy_rmse"] == pytest.approx(float(np.sqrt((err**2).mean())), rel=1e-4)


def test_auxiliary_level_can_replay_other_datasets(source, demo_shards, tmp_path):
    aux = [{"level": "gfn2-xtb", "datasets": ["demo_md_xtb"], "n": 30}]
    data = load_target(_config(tmp_path, source, demo_shards, auxiliary=aux))
    replayed = [r for r in data.fit if r.dataset == "demo_md_xtb"]
    assert len(data.train) == 40 and len(replayed) == 30 and len(data.fit) == 70
    assert all(set(r.labels) == {"gfn2-xtb"} for r in replayed)
    assert all(set(r.labels) == {LEVEL} for r in data.fit if r.dataset == "demo_target_ethanol")


def test_a_delta_head_starts_as_its_base_and_round_trips_through_a_package(source, demo_shards, tmp_path):
    """delta_from: the target head is the auxiliary head's network energy plus a correction that starts at zero,
    so before any step its forces are the base's; the package keeps the relation."""
    from polyfid.models.package import save_package

    cfg = _config(tmp_path, source, demo_shards, init="scratch", max_epochs=1, auxiliary=[{"level": "gfn2-xtb"}],
                  delta_from="gfn2-xtb")  # fmt: skip
    model = fresh_model(load_package(source), cfg.seed)
    assert prepare_model(model, cfg) == "delta head on 'gfn2-xtb'"
    data = load_target(cfg)
    batch = data.batches(data.test[:4], 180)[0]
    out = model(batch, [LEVEL, "gfn2-xtb"])
    torch.testing.assert_close(out.forces[:, 0], out.forces[:, 1])
    summary = finetune(fresh_model(load_package(source), cfg.seed), cfg, data)
    assert summary["head_init"] == "delta head on 'gfn2-xtb'" and summary["e0_fit"][LEVEL]["prior"] == "gfn2-xtb"
    with torch.no_grad():
        model.heads[LEVEL].layers[0].weight.fill_(0.01)
    path = save_package(tmp_path / "delta.pt", model, provenance={})
    loaded = load_package(path)
    assert loaded.metadata["head_bases"] == {LEVEL: "gfn2-xtb"}
    torch.testing.assert_close(loaded.model(batch, [LEVEL]).energy, model(batch, [LEVEL]).energy)


def test_a_step_budget_and_separate_subset_seed(source, demo_shards, tmp_path):
    cfg = _config(tmp_path, source, demo_shards, steps=5, max_epochs=1, plateau_patience=1, lr_decay="cosine",
                  hierarchicality_weight=0.01)  # fmt: skip
    summary = finetune(load_package(source).model, cfg, load_target(cfg))
    assert summary["steps"] == 5 and summary["epochs"] >= 2  # 40 structures are 2 batches: the budget, not epochs
    ids = {r.id for r in load_target(cfg).train}
    reseeded = cfg.model_copy(update={"seed": 7})
    assert {r.id for r in load_target(reseeded).train} != ids  # the seed drives the subset by default
    pinned = reseeded.model_copy(update={"target": reseeded.target.model_copy(update={"subset_seed": 0})})
    assert {r.id for r in load_target(pinned).train} == ids  # ... unless subset_seed pins it


def test_a_target_without_a_val_split_is_refused(source, demo_shards, tmp_path):
    from polyfid.core.errors import ConfigError

    cfg = _config(tmp_path, source, demo_shards)
    data = load_target(cfg)
    data.val = []
    with pytest.raises(ConfigError, match="no val-split energies at 'mp2/cc-pvdz'"):
        finetune(load_package(source).model, cfg, data)


def test_one_dataset_from_scratch_from_the_cli_needs_no_source_package(demo_shards, tmp_path, capsys):
    """`source: null` + a `model` section: a model trained on N high-level energies of one dataset alone."""
    from polyfid.cli import main

    raw = {"run_dir": str(tmp_path / "run"), "init": "scratch", "steps": 6, "tracking": {"register_model": False},
           "model": {"backbone": "hipnn", "settings": {"n_features": 8, "n_sensitivities": 4, "n_atom_layers": 1},
                     "charge_spin": True},
           "target": {"shard_dirs": [str(demo_shards)], "level": LEVEL, "datasets": ["demo_target_ethanol"],
                      "n_train": 20, "max_atoms": 180}}  # fmt: skip
    (tmp_path / "scratch.yaml").write_text(yaml.safe_dump(raw))
    assert main(["finetune", str(tmp_path / "scratch.yaml")]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["steps"] == 6 and result["registration"] == "disabled" and result["n_train"] == 20
    trained = load_package(result["package"])
    assert trained.heads == [LEVEL] and trained.model.charge_spin and trained.metadata["charge_spin"]
    raw.pop("model")
    (tmp_path / "neither.yaml").write_text(yaml.safe_dump(raw))
    assert main(["finetune", str(tmp_path / "neither.yaml")]) == 2
    assert "either source" in capsys.readouterr().err


def test_the_verdict_is_a_tie_when_the_difference_is_within_noise():
    from polyfid.finetune.run import compare

    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.1, 60)
    assert compare(a, a + rng.normal(0, 0.01, 60)) == "tie"  # apart by noise, not systematically
    assert compare(a, a * 1.01) == "linear"  # 1% worse on every structure: systematic, not noise
    assert compare(a, a[::-1]) == "tie"  # equal overall error, different structures
    assert compare(a, a * 0.3) == "nonlinear" and compare(a * 0.3, a) == "linear"


def test_trivial_baselines_are_the_mean_energy_and_the_other_levels_labels(source, demo_shards, tmp_path):
    from polyfid.finetune.trivial import trivial_baselines

    data = load_target(_config(tmp_path, source, demo_shards))
    trivial = trivial_baselines(data)
    train, test = data.plan.collate(data.train), data.plan.collate(data.test)
    h, x = data.level_index, data.plan.level_names.index("gfn2-xtb")
    mean = train.energy[:, h].mean()  # one molecule: E0 only is the mean train energy
    assert trivial["E0 only"]["energy_mae"] == pytest.approx(float((test.energy[:, h] - mean).abs().mean()))
    offset = (train.energy[:, h] - train.energy[:, x]).mean()
    shifted = test.energy[:, x] + offset - test.energy[:, h]
    xtb = trivial["gfn2-xtb as-is"]
    assert xtb["energy_mae"] == pytest.approx(float(shifted.abs().mean()), abs=1e-9)
    forces = (test.forces[:, x] - test.forces[:, h]).double().abs().mean()
    assert xtb["forces_mae"] == pytest.approx(float(forces), rel=1e-6)


def test_delta_learning_on_a_baseline_level_adds_the_baseline_everywhere(source, demo_shards, tmp_path):
    """baseline_level: the head fits MP2 - xTB; evaluate adds the shards' xTB labels, the calculator an xTB
    calculator (EMT stands in for it here), and the trivial baseline "xTB as-is" is a zero correction."""
    from ase.build import molecule
    from ase.calculators.emt import EMT

    from polyfid.finetune.evaluate import predict, score
    from polyfid.finetune.run import run_finetune
    from polyfid.models.calculator import BaselineRequiredError, PolyfidCalculator, atoms_to_batch

    cfg = _config(tmp_path, source, demo_shards, max_epochs=3, baseline_level="gfn2-xtb", e0_prior=None,
                  tracking={"register_model": False, "system_metrics": False})  # fmt: skip
    result = run_finetune(cfg)
    package = load_package(result["package"])
    assert package.metadata["head_baselines"] == {LEVEL: "gfn2-xtb"} and result["fitted_on"].startswith("40 (mp2")
    scored = score(predict(package.model, [demo_shards], LEVEL, ("test",), ["demo_target_ethanol"]), LEVEL)
    assert scored.energy_mae == pytest.approx(result["test"]["nonlinear"]["energy_mae"], rel=1e-5)
    assert scored.forces_mae == pytest.approx(result["test"]["nonlinear"]["forces_mae"], rel=1e-4)
    data = load_target(_config(tmp_path, source, demo_shards))  # plain labels: xTB forces as MP2 forces
    test, x = data.plan.collate(data.test), data.plan.level_names.index("gfn2-xtb")
    plain = float((test.forces[:, x] - test.forces[:, data.level_index]).double().abs().mean())
    assert result["test"]["trivial"]["gfn2-xtb as-is"]["forces_mae"] == pytest.approx(plain, rel=1e-6)
    with pytest.raises(BaselineRequiredError, match="baseline="):
        PolyfidCalculator(package, LEVEL)
    ethanol = molecule("CH3CH2OH")
    ethanol.calc = PolyfidCalculator(package, LEVEL, baseline=EMT())
    base = ethanol.copy()
    base.calc = EMT()
    head = package.model(atoms_to_batch([ethanol]), [LEVEL], compute_forces=True)
    assert ethanol.get_potential_energy() == pytest.approx(
        float(head.energy[0, 0].detach()) + base.get_potential_energy()
    )
    assert np.allclose(ethanol.get_forces(), head.forces[:, 0].detach().double().numpy() + base.get_forces())
