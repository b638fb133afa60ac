"""The multi-fidelity claim on the project's own data (data_shards/demo_corpus/target_ethanol.h5: ethanol MD
geometries with GFN2-xTB E+F and MP2/cc-pVDZ E+F; MP2 forces used only for scoring): with the same 100 MP2
energies, adding xTB forces (multifidelity) gives far lower MP2 force errors than training on the MP2 energies
alone."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import yaml

from polyfid.data_shards.record import Record
from polyfid.data_shards.stream import collate
from polyfid.models.package import load_package
from tests.corpus import ethanol_arrays
from tests.pretrain.runs import pretrain_cmd, result, run, write_config

pytestmark = pytest.mark.slow
HIGH, LOW = "mp2/cc-pvdz", "gfn2-xtb"
N_HIGH, N_TEST = 100, 100


@pytest.fixture(scope="module")
def ethanol(tmp_path_factory):
    """Shards of a 300-geometry pool (xTB E+F on all, MP2 energies on 100) and a 100-geometry test set with MP2
    forces."""
    from polyfid.data_shards.build import build_shards
    from polyfid.data_shards.sources import load_build_config

    data = ethanol_arrays()
    z, pos = data["atomic_numbers"], data["positions"]
    xtb_e, xtb_f = data["xtb_gfn2/energy"], data["xtb_gfn2/forces"]
    cc_e, cc_f, cc_ok = data["mp2_ccpvdz/energy"], data["mp2_ccpvdz/forces"], data["mp2_ccpvdz/ok"].astype(bool)
    rng = np.random.default_rng(0)
    labelled = rng.permutation(np.flatnonzero(cc_ok))
    test = labelled[:N_TEST]
    pool = rng.permutation(np.setdiff1d(np.arange(len(pos)), test))
    high = np.where(np.isin(pool, labelled[N_TEST : N_TEST + N_HIGH]), cc_e[pool], np.nan)
    root = tmp_path_factory.mktemp("ethanol_mf")
    with h5py.File(root / "pool.h5", "w") as g:
        g["atomic_numbers"], g["positions"] = z, pos[pool]
        g["xtb/energy"], g["xtb/forces"], g["cc/energy"] = xtb_e[pool], xtb_f[pool], high
    sources = {"sources": [{"name": "ethanol_pool", "path": "pool.h5", "format": "generic_h5",
               "units": {"energy": "ev", "length": "angstrom"},
               "levels": {LOW: {"energy": "xtb/energy", "forces": "xtb/forces"}, HIGH: {"energy": "cc/energy"}},
               "options": {"numbers": "atomic_numbers", "positions": "positions"}}]}  # fmt: skip
    (root / "sources.yaml").write_text(yaml.safe_dump(sources))
    build_shards(load_build_config(root / "sources.yaml"), root / "shards", progress=False)
    test_records = [Record(f"test:{i}", "test", z, pos[i], {}) for i in test]
    return root, collate(test_records, [HIGH], ["test"]), torch.from_numpy(cc_f[test].reshape(-1, 3))


def _force_mae(run_dir, batch, reference) -> float:
    model = load_package(result(run_dir)["package"]).model
    with torch.no_grad():
        forces = model(batch, [HIGH]).forces[:, 0].double()
    return float((forces - reference).abs().mean())


def test_low_level_forces_plus_high_level_energies_beat_high_level_energies_alone(ethanol, tmp_path):
    root, batch, reference = ethanol
    common = {"data": {"datasets": None, "ratios": None, "max_atoms": 144, "levels": None},
              "model": {"settings": {"n_features": 32, "n_sensitivities": 16, "n_interactions": 2,
                                     "n_atom_layers": 2, "cutoff": 5.0}},
              "optim": {"lr": 3e-3, "max_steps": 400, "decay": "cosine", "min_lr_ratio": 0.05},
              "schedule": {"val_every": 100, "checkpoint_every": 400, "log_every": 50},
              "tracking": {"registered_model": None}}  # fmt: skip
    single = write_config(tmp_path / "single", root / "shards", **common, strategy={"kind": "single", "level": HIGH})
    multi = write_config(tmp_path / "multi", root / "shards", **common, strategy={"kind": "multifidelity"})
    run(pretrain_cmd(single), timeout=600)
    run(pretrain_cmd(multi), timeout=600)
    sf, mf = _force_mae(tmp_path / "single", batch, reference), _force_mae(tmp_path / "multi", batch, reference)
    print(f"MP2 force MAE on {N_TEST} held-out geometries, {N_HIGH} MP2 energies: "
          f"single-fidelity {sf * 1000:.0f} meV/A, multi-fidelity (+xTB forces) {mf * 1000:.0f} meV/A")  # fmt: skip
    # measured: 528 vs 316 meV/A (0.60); the bound leaves room for round-off differences between machines
    assert mf < 0.75 * sf, (sf, mf)
