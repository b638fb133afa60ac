"""PolyfidCalculator on the committed, briefly trained tiny HIP-NN package (tests/models/data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

from polyfid.data_shards.stream.batch import UnsupportedStateError
from polyfid.models import PolyfidModel, UnknownElementError, UnknownHeadError
from polyfid.models.calculator import PolyfidCalculator, atoms_to_batch, predict
from polyfid.models.package import LoadedPackage, load_package
from polyfid.models.testing.structures import demo_records, water_box_record
from tests.models.test_package import PACKAGE_V1_0

LEVEL = "gfn2-xtb"


@pytest.fixture(scope="module")
def package():
    return load_package(PACKAGE_V1_0)


def molecule(name: str = "CH3OH", frame: int = 0) -> Atoms:
    rec = next(r for r in demo_records((frame,)) if r.id == f"{name}/{frame}")
    return Atoms(numbers=rec.numbers, positions=rec.positions)


def water_box() -> Atoms:
    rec = water_box_record()
    return Atoms(numbers=rec.numbers, positions=rec.positions, cell=rec.cell, pbc=True)


def test_matches_model_output_and_heads_differ(package):
    atoms = molecule("HCOOH", 3)
    atoms.calc = PolyfidCalculator(package, LEVEL)
    with torch.no_grad():
        out = package.model(atoms_to_batch([atoms]), [LEVEL])
        other_out = package.model(atoms_to_batch([atoms]), ["b3lyp/def2-svp"])
    assert atoms.get_potential_energy() == float(out.energy[0, 0])
    assert atoms.get_potential_energy(force_consistent=True) == float(out.energy[0, 0])  # free_energy
    np.testing.assert_array_equal(atoms.get_forces(), out.forces[:, 0].double().numpy())
    other = PolyfidCalculator(PACKAGE_V1_0, "b3lyp/def2-svp").get_potential_energy(atoms)
    assert other == float(other_out.energy[0, 0])
    assert abs(other - atoms.get_potential_energy()) > 100  # a different level of theory, not a silent head 0


def test_charge_and_spin_come_from_atoms_info(package):
    """`atoms.info["charge"]` and `["spin"]` (multiplicity) reach the model: refused by one built without
    charge_spin, conditioning the energy of one built with it."""
    ion = molecule()
    ion.info.update(charge=1, spin=2)
    with pytest.raises(UnsupportedStateError, match=r"charge \+1, multiplicity 2"):
        PolyfidCalculator(package, LEVEL).get_potential_energy(ion)
    model = PolyfidModel(package.model.backbone, package.model.heads, charge_spin=True)
    with torch.no_grad():
        model.state.charge.fill_(0.3)
    charged = LoadedPackage(model=model, metadata=package.metadata)
    neutral = PolyfidCalculator(charged, LEVEL).get_potential_energy(molecule())
    assert neutral == PolyfidCalculator(package, LEVEL).get_potential_energy(molecule())  # zero state: unchanged
    assert abs(PolyfidCalculator(charged, LEVEL).get_potential_energy(ion) - neutral) > 1e-3


def test_level_is_required_and_validated(package):
    with pytest.raises(UnknownHeadError, match=r"'wb97x' .*\['b3lyp/def2-svp', 'gfn2-xtb'\]"):
        PolyfidCalculator(package, "wb97x")
    with pytest.raises(TypeError):
        PolyfidCalculator(package)  # type: ignore[call-arg]


def test_forces_are_minus_gradient_of_energy(package):
    atoms = molecule("CH3CHO", 5)
    atoms.calc = PolyfidCalculator(package, LEVEL, dtype=torch.float64)
    numeric = calculate_numerical_forces(atoms, eps=1e-4)
    np.testing.assert_allclose(atoms.get_forces(), numeric, atol=1e-6)
    assert package.model.dtype == torch.float32  # the caller's model was not cast in place


def test_periodic_stress_matches_finite_differences(package):
    atoms = water_box()
    atoms.calc = PolyfidCalculator(package, LEVEL, dtype="float64")
    stress = atoms.get_stress()
    assert stress.shape == (6,)
    numeric = calculate_numerical_stress(atoms, eps=1e-5)  # (E(+e) - E(-e)) / (2 e V), ASE's sign
    np.testing.assert_allclose(stress, numeric, atol=1e-7)
    assert np.abs(stress).max() > 1e-4  # not trivially zero


def test_stress_of_molecule_is_a_clear_error(package):
    atoms = molecule()
    atoms.calc = PolyfidCalculator(package, LEVEL)
    with pytest.raises(PropertyNotImplementedError, match="periodic"):
        atoms.get_stress()
    assert np.isfinite(atoms.get_potential_energy())


def test_unknown_element(package):
    atoms = Atoms("SiH4", positions=np.random.default_rng(0).normal(0, 1.0, (5, 3)))
    atoms.calc = PolyfidCalculator(package, LEVEL)
    with pytest.raises(UnknownElementError, match=r"\[14\]"):
        atoms.get_potential_energy()


def test_batched_predict_equals_single_calls(package):
    structures = [molecule(name, 2) for name in ("H2O", "CH3OH", "HCOOH", "C2H4", "CH3CN")]
    calc = PolyfidCalculator(package, LEVEL, dtype=torch.float64)
    batched = calc.predict(structures, batch_size=2)
    assert len(batched) == 5
    for atoms, res in zip(structures, batched, strict=True):
        assert res["energy"] == pytest.approx(calc.get_potential_energy(atoms), abs=1e-9)
        np.testing.assert_allclose(res["forces"], calc.get_forces(atoms), atol=1e-9)
    boxes = predict(package, [water_box(), water_box()], LEVEL, batch_size=8, dtype="float64", stress=True)
    np.testing.assert_allclose(boxes[0]["stress"], calc.get_stress(water_box()), atol=1e-10)
    with pytest.raises(PropertyNotImplementedError, match="structure 1"):
        calc.predict([water_box(), molecule()], stress=True)


@pytest.mark.filterwarnings("ignore:Use thermalize_momenta:DeprecationWarning")
def test_nve_energy_conservation(package):
    """200 velocity-Verlet steps of 0.25 fs (50 fs) on CH3OH at 300 K, float64 model.

    Verlet conserves a shadow Hamiltonian, not E: E_tot oscillates with an amplitude of order (omega dt)^2 E_kin,
    at most ~5 meV here (E_kin ~0.2 eV at 300 K for 6 atoms; a 10 fs C-H/O-H period gives (omega dt)^2 ~ 0.025).
    Measured (deterministic: fixed package, seed and start frame): max |E_tot(t) - E_tot(0)| = 0.31 meV, drift
    between first and last quarter means 0.03 meV, against a 212 meV swing of E_pot. Asserted: max deviation
    < 2 meV and < 1% of the E_pot swing, drift < 0.5 meV. Forces that are not -grad E, a non-smooth cutoff or a
    wrong unit would give errors of the order of the swing itself.
    """
    atoms = molecule("CH3OH", 100)
    atoms.calc = PolyfidCalculator(package, LEVEL, dtype=torch.float64)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    etot, epot = [], []

    def record() -> None:
        epot.append(atoms.get_potential_energy())
        etot.append(epot[-1] + atoms.get_kinetic_energy())

    dyn = VelocityVerlet(atoms, timestep=0.25 * units.fs)
    dyn.attach(record, interval=1)
    dyn.run(200)
    etot_arr, epot_arr = np.array(etot), np.array(epot)
    dev = np.abs(etot_arr - etot_arr[0]).max()
    swing = epot_arr.max() - epot_arr.min()
    quarter = len(etot_arr) // 4
    drift = abs(etot_arr[-quarter:].mean() - etot_arr[:quarter].mean())
    print(f"NVE: max |dE_tot| {dev * 1e3:.3f} meV, drift {drift * 1e3:.3f} meV, E_pot swing {swing * 1e3:.1f} meV")
    assert swing > 0.05  # the molecule really moved
    assert dev < 0.002 and dev < 0.01 * swing
    assert drift < 0.0005
