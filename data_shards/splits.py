"""Deterministic train/val/test assignment from a hash of where a record was read (stable when datasets are added).

The hash covers the record's location (file, key, index), not its dataset: geometries that two datasets read from
one file (e.g. one per level of theory) land in the same split, so no test structure is trained on elsewhere."""

from __future__ import annotations

import hashlib

from polyfid.data_shards.sources import SplitConfig


def split_of(record_id: str, split: SplitConfig) -> str:
    """'train', 'val' or 'test' from a uniform number derived from the id's location (after `<dataset>/`)."""
    location = record_id.partition("/")[2] or record_id
    u = int.from_bytes(hashlib.blake2b(location.encode(), digest_size=8, person=b"polyfid-split").digest(), "big")
    x = u / 2.0**64
    if x < split.test:
        return "test"
    if x < split.test + split.val:
        return "val"
    return "train"
