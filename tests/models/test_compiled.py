"""`polyfid export` and the exported head: written beside the package, picked up by PolyfidCalculator, equal to
eager; a stale, damaged or code-carrying file is never used (and never executes anything)."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
from ase import Atoms

from polyfid.cli import main
from polyfid.models.calculator import PolyfidCalculator
from polyfid.models.compiled import exported_path
from polyfid.models.package import load_package, save_package
from tests.models.test_calculator import LEVEL, molecule, water_box
from tests.models.test_package import PACKAGE_V1_0


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    package = shutil.copy(PACKAGE_V1_0, folder / "model.pt")
    assert main(["export", str(package), "--level", "GFN2-xTB", "--dtype", "float64"]) == 0
    return folder / "model.pt"


def test_export_is_used_by_the_calculator_and_matches_eager(exported, capsys):
    path = exported_path(exported, LEVEL, "float64")
    assert path.is_file()
    fast = PolyfidCalculator(exported, LEVEL, dtype="float64")
    eager = PolyfidCalculator(exported, LEVEL, dtype="float64", exported=False)
    assert fast.exported is not None and eager.exported is None
    assert PolyfidCalculator(exported, LEVEL).exported is None  # float32: no float32 export beside it
    structures = [molecule("CH3OH", 3), molecule("HCOOH", 4), Atoms("O", [[0, 0, 0]])]  # a lone atom: no pairs
    for a, b in zip(fast.predict(structures), eager.predict(structures), strict=True):
        assert a["energy"] == pytest.approx(b["energy"], abs=1e-9)
        np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-9)
    for a, b in zip(fast.predict(structures, batch_size=1), eager.predict(structures, batch_size=1), strict=True):
        assert a["energy"] == pytest.approx(b["energy"], abs=1e-9)
        np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-9)
    box = water_box()
    np.testing.assert_allclose(fast.get_stress(box), eager.get_stress(box), atol=1e-12)  # stress runs eager


def test_stale_damaged_or_pickled_exports_are_skipped(exported, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    package = shutil.copy(exported, folder / "model.pt")
    export = shutil.copy(exported_path(exported, LEVEL, "float64"), exported_path(package, LEVEL, "float64"))
    assert PolyfidCalculator(package, LEVEL, dtype="float64").exported is not None

    save_package(package, load_package(package).model, provenance={"retrained": True})  # the package changed
    with pytest.warns(UserWarning, match="exported for another"):
        assert PolyfidCalculator(package, LEVEL, dtype="float64").exported is None

    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (shutil.copy, (str(PACKAGE_V1_0), str(marker)))

    with open(export, "wb") as fh:
        pickle.dump({"format": Payload()}, fh)
    with pytest.warns(UserWarning, match="unreadable exported head"):
        calc = PolyfidCalculator(package, LEVEL, dtype="float64")
    assert calc.exported is None and not marker.exists()  # refused, never run
    assert np.isfinite(calc.get_potential_energy(molecule()))  # eager still works


@pytest.mark.gpu
def test_exported_head_on_cuda_matches_eager(exported):
    """GPU: the exported program (float64) on CUDA against eager on CUDA (skips without a CUDA device)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    structures = [molecule("CH3OH", 3), molecule("HCOOH", 4)]
    fast = PolyfidCalculator(exported, LEVEL, device="cuda", dtype="float64")
    eager = PolyfidCalculator(exported, LEVEL, device="cuda", dtype="float64", exported=False)
    assert fast.exported is not None
    for a, b in zip(fast.predict(structures), eager.predict(structures), strict=True):
        assert a["energy"] == pytest.approx(b["energy"], abs=1e-8)
        np.testing.assert_allclose(a["forces"], b["forces"], atol=1e-8)
