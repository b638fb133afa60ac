"""validation.build_record: unit conversion, NaN = missing, and every rejection, each naming file/key/index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import units as u

from polyfid.data_shards.errors import RecordError
from polyfid.data_shards.record import Record
from polyfid.data_shards.sources import SourceConfig
from polyfid.data_shards.validation import MIN_DISTANCE, RawLabels, build_record, min_distance, record_id

PATH = Path("/data/some/file.h5")
NUMBERS = np.array([8, 1, 1])
POSITIONS = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
FORCES = np.arange(9, dtype=float).reshape(3, 3) - 4


def source(**kwargs) -> SourceConfig:
    levels = kwargs.pop("levels", {"hi": {"energy": "e", "forces": "f"}, "lo": {"energy": "e2"}})
    return SourceConfig(name="water", path="x.h5", format="ani_h5", levels=levels, **kwargs)


def build(src: SourceConfig | None = None, numbers=NUMBERS, positions=POSITIONS, labels=None, **kwargs):
    labels = {"hi": RawLabels(energy=-76.4, forces=FORCES)} if labels is None else labels
    return build_record(src or source(), PATH, "mol/7", 3, numbers, positions, labels, **kwargs)


def rejected(result, reason: str) -> RecordError:
    assert isinstance(result, RecordError), result
    assert result.reason == reason, result
    msg = str(result)
    assert str(PATH) in msg and "mol/7[3]" in msg, msg  # names the file, the key and the index
    return result


def test_record_fields_and_id():
    rec = build(charge=np.int64(-1), multiplicity=2.0)
    assert isinstance(rec, Record)
    assert rec.id == record_id("water", PATH.name, "mol/7", 3) == "water/file.h5:mol/7:3"
    assert rec.dataset == "water" and rec.n_atoms == 3
    assert rec.numbers.dtype == np.int64 and rec.positions.dtype == np.float64
    assert (rec.charge, rec.multiplicity) == (-1, 2) and isinstance(rec.charge, int)
    assert rec.cell is None and rec.pbc is None
    assert set(rec.labels) == {"hi"}


def test_unit_conversion_and_gradient():
    src = source(units={"energy": "hartree", "length": "bohr"})
    rec = build(src, labels={"hi": RawLabels(energy=-76.4, forces=FORCES, is_gradient=True)})
    assert rec.labels["hi"].energy == pytest.approx(-76.4 * u.Hartree)
    np.testing.assert_allclose(rec.positions, POSITIONS * u.Bohr)
    np.testing.assert_allclose(rec.labels["hi"].forces, -FORCES * u.Hartree / u.Bohr)


def test_per_level_units_override():
    levels = {"hi": {"energy": "e", "units": {"energy": "ev", "forces": "ev/bohr"}}, "lo": {"energy": "e2"}}
    src = source(units={"energy": "hartree"}, levels=levels)
    rec = build(src, labels={"hi": RawLabels(energy=1.0, forces=FORCES), "lo": RawLabels(energy=1.0)})
    assert rec.labels["hi"].energy == 1.0 and rec.labels["lo"].energy == pytest.approx(u.Hartree)
    np.testing.assert_allclose(rec.labels["hi"].forces, FORCES / u.Bohr)


def test_nan_labels_are_missing():
    labels = {"hi": RawLabels(energy=np.nan, forces=np.full((3, 3), np.nan)), "lo": RawLabels(energy=np.array([-1.0]))}
    rec = build(labels=labels)
    assert set(rec.labels) == {"lo"} and rec.labels["lo"].energy == -1.0
    rec = build(labels={"hi": RawLabels(energy=np.nan, forces=FORCES)})
    assert rec.labels["hi"].energy is None and rec.labels["hi"].forces is not None
    rejected(build(labels={"hi": RawLabels(energy=np.nan), "lo": RawLabels()}), "no_labels")


@pytest.mark.parametrize(
    ("kwargs", "reason", "detail"),
    [
        ({"labels": {"hi": RawLabels(energy=np.inf)}}, "non_finite_energy", "level 'hi'"),
        ({"labels": {"hi": RawLabels(energy=-np.inf)}}, "non_finite_energy", "-inf"),
        ({"labels": {"hi": RawLabels(forces=np.zeros((4, 3)))}}, "bad_shape", "forces shape (4, 3), expected (3, 3)"),
        ({"labels": {"hi": RawLabels(forces=np.where(FORCES > 3, np.inf, FORCES))}}, "non_finite_forces", "'hi'"),
        ({"labels": {"hi": RawLabels(forces=np.where(FORCES > 3, np.nan, FORCES))}}, "partial_nan_forces", "1 of 9"),
        ({"numbers": np.array([8, 0, 1])}, "bad_atomic_number", "[0]"),
        ({"numbers": np.array([8, 200, 1])}, "bad_atomic_number", "[200]"),
        ({"numbers": np.array([8, -1, 1])}, "bad_atomic_number", "[-1]"),
        ({"numbers": np.array([8.0, 1.5, 1.0])}, "bad_atomic_number", "non-integer"),
        ({"numbers": np.array([8.0, np.nan, 1.0])}, "bad_atomic_number", "non-integer"),
        ({"numbers": np.zeros(0, int), "positions": np.zeros((0, 3))}, "empty_structure", "shape (0,)"),
        ({"numbers": np.array([[8, 1, 1]])}, "bad_shape", "atomic numbers shape (1, 3)"),
        ({"positions": POSITIONS[:2]}, "bad_shape", "positions shape (2, 3), expected (3, 3)"),
        ({"positions": np.where(POSITIONS > 0.9, np.nan, POSITIONS)}, "non_finite_positions", ""),
        ({"positions": POSITIONS * [[1, 1, 1], [0.05 / 0.96, 0, 0], [1, 1, 1]]}, "atoms_too_close", "0.0500"),
        ({"cell": np.zeros((3, 3))}, "bad_cell", "zero volume"),
        ({"cell": np.eye(2)}, "bad_cell", "shape (2, 2)"),
    ],
)
def test_rejections(kwargs, reason, detail):
    err = rejected(build(**kwargs), reason)
    assert detail in err.detail


def test_float_integral_numbers_accepted():
    rec = build(numbers=np.array([8.0, 1.0, 1.0]))
    assert rec.numbers.tolist() == [8, 1, 1] and rec.numbers.dtype == np.int64


def test_periodic_cell_minimum_image():
    # two atoms 0.04 A apart through the x boundary of a 5 A cubic cell
    labels = {"hi": RawLabels(energy=0.0)}
    err = build(numbers=np.array([1, 1]), positions=ACROSS_X, labels=labels, cell=np.eye(3) * 5)
    rejected(err, "atoms_too_close")
    src = source(units={"length": "nm"})
    positions_nm = np.array([[0.1, 0.1, 0.1], [0.2, 0.1, 0.1]])
    rec = build(src, numbers=np.array([1, 1]), positions=positions_nm, labels=labels, cell=np.eye(3) * 0.5)
    np.testing.assert_allclose(rec.cell, np.eye(3) * 5)
    assert rec.pbc.tolist() == [True] * 3


ACROSS_X = np.array([[0.02, 1.0, 1.0], [4.98, 1.0, 1.0]])


def test_mixed_pbc_is_not_periodic_along_x():
    rec = build(numbers=np.array([1, 1]), positions=ACROSS_X, labels={"hi": RawLabels(energy=0.0)},
                cell=np.eye(3) * 5, pbc=np.array([False, True, True]))  # fmt: skip
    assert isinstance(rec, Record) and rec.pbc.tolist() == [False, True, True]


def test_min_distance_neighbour_list_path():
    """Above 2048 atoms a neighbour list with a short cutoff is used: pairs farther than it do not count."""
    grid = np.stack(np.meshgrid(*[np.arange(13.0)] * 3, indexing="ij"), -1).reshape(-1, 3) * 1.5  # 2197 atoms
    assert min_distance(grid, None, None) > MIN_DISTANCE
    grid[5] = grid[4] + [0.0, 0.0, 0.05]
    assert min_distance(grid, None, None) == pytest.approx(0.05)
    assert min_distance(np.zeros((1, 3)), None, None) == float("inf")
