"""`polyfid predict`: any ase.io file in, extxyz with energies, forces, stress and committee spreads out."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest

from polyfid.cli import main
from polyfid.models.calculator import PolyfidCalculator
from tests.models.test_calculator import LEVEL, molecule, water_box
from tests.models.test_package import PACKAGE_V1_0


@pytest.fixture
def structures(tmp_path):
    frames = [molecule("HCOOH", 1), water_box(), molecule("CH3OH", 2)]
    path = tmp_path / "in.traj"  # an ASE trajectory: not extxyz, read through ase.io
    ase.io.write(path, frames)
    return path, frames


def test_predict_writes_energy_forces_and_stress(structures, tmp_path, capsys):
    path, frames = structures
    out = tmp_path / "out.xyz"
    assert main(["predict", str(PACKAGE_V1_0), str(path), str(out), "--level", "GFN2-xTB", "--max-atoms", "8"]) == 0
    assert "3 frames" in capsys.readouterr().out
    got = ase.io.read(out, ":")
    calc = PolyfidCalculator(PACKAGE_V1_0, LEVEL)
    for atoms, ref in zip(got, frames, strict=True):
        np.testing.assert_array_equal(atoms.numbers, ref.numbers)
        assert atoms.get_potential_energy() == pytest.approx(calc.get_potential_energy(ref), abs=1e-5)
        np.testing.assert_allclose(atoms.get_forces(), calc.get_forces(ref), atol=1e-5)
        assert atoms.info["polyfid_level"] == LEVEL and "energy_std" not in atoms.info
    np.testing.assert_allclose(got[1].get_stress(), calc.get_stress(frames[1]), atol=1e-7)  # the cell has stress
    assert "stress" not in got[0].calc.results  # a molecule has none


def test_predict_committee_reports_spread(structures, tmp_path):
    path, _ = structures
    out = tmp_path / "committee.xyz"
    args = ["predict", str(PACKAGE_V1_0), str(path), str(out), "--level", LEVEL, "--committee", str(PACKAGE_V1_0)]
    assert main(args) == 0
    got = ase.io.read(out, ":")
    assert all(a.info["energy_std"] == pytest.approx(0, abs=1e-6) for a in got)  # identical members agree
    assert got[0].arrays["forces_std"].shape == (len(got[0]), 3)
    assert got[1].info["stress_std"].shape == (6,)


@pytest.mark.parametrize(
    ("content", "args", "match"),
    [
        ("not a structure file\n", [], "ase.io cannot read it"),
        (None, ["--level", "no-such-level"], "is not a head"),
    ],
)
def test_predict_refuses_in_one_line(structures, tmp_path, capsys, content, args, match):
    path, _ = structures
    if content is not None:
        path = tmp_path / "bad.xyz"
        path.write_text(content)
    out = tmp_path / "out.xyz"
    argv = ["predict", str(PACKAGE_V1_0), str(path), str(out), *(args or ["--level", LEVEL])]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and match in err
    assert not out.exists()  # nothing half-written
