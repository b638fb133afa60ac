from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from polyfid.data_shards.reference_energies import LevelAccumulator


def _molecules(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.choice([1, 6, 7, 8], size=rng.integers(2, 15)) for _ in range(n)]


def test_merged_accumulators_equal_a_direct_least_squares_fit():
    true = {1: -13.6, 6: -1029.0, 7: -1485.0, 8: -2041.0}
    mols = _molecules(300)
    rng = np.random.default_rng(1)
    energies = [sum(true[z] for z in m) + 0.05 * rng.normal() * len(m) for m in mols]
    parts = [LevelAccumulator() for _ in range(3)]
    for k, (m, e) in enumerate(zip(mols, energies, strict=True)):
        parts[k % 3].add(m, e, None)
    merged = LevelAccumulator.from_dict(parts[0].to_dict())
    merged.merge(parts[1])
    merged.merge(parts[2])
    stats = merged.fit(["d"])
    assert stats.e0_determined and stats.e0_rank == 4
    a = np.array([[np.sum(m == z) for z in (1, 6, 7, 8)] for m in mols], dtype=float)
    e0, *_ = np.linalg.lstsq(a, np.array(energies), rcond=None)
    assert [stats.e0[str(z)] for z in (1, 6, 7, 8)] == pytest.approx(e0, abs=1e-8)
    resid = (np.array(energies) - a @ e0) / a.sum(1)
    assert stats.residual_per_atom_mean == pytest.approx(resid.mean(), abs=1e-9)
    assert stats.residual_per_atom_std == pytest.approx(resid.std(), rel=1e-6)


def test_forces_only_level_and_collinear_counts():
    acc = LevelAccumulator()
    forces = np.array([[0.1, 0.0, -0.2], [0.3, 0.1, 0.0]])
    acc.add(np.array([1, 1]), None, forces)
    stats = acc.fit([])
    assert stats.n_energy == 0 and stats.force_rms == pytest.approx(np.sqrt(np.mean(forces**2)))
    single = LevelAccumulator()  # one molecule type: E0 is the minimum-norm solution reproducing the mean
    for e in (-100.0, -102.0):
        single.add(np.array([1, 1, 8]), e, None)
    fit = single.fit(["w"])
    assert 2 * fit.e0["1"] + fit.e0["8"] == pytest.approx(-101.0)
    assert fit.e0_rank == 1 and not fit.e0_determined


def test_fit_e0_full_rank_is_the_least_squares_solution_on_real_molecules():
    from polyfid.data_shards.reference_energies import fit_e0
    from polyfid.models.testing.structures import ELEMENTS, LEVEL, demo_records

    recs = demo_records((0, 50, 100))
    counts = np.array([[np.sum(r.numbers == z) for z in ELEMENTS] for r in recs], dtype=float)
    energy = np.array([r.labels[LEVEL].energy for r in recs])
    fit = fit_e0(counts, energy)
    assert fit.rank == 4 and fit.determined.all() and fit.null_space.shape == (0, 4)
    assert fit.undetermined(ELEMENTS) == []
    np.testing.assert_allclose(fit.e0, np.linalg.lstsq(counts, energy, rcond=None)[0], rtol=1e-10)
    gram, moment = counts.T @ counts, counts.T @ energy  # what the streamed build keeps: the same solution
    np.testing.assert_allclose(fit_e0(gram, moment).e0, fit.e0, rtol=1e-9)


def test_fit_e0_on_one_composition_says_what_it_cannot_determine():
    """Ethanol alone fixes only 2 E0_C + 6 E0_H + E0_O: E0 is the minimum-norm solution, the fit reports the two
    undetermined directions and that no single element is determined."""
    from polyfid.data_shards.reference_energies import fit_e0

    counts = np.tile([6.0, 2.0, 1.0], (20, 1))  # H, C, O
    energy = -4200.0 + np.linspace(-0.1, 0.1, 20)
    fit = fit_e0(counts, energy)
    assert fit.rank == 1 and not fit.determined.any() and fit.null_space.shape == (2, 3)
    assert counts[0] @ fit.e0 == pytest.approx(energy.mean())
    np.testing.assert_allclose(fit.e0, np.linalg.lstsq(counts, energy, rcond=None)[0], rtol=1e-9)
    assert len(fit.undetermined([1, 6, 8])) == 2 and all("H" in d or "C" in d for d in fit.undetermined([1, 6, 8]))
    np.testing.assert_allclose(fit.null_space @ counts[0], 0.0, atol=1e-9)  # the data never sees these directions
    partial = fit_e0(np.array([[2.0, 0, 0], [2.0, 0, 1], [0, 1, 0], [0, 2, 0]]), np.ones(4))
    assert partial.rank == 3 and partial.determined.tolist() == [True, True, True]
    one_missing = fit_e0(np.array([[2.0, 0, 0], [2.0, 0, 0], [0, 1, 0]]), np.ones(3))
    assert one_missing.determined.tolist() == [True, True, False] and one_missing.e0[2] == 0.0


def test_a_level_spread_over_folders_gets_the_joint_fit_of_all_of_them():
    """Two folders of one level with different elements (S only in one, Cl only in the other): the merged E0 is the
    joint least-squares fit, and no element is left at 0; older manifests (no sums) take each element from a folder
    that saw it."""
    from polyfid.data_shards.reference_energies import LevelAccumulator, merge_level_stats

    rng = np.random.default_rng(0)
    truth = {1: -13.6, 6: -1030.0, 8: -2040.0, 16: -10830.0, 17: -12500.0}
    parts, joint = [], LevelAccumulator()
    for extra in (16, 17):
        acc = LevelAccumulator()
        for _ in range(30):
            numbers = rng.choice([1, 6, 8, extra], size=int(rng.integers(3, 9)))
            energy = sum(truth[int(z)] for z in numbers) + rng.normal(0, 0.01)
            acc.add(numbers, energy, None)
            joint.add(numbers, energy, None)
        parts.append(acc.fit([f"with-{extra}"]))
    assert "17" not in parts[0].e0 and "16" not in parts[1].e0
    merged = merge_level_stats(parts)
    expected = joint.fit(["with-16", "with-17"])
    assert merged.e0 == pytest.approx(expected.e0) and merged.datasets == ["with-16", "with-17"]
    assert merged.e0["16"] == pytest.approx(truth[16], abs=0.1) and merged.e0["17"] == pytest.approx(truth[17], abs=0.1)
    old = merge_level_stats([replace(p, sums=None) for p in parts])
    assert set(old.e0) == {"1", "6", "8", "16", "17"} and old.e0["17"] == pytest.approx(truth[17], abs=0.1)
