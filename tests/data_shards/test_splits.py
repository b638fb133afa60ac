from __future__ import annotations

from collections import Counter

from polyfid.data_shards.sources import SplitConfig
from polyfid.data_shards.splits import split_of


def test_split_is_a_stable_function_of_the_id_with_the_requested_fractions():
    cfg = SplitConfig(val=0.1, test=0.2)
    ids = [f"file.h5:grp:{i}" for i in range(20000)]
    first = [split_of(i, cfg) for i in ids]
    assert first == [split_of(i, cfg) for i in ids]
    counts = Counter(first)
    assert abs(counts["val"] / 20000 - 0.1) < 0.01 and abs(counts["test"] / 20000 - 0.2) < 0.01
    # growing val only moves records out of train: existing val/test assignments are stable
    wider = [split_of(i, SplitConfig(val=0.15, test=0.2)) for i in ids]
    assert all(w == f for f, w in zip(first, wider, strict=True) if f != "train")
