"""`committee:` fine-tunes K members, packages them as one committee file, and scores whether their spread ranks
their test errors; the file drives the calculator and `polyfid predict`."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms

from polyfid.cli import main
from polyfid.finetune.committee import committee_scores, member_config, member_data
from polyfid.finetune.run import run_finetune
from polyfid.finetune.train import load_target
from polyfid.models.calculator import PolyfidCalculator
from polyfid.models.package import load_members, load_package
from tests.finetune.test_distill import NO_TRACKING
from tests.finetune.test_finetune import LEVEL, _config


def test_members_share_the_train_set_and_differ_in_seed_and_subsample(source, demo_shards, tmp_path):
    cfg = _config(tmp_path, source, demo_shards, seed=4, committee={"members": 3, "subsample": 0.5})
    sub = member_config(cfg, 2)
    assert sub.seed == 6 and sub.target.subset_seed == 4 and sub.committee is None
    data = load_target(cfg)
    assert [r.id for r in load_target(sub).train] == [r.id for r in data.train]  # the same N target energies
    halves = [member_data(data, 0.5, seed) for seed in (5, 6)]
    assert all(len(h.fit) == len(data.fit) // 2 for h in halves)
    assert {r.id for r in halves[0].fit} != {r.id for r in halves[1].fit}
    assert member_data(data, 1.0, 5) is data


def test_committee_run_packages_members_and_scores_their_spread(source, demo_shards, tmp_path, capsys):
    cfg = _config(tmp_path, source, demo_shards, max_epochs=3, head_init="linear", forces_weight=0.0,
                  committee={"members": 3, "subsample": 0.7}, tracking=NO_TRACKING)  # fmt: skip
    result = run_finetune(cfg)
    c = result["committee"]
    members = load_members(c["package"])
    assert len(members) == 3 and c["members"] == 3
    own = load_package(result["package"]).model.state_dict()
    assert all(torch.equal(v, members[0].model.state_dict()[k]) for k, v in own.items() if isinstance(v, torch.Tensor))
    assert c["energy_std_mean"] > 0 and -1 <= c["energy_spearman"] <= 1  # members differ; a rank correlation
    assert "forces_spearman" in c  # the test split has MP2 forces: the force spread is scored too
    data = load_target(cfg)
    again = committee_scores([m.model for m in members], data.batches(data.test, 180), LEVEL, data.level_index)
    assert again["energy_rmse"] == pytest.approx(c["energy_rmse"], rel=1e-9)

    calc = PolyfidCalculator(c["package"], LEVEL)
    rec = data.test[0]
    atoms = Atoms(numbers=rec.numbers, positions=rec.positions)
    mean = np.mean([PolyfidCalculator([m], LEVEL).get_potential_energy(atoms) for m in members])
    assert calc.get_potential_energy(atoms) == pytest.approx(mean, abs=1e-6)
    assert calc.get_property("energy_std", atoms) > 0

    xyz, out = tmp_path / "in.xyz", tmp_path / "out.xyz"
    ase.io.write(xyz, [atoms, atoms])
    assert main(["predict", c["package"], str(xyz), str(out), "--level", LEVEL]) == 0
    got = ase.io.read(out, ":")
    # float32 members: the std of ~-4,000 eV totals summed in another order (2 frames per call) moves by ~1e-6 eV
    assert got[0].info["energy_std"] == pytest.approx(calc.get_property("energy_std", atoms), abs=1e-4)
    assert "committee of 3" in capsys.readouterr().out
