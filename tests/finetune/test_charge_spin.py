"""Charge and spin end to end, on real GFN2-xTB numbers: water as a neutral singlet, a cation doublet and an anion
doublet at the same geometries (a model blind to the state cannot tell them apart), written as extxyz with
`info["charge"]`/`info["spin"]`, built into shards, fitted from scratch with `model.charge_spin`, and used through
the ASE calculator; a model built without it refuses the charged records."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import molecule

from polyfid.cli import main
from polyfid.data_shards.build import build_shards
from polyfid.data_shards.qm import Worker
from polyfid.data_shards.sources import load_build_config
from polyfid.finetune.evaluate import predict, score
from polyfid.models.calculator import PolyfidCalculator

STATES = [(0, 1), (1, 2), (-1, 2)]  # (charge, multiplicity)
LEVEL = "gfn2-xtb"


@pytest.fixture(scope="module")
def water_states(tmp_path_factory):
    """Shards of 40 displaced water geometries x 3 states, GFN2-xTB (tblite) energies and forces."""
    tmp = tmp_path_factory.mktemp("states")
    rng, base, frames = np.random.default_rng(0), molecule("H2O"), []
    with Worker("xtb") as worker:
        for _ in range(40):
            positions = base.positions + rng.normal(0, 0.08, base.positions.shape)
            for q, m in STATES:
                ok, value, _ = worker.call("xtb_energy_forces", (base.numbers, positions, q, m), 120)
                assert ok, value
                atoms = Atoms(base.numbers, positions, info={"charge": q, "spin": m, "xtb_energy": value[0]})
                atoms.arrays["xtb_forces"] = value[1]
                frames.append(atoms)
    ase.io.write(tmp / "water.extxyz", frames)
    source = {"name": "water_states", "path": str(tmp / "water.extxyz"), "format": "ase",
              "units": {"energy": "ev", "length": "angstrom"},
              "levels": {LEVEL: {"energy": "xtb_energy", "forces": "xtb_forces"}},
              "options": {"charge": "charge", "multiplicity": "spin"}}  # fmt: skip
    (tmp / "sources.yaml").write_text(yaml.safe_dump({"split": {"val": 0.15, "test": 0.2}, "sources": [source]}))
    build_shards(load_build_config(tmp / "sources.yaml"), tmp / "shards", progress=False)
    return tmp / "shards"


def _config(tmp_path, shards, charge_spin: bool):
    raw = {"run_dir": str(tmp_path / "run"), "init": "scratch", "steps": 300, "lr": 3e-3, "forces_weight": 1.0,
           "tracking": {"register_model": False, "system_metrics": False},
           "model": {"backbone": "hipnn", "charge_spin": charge_spin,
                     "settings": {"n_features": 16, "n_sensitivities": 8, "n_atom_layers": 1, "n_interactions": 1}},
           "target": {"shard_dirs": [str(shards)], "level": LEVEL, "max_atoms": 96}}  # fmt: skip
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_a_charge_spin_model_tells_the_states_apart(water_states, tmp_path):
    assert main(["finetune", _config(tmp_path, water_states, True)]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    test, blind = result["test"]["nonlinear"], result["test"]["trivial"]["E0 only"]
    assert blind["energy_mae"] > 5.0  # the states are eV apart: E0 alone cannot tell them
    assert test["energy_mae"] < 0.15 * blind["energy_mae"]
    calc = PolyfidCalculator(result["package"], LEVEL)
    scored = score(predict(calc.model, [water_states], LEVEL, ("test",)), LEVEL)  # evaluate sees the states too
    assert scored.energy_mae == pytest.approx(test["energy_mae"], rel=1e-6)
    ion = next(r for r in ase.io.read(water_states.parent / "water.extxyz", ":") if r.info["charge"] == 1)
    cation = calc.get_potential_energy(ion)
    ion.info.update(charge=0, spin=1)  # the same geometry and calculator, another state: recomputed
    assert abs(calc.get_potential_energy(ion) - cation) > 5.0


def test_a_model_without_charge_spin_refuses_the_charged_records(water_states, tmp_path, capsys):
    assert main(["finetune", _config(tmp_path, water_states, False)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after MLflow's own log lines
    assert "water_states" in last and "multiplicity 2" in last and "charge_spin: true" in last
