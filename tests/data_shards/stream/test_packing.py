from __future__ import annotations

import itertools

import pytest

from polyfid.data_shards.stream.packing import OversizeRecordError, pack


@pytest.fixture
def stream(shards):
    """Real records of mixed sizes (3 to 9 atoms), interleaved."""
    recs = sorted(shards.records["train"].values(), key=lambda r: r.id)
    large, small = [r for r in recs if r.n_atoms == 9][:60], [r for r in recs if r.n_atoms < 9]
    return [r for pair in zip(large[::10], small, strict=False) for r in pair] + large


@pytest.mark.parametrize("max_atoms, max_structures", [(9, None), (20, None), (64, 3), (1000, 5)])
def test_budget_and_order(stream, max_atoms, max_structures):
    groups = list(pack(iter(stream), max_atoms, max_structures))
    assert [r.id for g in groups for r in g] == [r.id for r in stream]
    for g, nxt in itertools.pairwise(groups):
        assert sum(r.n_atoms for r in g) <= max_atoms
        assert max_structures is None or len(g) <= max_structures
        # greedy: a group closes only when the next record would break a limit
        assert sum(r.n_atoms for r in g) + nxt[0].n_atoms > max_atoms or len(g) == max_structures


def test_oversize_record_names_its_id(stream):
    big = max(stream, key=lambda r: r.n_atoms)
    with pytest.raises(OversizeRecordError, match=f"{big.id}.*{big.n_atoms} atoms.*max_atoms=8"):
        list(pack(iter([big]), 8))
