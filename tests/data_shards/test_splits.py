from __future__ import annotations

from collections import Counter

import numpy as np

from polyfid.data_shards.sources import SplitConfig
from polyfid.data_shards.splits import split_of

WATER = np.array([8, 1, 1])


def test_split_is_a_stable_function_of_the_id_with_the_requested_fractions():
    cfg = SplitConfig(val=0.1, test=0.2)
    ids = [f"file.h5:grp:{i}" for i in range(20000)]
    first = [split_of(i, WATER, cfg) for i in ids]
    assert first == [split_of(i, WATER, cfg) for i in ids]
    counts = Counter(first)
    assert abs(counts["val"] / 20000 - 0.1) < 0.01 and abs(counts["test"] / 20000 - 0.2) < 0.01
    # growing val only moves records out of train: existing val/test assignments are stable
    wider = [split_of(i, WATER, SplitConfig(val=0.15, test=0.2)) for i in ids]
    assert all(w == f for f, w in zip(first, wider, strict=True) if f != "train")


def test_group_and_formula_splits_keep_a_molecule_or_composition_in_one_split():
    group = SplitConfig(val=0.3, test=0.3, by="group")
    for key in ("mol-a", "mol-b", "mol-c", "mol-d"):
        assert len({split_of(f"ds/f.h5:{key}:{i}", WATER, group) for i in range(50)}) == 1
    by_formula = SplitConfig(val=0.3, test=0.3, by="formula")
    ethanol, dme = np.array([6, 6, 1, 1, 1, 1, 1, 1, 8]), np.array([6, 1, 1, 1, 8, 6, 1, 1, 1])
    assert split_of("ds/a.h5:x:1", ethanol, by_formula) == split_of("ds/b.xyz::7", dme, by_formula)  # isomers


def test_block_split_keeps_held_out_frames_away_from_training_frames():
    cfg = SplitConfig(val=0.2, test=0.3, by="block", block=10, gap=1)
    splits = [split_of(f"ds/md.h5:traj:{i}", WATER, cfg) for i in range(2000)]
    blocks = [splits[b * 10 + 5] for b in range(200)]  # a block's middle frame carries its split
    for b in range(199):  # the frames on each side of a boundary are dropped only between different splits
        assert (splits[b * 10 + 9] is None) == (splits[b * 10 + 10] is None) == (blocks[b] != blocks[b + 1])
    for i, s in enumerate(splits):
        if s in ("val", "test"):  # no frame of another split within 2 frames
            near = {splits[j] for j in range(max(0, i - 2), min(len(splits), i + 3))} - {None, s}
            assert not near, (i, s, near)
    counts = Counter(splits)
    assert 0 < counts[None] < 400 and counts["test"] > 300 and counts["val"] > 200


def test_a_gap_that_drops_whole_blocks_is_refused():
    import pytest

    with pytest.raises(ValueError, match="drops every frame"):
        SplitConfig(by="block", block=4, gap=2)
