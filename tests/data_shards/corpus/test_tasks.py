"""Corpus tasks: rigid scans move only the fragment beyond the bond; a calculation past its timeout is a reason."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from polyfid.data_shards.corpus.config import MOLECULES, ScanSettings, load_corpus_config

HAVE_QM = all(importlib.util.find_spec(m) is not None for m in ("pyscf", "tblite", "rdkit"))
pytestmark = pytest.mark.skipif(not HAVE_QM, reason="pyscf, tblite and rdkit are needed")


def _molecule(name: str):
    from polyfid.data_shards.corpus.molecules import read_molecules

    (m,) = [m for m in read_molecules(MOLECULES) if m.name == name]
    return m


def _distances(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x[:, None] - x[None], axis=-1)


@pytest.mark.timeout(120)
def test_a_dihedral_scan_turns_one_side_rigidly() -> None:
    from ase import Atoms

    from polyfid.data_shards.corpus.tasks import scan_task

    m = _molecule("1,1,1-trifluoroethane")
    scan = ScanSettings(kind="dihedral", smarts="[#1]C-C(F)(F)F", points=6)
    out = scan_task(m, scan, load_corpus_config(["tiny"]))
    x = out["positions"]
    assert x.shape == (6, 8, 3)
    np.testing.assert_allclose(np.diff(out["coordinate"]) % 360, 60.0, atol=1e-6)
    h, c1, c2, f = out["scan_atoms"][:4]
    for i in range(6):
        assert Atoms(m.numbers, x[i]).get_dihedral(h, c1, c2, f) == pytest.approx(out["coordinate"][i], abs=1e-6)
    cf3 = [c2, *np.flatnonzero(np.array(m.numbers) == 9)]
    ch3 = [c1, *np.flatnonzero(np.array(m.numbers) == 1)]
    for side in (cf3, ch3):  # each side moves rigidly
        np.testing.assert_allclose(_distances(x[:, side][0]), _distances(x[:, side][3]), atol=1e-9)


@pytest.mark.timeout(120)
def test_a_bond_scan_stretches_the_bond() -> None:
    from polyfid.data_shards.corpus.tasks import scan_task

    m = _molecule("dimethyl_sulfoxide")
    scan = ScanSettings(kind="bond", smarts="[SX3]=O", points=4, bond_range_a=(-0.1, 0.2))
    out = scan_task(m, scan, load_corpus_config(["tiny"]))
    s, o = out["scan_atoms"]
    r = np.linalg.norm(out["positions"][:, s] - out["positions"][:, o], axis=-1)
    np.testing.assert_allclose(r, out["coordinate"], atol=1e-9)
    np.testing.assert_allclose(np.diff(r), 0.1, atol=1e-9)


@pytest.mark.timeout(120)
def test_a_calculation_past_its_timeout_becomes_a_reason_and_the_rest_go_on() -> None:
    from polyfid.data_shards.corpus.tasks import label_task

    m = _molecule("1,1,1-trifluoroethane")
    from polyfid.data_shards.corpus.molecules import conformers

    positions = np.repeat(conformers(m, 1, 0), 2, axis=0)
    out = label_task("ccsd(t)/cc-pvdz", m, positions, False, timeout=0.5)
    assert not out["ok"].any() and all("timeout" in e for e in out["error"]) and np.isnan(out["energy"]).all()
    out = label_task("gfn1-xtb", m, positions, True, timeout=60)
    assert out["ok"].all() and np.isfinite(out["forces"]).all() and not any(out["error"])
