"""The multi-fidelity claim on real data (../shared ethanol_ccsdt_xtb.h5: GFN2-xTB E+F on sGDML CCSD(T) geometries,
real CCSD(T)/cc-pVTZ energies; CCSD(T) forces used only for scoring): with the same 100 CCSD(T) energies, adding
xTB forces (multifidelity) gives far lower CCSD(T) force errors than training on the CCSD(T) energies alone."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import yaml
from polyfid.data_shards.record import Record
from polyfid.data_shards.stream import collate

from polyfid.models.package import load_package
from tests.pretrain.runs import pretrain_cmd, result, run, write_config
from tests.shared_data import shared_path

pytestmark = [pytest.mark.slow, pytest.mark.shared]
HIGH, LOW = "ccsd(t)/cc-pvtz", "gfn2-xtb"
N_HIGH, N_POOL, N_TEST = 100, 400, 200


@pytest.fixture(scope="module")
def ethanol(tmp_path_factory):
    """Shards of a 400-geometry pool (xTB E+F on all, CCSD(T) energies on 100) and a 200-geometry test set."""
    from polyfid.data_shards.build import build_shards
    from polyfid.data_shards.sources import load_build_config

    with h5py.File(shared_path("generated/ethanol_ccsdt_xtb.h5")) as f:
        z, pos = f["atomic_numbers"][()], f["positions"][()]
        xtb_e, xtb_f = f["xtb_gfn2/energy"][()], f["xtb_gfn2/forces"][()]
        cc_e, cc_f = f["ccsd_t_ccpvtz/energy"][()], f["ccsd_t_ccpvtz/forces"][()]
    order = np.random.default_rng(0).permutation(len(pos))
    test, pool = order[:N_TEST], order[N_TEST : N_TEST + N_POOL]
    high = np.full(N_POOL, np.nan)
    high[:N_HIGH] = cc_e[pool[:N_HIGH]]
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
    print(f"CCSD(T) force MAE on {N_TEST} held-out geometries, {N_HIGH} CCSD(T) energies: "
          f"single-fidelity {sf * 1000:.0f} meV/A, multi-fidelity (+xTB forces) {mf * 1000:.0f} meV/A")  # fmt: skip
    assert mf < 0.6 * sf, (sf, mf)
