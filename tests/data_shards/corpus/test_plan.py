"""Which structures each level labels: nested, size-limited, and stable in chunks as counts grow."""

from __future__ import annotations

from polyfid.data_shards.corpus.config import LevelPlan
from polyfid.data_shards.corpus.molecules import Molecule
from polyfid.data_shards.corpus.plan import label_chunks

SMALL = Molecule(0, "methanol", "CO", "pretrain", (6, 8, 1, 1, 1, 1), 0, 1)
BIG = Molecule(1, "hexane", "CCCCCC", "pretrain", (6,) * 6 + (1,) * 14, 0, 1)
PLANS = (
    LevelPlan(level="gfn1-xtb"),
    LevelPlan(level="hf/def2-svp", per_molecule=30, max_heavy_atoms=6),
    LevelPlan(level="mp2/cc-pvdz", per_molecule=12, max_heavy_atoms=6, forces=False),
    LevelPlan(level="ccsd(t)/cc-pvdz", per_molecule=5, max_heavy_atoms=2, forces=False),
)


def _indices(chunks: list, level: str) -> list[int]:
    return [i for c in chunks if c.level == level for i in c.indices]


def test_levels_nest_and_respect_the_size_limits() -> None:
    small = label_chunks(SMALL, "sampled", 100, PLANS, seed=0, chunk_size=8)
    sets = [set(_indices(small, p.level)) for p in PLANS]
    assert [len(s) for s in sets] == [100, 30, 12, 5]
    assert sets[3] <= sets[2] <= sets[1] <= sets[0]
    big = label_chunks(BIG, "sampled", 100, PLANS, seed=0, chunk_size=8)
    assert len(_indices(big, "mp2/cc-pvdz")) == 12 and not _indices(big, "ccsd(t)/cc-pvdz")


def test_raising_a_count_keeps_every_full_chunk() -> None:
    before = label_chunks(SMALL, "sampled", 100, PLANS[1:2], seed=0, chunk_size=8)
    more = (LevelPlan(level="hf/def2-svp", per_molecule=60),)
    after = label_chunks(SMALL, "sampled", 100, more, seed=0, chunk_size=8)
    full_before = [c for c in before if len(c.indices) == 8]
    assert full_before == after[: len(full_before)]


def test_seeds_and_molecules_give_different_orders() -> None:
    a = _indices(label_chunks(SMALL, "sampled", 50, PLANS[1:2], 0, 8), "hf/def2-svp")
    b = _indices(label_chunks(SMALL, "sampled", 50, PLANS[1:2], 1, 8), "hf/def2-svp")
    c = _indices(label_chunks(BIG, "sampled", 50, PLANS[1:2], 0, 8), "hf/def2-svp")
    assert a != b and a != c


def test_a_scan_is_labelled_whole_and_in_order() -> None:
    chunks = label_chunks(BIG, "scan", 7, PLANS, seed=0, chunk_size=3)
    assert _indices(chunks, "mp2/cc-pvdz") == list(range(7))
    assert _indices(chunks, "ccsd(t)/cc-pvdz") == list(range(7))  # scans ignore the per-molecule limits
