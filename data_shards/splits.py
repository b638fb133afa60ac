"""Deterministic train/val/test assignment from a hash of where a record was read (stable when datasets are added).

The hash covers the record's location (file, key, index), not its dataset: geometries that two datasets read from
one file (e.g. one per level of theory) land in the same split, so no test structure is trained on elsewhere.
`split.by` chooses what is hashed (SplitConfig): the whole location, the file key (a molecule or trajectory), the
composition, or blocks of consecutive frames of a key (with `gap` frames dropped on each side of a boundary
between blocks of different splits: MD frames 20 fs apart are near-duplicates, and a test frame next to a training
frame measures interpolation, not generalisation)."""

from __future__ import annotations

import hashlib

import numpy as np
from ase.symbols import Symbols

from polyfid.data_shards.sources import SplitConfig


def _uniform(text: str) -> float:
    u = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8, person=b"polyfid-split").digest(), "big")
    return u / 2.0**64


def formula(numbers: np.ndarray) -> str:
    """Hill-ordered formula ('C2H6O') of a structure's atomic numbers."""
    return Symbols(np.asarray(numbers)).get_chemical_formula("hill")


def split_of(record_id: str, numbers: np.ndarray, split: SplitConfig) -> str | None:
    """'train', 'val' or 'test' from a uniform number derived from what `split.by` hashes of the record's location
    (after `<dataset>/`; `<file>:<key>:<index>`); None: a frame next to a block of another split,
    which the split drops."""
    location = record_id.partition("/")[2] or record_id
    key, _, index = location.rpartition(":")
    if split.by == "group":
        hashed = key
    elif split.by == "formula":
        hashed = formula(numbers)
    elif split.by == "block":
        frame = int(index) if index.isdigit() else 0
        block, within = divmod(frame, split.block)
        own = _assign(f"{key}:block{block}", split)
        if (within < split.gap and block > 0 and _assign(f"{key}:block{block - 1}", split) != own) or (
            within >= split.block - split.gap and _assign(f"{key}:block{block + 1}", split) != own
        ):
            return None
        return own
    else:
        hashed = location
    return _assign(hashed, split)


def _assign(hashed: str, split: SplitConfig) -> str:
    x = _uniform(hashed)
    if x < split.test:
        return "test"
    if x < split.test + split.val:
        return "val"
    return "train"
