"""The scan coordinate is found from the geometries: a torsion in degrees, a stretch in Angstrom, none if static."""

from __future__ import annotations

import numpy as np
from ase.build import molecule

from polyfid.finetune.scan_coordinate import scan_coordinate


def test_torsion_scan_reads_in_degrees():
    ethanol = molecule("CH3CH2OH")
    frames = []
    for angle in range(0, 360, 30):
        a = ethanol.copy()
        a.set_dihedral(3, 2, 1, 0, angle, indices=[3])  # rotate the hydroxyl H (3) about the O-C bond
        frames.append(a.positions.copy())
    found = scan_coordinate(ethanol.numbers, frames)
    assert found is not None and found.label.endswith("dihedral (degrees)") and "H3" in found.label
    assert np.ptp(found.values) == np.ptp(np.arange(0, 360, 30))  # unwrapped: 0..330, no jump at 180
    assert np.allclose(np.diff(found.values), 30) or np.allclose(np.diff(found.values), -30)
    assert abs(found.values.mean()) <= 180  # shown on the turn nearest zero


def test_stretch_scan_reads_in_angstrom_and_static_frames_have_none():
    h2o = molecule("H2O")
    frames = []
    for d in np.linspace(0.9, 1.2, 7):
        a = h2o.copy()
        a.set_distance(0, 1, d, fix=0)
        frames.append(a.positions.copy())
    found = scan_coordinate(h2o.numbers, frames)
    assert found is not None and found.label == "O0-H1 distance (Angstrom)"
    np.testing.assert_allclose(found.values, np.linspace(0.9, 1.2, 7), atol=1e-9)
    assert scan_coordinate(h2o.numbers, [h2o.positions] * 5) is None
