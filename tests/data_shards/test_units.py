"""units.py: every table entry against ase.units, force units, and unknown units."""

from __future__ import annotations

import pytest
from ase import units as u
from pydantic import ValidationError

from polyfid.data_shards.sources import SourceConfig, Units
from polyfid.data_shards.units import ENERGY_TO_EV, LENGTH_TO_ANGSTROM, energy_factor, force_factor, length_factor

EXPECTED_ENERGY = {
    "ev": 1.0,
    "mev": 1e-3,
    "hartree": u.Hartree,
    "ha": u.Hartree,
    "kcal/mol": u.kcal / u.mol,
    "kj/mol": u.kJ / u.mol,
    "rydberg": u.Rydberg,
    "ry": u.Rydberg,
}
EXPECTED_LENGTH = {"angstrom": 1.0, "a": 1.0, "bohr": u.Bohr, "nm": 10.0, "pm": 0.01}


def test_tables_match_ase_units():
    assert ENERGY_TO_EV.keys() == EXPECTED_ENERGY.keys()
    assert LENGTH_TO_ANGSTROM.keys() == EXPECTED_LENGTH.keys()
    for unit, value in EXPECTED_ENERGY.items():
        assert energy_factor(unit) == pytest.approx(value, rel=1e-12), unit
    for unit, value in EXPECTED_LENGTH.items():
        assert length_factor(unit) == pytest.approx(value, rel=1e-12), unit


def test_known_values_and_spelling():
    assert energy_factor("Hartree") == pytest.approx(27.211386, rel=1e-7)
    assert energy_factor(" kcal / mol ") == pytest.approx(0.0433641, rel=1e-6)
    assert length_factor("Bohr") == pytest.approx(0.52917721, rel=1e-8)


@pytest.mark.parametrize(
    ("unit", "expected"),
    [("ev/angstrom", 1.0), ("hartree/bohr", u.Hartree / u.Bohr), ("Hartree/Angstrom", u.Hartree),
     ("ev/nm", 0.1), ("mev/a", 1e-3), ("ry/bohr", u.Rydberg / u.Bohr)],
)  # fmt: skip
def test_force_factor(unit, expected):
    assert force_factor(unit) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("kcal/mol/angstrom", u.kcal / u.mol),
        ("kcal/mol/bohr", u.kcal / u.mol / u.Bohr),
        ("kj/mol/nm", u.kJ / u.mol / 10),
    ],
)
def test_force_factor_per_mol(unit, expected):
    assert force_factor(unit) == pytest.approx(expected, rel=1e-12)


def test_units_model_accepts_kcal_mol():
    assert Units(energy="kcal/mol").force_unit == "kcal/mol/angstrom"


@pytest.mark.parametrize("bad", ["furlong", "", "hartree/"])
def test_unknown_energy_unit(bad):
    with pytest.raises(ValueError, match="unknown energy unit"):
        energy_factor(bad)


def test_unknown_length_and_malformed_force_unit():
    with pytest.raises(ValueError, match="unknown length unit 'parsec'"):
        length_factor("parsec")
    with pytest.raises(ValueError, match="must look like '<energy>/<length>'"):
        force_factor("hartree")


def test_unknown_unit_in_config_is_a_pydantic_error():
    with pytest.raises(ValidationError, match="unknown energy unit 'furlong'"):
        SourceConfig(name="x", path="x.h5", format="ani_h5", units={"energy": "furlong"}, levels={"a": {"energy": "e"}})
    with pytest.raises(ValidationError, match="unknown length unit 'au'"):
        SourceConfig(name="x", path="x.h5", format="ani_h5", units={"length": "au"}, levels={"a": {"energy": "e"}})
    with pytest.raises(ValidationError, match="unknown length unit 'parsec'"):
        SourceConfig(
            name="x", path="x.h5", format="ani_h5",
            levels={"a": {"energy": "e", "units": {"energy": "ev", "forces": "ev/parsec"}}},
        )  # fmt: skip
