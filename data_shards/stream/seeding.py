"""Random generators derived from a tuple of keys, stable across processes and Python versions."""

from __future__ import annotations

import hashlib

import numpy as np


def derive_rng(*keys: int | str) -> np.random.Generator:
    """A generator seeded by `keys` (ints and strings; strings hashed with blake2b, not `hash()`)."""
    entropy = [
        k if isinstance(k, int) else int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "little")
        for k in keys
    ]
    if any(k < 0 for k in entropy):
        raise ValueError(f"seed keys must be non-negative: {keys}")
    return np.random.default_rng(np.random.SeedSequence(entropy))
