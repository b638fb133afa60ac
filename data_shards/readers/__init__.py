"""Source readers, one per `SourceConfig.format`: `get_reader(fmt).plan(...)` then `.read(chunk)`."""

from __future__ import annotations

from polyfid.data_shards.errors import PolyfidDataError
from polyfid.data_shards.readers.ase_io import AseReader
from polyfid.data_shards.readers.base import Chunk, Reader
from polyfid.data_shards.readers.generic_h5 import GenericH5Reader
from polyfid.data_shards.readers.grouped_h5 import GroupedH5Reader
from polyfid.data_shards.readers.sgdml_npz import SgdmlNpzReader

_GROUPED = GroupedH5Reader()
READERS: dict[str, Reader] = {
    "ani_h5": _GROUPED,
    "spice_h5": _GROUPED,
    "sgdml_npz": SgdmlNpzReader(),
    "ase": AseReader(),
    "generic_h5": GenericH5Reader(),
}


def get_reader(fmt: str) -> Reader:
    """The reader for a source format; a PolyfidDataError listing the known formats otherwise."""
    try:
        return READERS[fmt]
    except KeyError:
        raise PolyfidDataError(f"unknown source format {fmt!r}; known formats: {sorted(READERS)}") from None


__all__ = ["READERS", "Chunk", "Reader", "get_reader"]
