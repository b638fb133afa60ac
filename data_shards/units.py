"""Unit conversion at ingestion: everything is stored in eV and Angstrom (ase.units)."""

from __future__ import annotations

from ase import units as u

ENERGY_TO_EV: dict[str, float] = {
    "ev": 1.0,
    "mev": 1e-3,
    "hartree": u.Hartree,
    "ha": u.Hartree,
    "kcal/mol": u.kcal / u.mol,
    "kj/mol": u.kJ / u.mol,
    "rydberg": u.Rydberg,
    "ry": u.Rydberg,
}
LENGTH_TO_ANGSTROM: dict[str, float] = {
    "angstrom": 1.0,
    "a": 1.0,
    "bohr": u.Bohr,
    "nm": 10.0,
    "pm": 0.01,
}


def _lookup(table: dict[str, float], unit: str, kind: str) -> float:
    key = unit.strip().lower().replace(" ", "")
    if key not in table:
        raise ValueError(f"unknown {kind} unit {unit!r}; known: {sorted(table)}")
    return table[key]


def energy_factor(unit: str) -> float:
    """Multiply an energy in `unit` by this to get eV."""
    return _lookup(ENERGY_TO_EV, unit, "energy")


def length_factor(unit: str) -> float:
    """Multiply a length in `unit` by this to get Angstrom."""
    return _lookup(LENGTH_TO_ANGSTROM, unit, "length")


def force_factor(unit: str) -> float:
    """Multiply a force in `unit` ('<energy>/<length>', e.g. 'hartree/bohr') by this to get eV/Angstrom."""
    energy, sep, length = unit.strip().lower().replace(" ", "").rpartition("/")
    if not sep:
        raise ValueError(f"force unit {unit!r} must look like '<energy>/<length>', e.g. 'hartree/bohr'")
    return energy_factor(energy) / length_factor(length)
