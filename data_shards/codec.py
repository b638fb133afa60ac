"""One msgpack member per sample: the on-disk encoding of a :class:`Record` inside a shard."""

from __future__ import annotations

import hashlib

import msgpack
import numpy as np

from polyfid.data_shards.errors import PolyfidDataError
from polyfid.data_shards.record import LevelLabels, Record

SAMPLE_EXTENSION = "msgpack"
CODEC_VERSION = 1


def sample_key(record_id: str) -> str:
    """WebDataset key for a record: hex hash of its id (ids may hold dots and slashes, keys may not)."""
    return hashlib.blake2b(record_id.encode(), digest_size=8).hexdigest()


def encode(record: Record) -> bytes:
    """Serialise a record; positions/cell float64, forces float32, energies as float64 scalars."""
    labels = {}
    for level, lab in record.labels.items():
        entry: dict = {}
        if lab.energy is not None:
            entry["e"] = float(lab.energy)
        if lab.forces is not None:
            entry["f"] = np.ascontiguousarray(lab.forces, dtype=np.float32).tobytes()
        labels[level] = entry
    doc = {
        "v": CODEC_VERSION,
        "id": record.id,
        "ds": record.dataset,
        "z": np.ascontiguousarray(record.numbers, dtype=np.uint8).tobytes(),
        "r": np.ascontiguousarray(record.positions, dtype=np.float64).tobytes(),
        "l": labels,
        "q": record.charge,
        "m": record.multiplicity,
    }
    if record.cell is not None:
        doc["c"] = np.ascontiguousarray(record.cell, dtype=np.float64).tobytes()
        doc["p"] = [bool(x) for x in record.pbc] if record.pbc is not None else [True, True, True]
    return msgpack.packb(doc, use_bin_type=True)


class CodecError(PolyfidDataError, ValueError):
    """Bytes that are not a sample this codec wrote (the shard's checksum passed: a foreign or tampered shard)."""


def decode(data: bytes) -> Record:
    """Inverse of :func:`encode` (arrays are read-only views on the message bytes); `CodecError` otherwise."""
    try:
        return _decode(data)
    except CodecError:
        raise
    except Exception as exc:  # msgpack, shape, type and key errors of bytes this codec did not write
        raise CodecError(f"sample does not decode: {type(exc).__name__}: {exc}") from None


def _decode(data: bytes) -> Record:
    doc = msgpack.unpackb(data, raw=False)
    if not isinstance(doc, dict) or doc.get("v") != CODEC_VERSION:
        version = doc.get("v") if isinstance(doc, dict) else None
        raise CodecError(f"sample does not decode: codec version {version!r} (this polyfid reads {CODEC_VERSION})")
    numbers = np.frombuffer(doc["z"], dtype=np.uint8)
    n = numbers.shape[0]
    labels = {
        level: LevelLabels(
            energy=entry.get("e"),
            forces=np.frombuffer(entry["f"], dtype=np.float32).reshape(n, 3) if "f" in entry else None,
        )
        for level, entry in doc["l"].items()
    }
    cell = np.frombuffer(doc["c"], dtype=np.float64).reshape(3, 3) if "c" in doc else None
    return Record(
        id=doc["id"],
        dataset=doc["ds"],
        numbers=numbers,
        positions=np.frombuffer(doc["r"], dtype=np.float64).reshape(n, 3),
        labels=labels,
        cell=cell,
        pbc=np.asarray(doc["p"], dtype=bool) if cell is not None else None,
        charge=doc.get("q"),
        multiplicity=doc.get("m"),
    )
