"""Geometry sampling: harmonic displacements have the Boltzmann spread; xTB sampling labels what it samples."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from ase import units
from ase.build import molecule

from polyfid.data_shards.corpus.sampling import MD, MINIMUM, NORMAL_MODE, normal_mode_samples

HAVE_XTB = importlib.util.find_spec("tblite") is not None


def test_normal_mode_displacements_follow_the_boltzmann_spread() -> None:
    """On a known Hessian, the variance along each vibrational mode is kT / max(eigenvalue, floor)."""
    rng = np.random.default_rng(0)
    positions = molecule("H2O").positions
    q, _ = np.linalg.qr(rng.normal(size=(9, 9)))
    eig = np.array([0, 0, 0, 0, 0, 0, 1.0, 10.0, 40.0])  # 6 zero modes, one softer than the floor
    hess = q @ np.diag(eig) @ q.T
    xs = np.array(normal_mode_samples(hess, positions, 500.0, 4000, floor=2.0, rng=rng))
    proj = (xs - positions).reshape(len(xs), -1) @ q
    kt = units.kB * 500.0
    np.testing.assert_allclose(proj[:, 6:].var(axis=0), kt / np.array([2.0, 10.0, 40.0]), rtol=0.1)
    assert np.abs(proj[:, :6]).max() < 1e-9  # nothing along translations and rotations


@pytest.mark.skipif(not HAVE_XTB, reason="tblite is needed")
def test_sampled_structures_carry_their_own_gfn2_labels() -> None:
    from polyfid.data_shards.corpus.sampling import sample_geometries
    from polyfid.data_shards.qm import xtb_energy_forces

    water = molecule("H2O")
    md = {
        "temperatures_k": [400.0],
        "frames": 5,
        "stride": 4,
        "equil_steps": 10,
        "timestep_fs": 0.5,
        "friction_per_fs": 0.02,
    }
    nm = {"temperatures_k": [400.0], "samples": 4, "stiffness_floor_ev_a2": 2.0}
    out = sample_geometries(water.numbers, water.positions[None], 0, 1, md, nm, seed=3)
    assert out["positions"].shape == (1 + 5 + 4, 3, 3) and not out["errors"]
    assert list(out["origin"][:, 0]) == [MINIMUM] + [MD] * 5 + [NORMAL_MODE] * 4
    for i in (0, 3, 8):
        e, f = xtb_energy_forces(water.numbers, out["positions"][i])
        assert abs(e - out["energy"][i]) < 1e-6 and np.abs(f - out["forces"][i]).max() < 1e-3
    assert np.abs(out["forces"][0]).max() < 0.02  # the minimum is relaxed
    again = sample_geometries(water.numbers, water.positions[None], 0, 1, md, nm, seed=3)
    np.testing.assert_allclose(again["positions"], out["positions"], atol=1e-9)  # a seed gives the same samples
