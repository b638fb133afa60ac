"""Pair finding against brute force (molecules) and ASE's neighbour list (periodic cells)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from polyfid.models import graph as graph_mod
from polyfid.models.graph import Graph, build_graph
from polyfid.models.testing.structures import demo_records, diamond_record, make_batch, water_box_record


def _pairs_set(g: Graph, extra: torch.Tensor | None = None) -> set:
    rows = zip(g.pair_i.tolist(), g.pair_j.tolist(), map(tuple, g.shifts.tolist()), strict=True)
    return set(rows)


def _check_csr(g: Graph) -> None:
    assert bool((g.pair_i[1:] >= g.pair_i[:-1]).all())


def test_molecules_match_brute_force():
    recs = list(demo_records((0, 1)))
    batch = make_batch(recs)
    cutoff = 2.5
    g = build_graph(batch.positions, batch.batch, batch.n_atoms, cutoff)
    _check_csr(g)
    want = set()
    start = 0
    for r in recs:
        d = np.linalg.norm(r.positions[:, None] - r.positions[None], axis=-1)
        for i, j in zip(*np.nonzero((d < cutoff) & ~np.eye(r.n_atoms, dtype=bool)), strict=True):
            want.add((start + int(i), start + int(j), (0, 0, 0)))
        start += r.n_atoms
    assert _pairs_set(g) == want
    torch.testing.assert_close(g.vec, batch.positions[g.pair_j] - batch.positions[g.pair_i])
    torch.testing.assert_close(g.dist, g.vec.norm(dim=1))


def test_chunked_molecule_pairs_equal_unchunked(monkeypatch):
    batch = make_batch(list(demo_records((0, 1))))
    full = build_graph(batch.positions, batch.batch, batch.n_atoms, 3.0)
    monkeypatch.setattr(graph_mod, "MAX_CANDIDATES", 5)  # fewer than one atom's candidates: one atom per chunk
    chunked = build_graph(batch.positions, batch.batch, batch.n_atoms, 3.0)
    assert torch.equal(full.pair_i, chunked.pair_i) and torch.equal(full.pair_j, chunked.pair_j)


@pytest.mark.parametrize("make", [diamond_record, water_box_record])
def test_periodic_matches_ase(make):
    rec = make()
    cutoff = 4.0
    batch = make_batch([*demo_records((0,))[:1], rec])  # a molecule first: global indices offset
    off = int(batch.n_atoms[0])
    g = build_graph(batch.positions, batch.batch, batch.n_atoms, cutoff, batch.cell, batch.pbc)
    _check_csr(g)
    atoms = Atoms(numbers=rec.numbers, positions=rec.positions, cell=rec.cell, pbc=True)
    i, j, s = neighbor_list("ijS", atoms, cutoff)
    want = {(int(a) + off, int(b) + off, tuple(int(x) for x in sh)) for a, b, sh in zip(i, j, s, strict=True)}
    got = {p for p in _pairs_set(g) if p[0] >= off}
    assert got == want
    assert len(want) > 0 and any(p[2] != (0, 0, 0) for p in want)
    ase_d = np.sort(neighbor_list("d", atoms, cutoff))
    np.testing.assert_allclose(np.sort(g.dist[g.pair_i >= off].numpy()), ase_d, rtol=1e-12)


def test_gradients_flow_through_positions_and_cell():
    rec = diamond_record()
    batch = make_batch([rec])
    pos = batch.positions.clone().requires_grad_(True)
    cell = batch.cell.clone().requires_grad_(True)
    g = build_graph(pos, batch.batch, batch.n_atoms, 3.0, cell, batch.pbc)
    gp, gc = torch.autograd.grad(g.dist.pow(2).sum(), [pos, cell], create_graph=True)
    assert gc.abs().sum() > 0 and gp.abs().sum() > 0
    (gc.sum() + gp.pow(2).sum()).backward()  # double backward works (no cdist)
    assert pos.grad is not None


def test_no_pairs():
    pos = torch.tensor([[0.0, 0, 0], [10.0, 0, 0]], dtype=torch.float64)
    g = build_graph(pos, torch.tensor([0, 1]), torch.tensor([1, 1]), 5.0)
    assert g.n_pairs == 0 and g.vec.shape == (0, 3)
