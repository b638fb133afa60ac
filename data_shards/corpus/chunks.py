"""Chunk files: each finished unit of corpus work as an .npz (no pickles) with a sha256 sidecar, written
atomically by the driver; a chunk whose file or digest is missing or wrong is computed again, never trusted."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from polyfid.core.atomic import atomic_write_bytes
from polyfid.core.digest import sha256_file


def content_key(*parts: Any) -> str:
    """A short hash of JSON-able parts and arrays: a chunk's name changes whenever what it computes changes."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
            h.update(str((part.dtype, part.shape)).encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def save_chunk(path: Path, arrays: dict[str, Any]) -> str:
    """Write `arrays` (lists of strings become unicode arrays) and then its digest; returns the digest."""
    buf = io.BytesIO()
    np.savez(
        buf, **{k: np.asarray(v) if not isinstance(v, list) else np.asarray(v, dtype=str) for k, v in arrays.items()}
    )
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(_sidecar(path), digest.encode())
    return digest


def load_chunk(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a finished chunk, or None when it is absent, unfinished or does not match its digest."""
    side = _sidecar(path)
    if not (path.is_file() and side.is_file()) or side.read_text().strip() != sha256_file(path):
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def chunk_digest(path: Path) -> str:
    """The recorded digest of a finished chunk (load_chunk has checked it)."""
    return _sidecar(path).read_text().strip()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")
