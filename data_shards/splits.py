"""Deterministic train/val/test assignment from a hash of the record id (stable when datasets are added)."""

from __future__ import annotations

import hashlib

from polyfid.data_shards.sources import SplitConfig


def split_of(record_id: str, split: SplitConfig) -> str:
    """'train', 'val' or 'test' from a uniform number derived from the id alone."""
    u = int.from_bytes(hashlib.blake2b(record_id.encode(), digest_size=8, person=b"polyfid-split").digest(), "big")
    x = u / 2.0**64
    if x < split.test:
        return "test"
    if x < split.test + split.val:
        return "val"
    return "train"
