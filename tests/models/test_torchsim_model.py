"""PolyfidTorchSimModel: TorchSim's batched states give the ASE calculator's numbers, and TorchSim's runners drive
batched MD and relaxation with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.stress import voigt_6_to_full_3x3_stress

from polyfid.models.calculator import PolyfidCalculator
from polyfid.models.heads import UnknownHeadError
from tests.models.test_calculator import LEVEL, molecule, water_box
from tests.models.test_package import PACKAGE_V1_0

ts = pytest.importorskip("torch_sim", reason="torch-sim-atomistic is not installed")
from polyfid.models.torchsim_model import PolyfidTorchSimModel  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return PolyfidTorchSimModel(PACKAGE_V1_0, LEVEL, device="cpu")


def test_batched_state_matches_the_ase_calculator(model):
    calc = PolyfidCalculator(PACKAGE_V1_0, LEVEL, dtype="float64")
    for systems, stress in (([molecule("CH3OH", 0), molecule("HCOOH", 2), molecule("CH3OH", 5)], False),
                            ([water_box(), water_box()], True)):  # fmt: skip
        systems[-1].rattle(0.05, seed=3)
        state = ts.initialize_state(systems, torch.device("cpu"), torch.float64)
        out = model(state)
        assert out["energy"].shape == (len(systems),) and out["forces"].shape == (state.n_atoms, 3)
        forces = out["forces"].numpy()
        start = 0
        for k, atoms in enumerate(systems):
            assert float(out["energy"][k]) == pytest.approx(calc.get_potential_energy(atoms), abs=1e-8)
            np.testing.assert_allclose(forces[start : start + len(atoms)], calc.get_forces(atoms), atol=1e-8)
            if stress:
                s = voigt_6_to_full_3x3_stress(calc.get_stress(atoms))
                np.testing.assert_allclose(out["stress"][k].numpy(), s, atol=1e-9)
            else:
                assert not out["stress"][k].any()
            start += len(atoms)


def test_batched_md_and_relaxation(model):
    systems = [molecule("CH3OH", k) for k in range(4)]
    final = ts.integrate(system=systems, model=model, integrator=ts.nvt_langevin, n_steps=20, temperature=300.0,
                         timestep=0.0002)  # fmt: skip
    assert final.n_systems == 4 and torch.isfinite(final.positions).all()
    converged = ts.runners.generate_force_convergence_fn(0.05, include_cell_forces=False)
    relaxed = ts.optimize(system=systems[:2], model=model, optimizer=ts.optimizers.fire, max_steps=200,
                          convergence_fn=converged)  # fmt: skip
    out = model(relaxed)
    start = model(ts.initialize_state(systems[:2], torch.device("cpu"), torch.float64))
    assert (out["energy"] < start["energy"]).all()  # each system went downhill
    assert out["forces"].norm(dim=1).max() < start["forces"].norm(dim=1).max()


def test_refuses_an_unknown_head():
    with pytest.raises(UnknownHeadError, match="no-such"):
        PolyfidTorchSimModel(PACKAGE_V1_0, "no-such")
