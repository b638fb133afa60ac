"""Committee files and committee uncertainty in PolyfidCalculator (members: the tiny committed package, perturbed)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase.calculators.calculator import PropertyNotImplementedError

from polyfid.models.calculator import PolyfidCalculator
from polyfid.models.package import PackageError, load_members, load_package, save_committee, save_package
from tests.models.test_calculator import LEVEL, molecule, water_box
from tests.models.test_package import PACKAGE_V1_0


@pytest.fixture(scope="module")
def members():
    """Three models: the package and two copies with every weight nudged (a committee's spread, made cheaply)."""
    base = load_package(PACKAGE_V1_0).model
    out = [base]
    for seed in (1, 2):
        model = copy.deepcopy(base)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        out.append(model)
    return out


def test_committee_file_round_trip_and_refusals(members, tmp_path):
    path = save_committee(tmp_path / "committee.pt", members, provenance={"test": True})
    loaded = load_members(path)
    assert len(loaded) == 3 and all(m.heads == loaded[0].heads for m in loaded)
    for m, original in zip(loaded, members, strict=True):
        for (k, a), b in zip(m.model.state_dict().items(), original.state_dict().values(), strict=True):
            if isinstance(a, torch.Tensor):
                assert torch.equal(a, b), k
    single = save_package(tmp_path / "single.pt", members[0], provenance={})
    assert len(load_members(single)) == 1  # a package reads as a committee of one
    with pytest.raises(PackageError, match="committee of 3 models"):
        load_package(path)
    with pytest.raises(ValueError, match="at least 2"):
        save_committee(tmp_path / "one.pt", members[:1], provenance={})
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(PackageError, match=r"damaged\.pt"):
        load_members(damaged)


def test_committee_mean_and_std(members, tmp_path):
    """Energy, forces and stress are the members' mean; *_std their population spread; a single model has none."""
    path = save_committee(tmp_path / "committee.pt", members, provenance={})
    calc = PolyfidCalculator(path, LEVEL)
    assert calc.committee_size == 3
    singles = [PolyfidCalculator(load_package(PACKAGE_V1_0), LEVEL)]
    singles += [PolyfidCalculator([m], LEVEL) for m in load_members(path)[1:]]
    box = water_box()
    for atoms, props in ((molecule("HCOOH", 2), ("energy", "forces")), (box, ("energy", "forces", "stress"))):
        each = {p: np.array([c.get_property(p, atoms) for c in singles]) for p in props}
        for p in props:
            got = calc.get_property(p, atoms)
            np.testing.assert_allclose(got, each[p].mean(0), rtol=1e-6, atol=1e-8)
            np.testing.assert_allclose(calc.get_property(f"{p}_std", atoms), each[p].std(0), rtol=1e-5, atol=1e-8)
        assert calc.get_property("energy_std", atoms) > 1e-4  # the nudged members disagree
    batched = calc.predict([molecule("HCOOH", 2), molecule("CH3OH", 1)], max_atoms=6)
    assert batched[0]["energy_std"] == pytest.approx(calc.get_property("energy_std", molecule("HCOOH", 2)), rel=1e-6)
    lone = molecule("CH3OH", 3)
    singles[0].get_property("energy", lone)
    assert not any(k.endswith("_std") for k in singles[0].results)  # one model: no spread to report
    with pytest.raises(PropertyNotImplementedError):
        singles[0].get_property("energy_std", lone)


def test_predict_batches_by_atom_budget(members):
    calc = PolyfidCalculator([load_package(PACKAGE_V1_0)], LEVEL)
    structures = [molecule("CH3OH", k) for k in range(5)]  # 6 atoms each
    seen: list[int] = []
    batched = calc.predict(structures, max_atoms=13, progress=seen.append)
    assert seen == [2, 2, 1]  # two per batch under 13 atoms
    alone = [calc.predict([a])[0] for a in structures]
    for b, a in zip(batched, alone, strict=True):
        assert b["energy"] == pytest.approx(a["energy"], abs=1e-5)  # float32 sums in another order
        np.testing.assert_allclose(b["forces"], a["forces"], rtol=1e-5, atol=1e-6)
