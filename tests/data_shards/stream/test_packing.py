from __future__ import annotations

import itertools

import pytest
from polyfid.data_shards.stream.packing import OversizeRecordError, pack

pytestmark = pytest.mark.shared


@pytest.fixture
def stream(shards):
    """Real records of mixed sizes (9 to 19 atoms), interleaved."""
    recs = sorted(shards.records["train"].values(), key=lambda r: r.id)
    small, large = [r for r in recs if r.n_atoms == 9][:60], [r for r in recs if r.n_atoms > 9]
    return [r for pair in zip(small[::10], large, strict=False) for r in pair] + small


@pytest.mark.parametrize("max_atoms, max_structures", [(19, None), (40, None), (64, 3), (1000, 5)])
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
    with pytest.raises(OversizeRecordError, match=f"{big.id}.*{big.n_atoms} atoms.*max_atoms=12"):
        list(pack(iter([big]), 12))
