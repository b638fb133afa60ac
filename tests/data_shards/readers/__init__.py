"""Helpers for the reader tests: build a source, plan and read it, check error messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polyfid.data_shards.errors import RecordError
from polyfid.data_shards.readers import get_reader
from polyfid.data_shards.readers.base import Chunk
from polyfid.data_shards.record import Record
from polyfid.data_shards.sources import SourceConfig

# The factors the brief gives (independent of ase.units, to catch a wrong table entry)
HARTREE = 27.211386  # eV
KCAL_MOL = 0.0433641  # eV
BOHR = 0.52917721  # Angstrom
RTOL = 2e-7


def make_source(path: Path | str, fmt: str, levels: dict[str, Any], **kwargs: Any) -> SourceConfig:
    """A SourceConfig named after the file, for an absolute path."""
    name = kwargs.pop("name", "src")
    return SourceConfig(name=name, path=str(path), format=fmt, levels=levels, **kwargs)


def plan(source: SourceConfig) -> list[Chunk]:
    return get_reader(source.format).plan(source, Path("/"))


def read_all(source: SourceConfig) -> tuple[list[Chunk], list[Record], list[RecordError]]:
    """Plan the source and read every chunk: (chunks, records, errors)."""
    chunks = plan(source)
    reader = get_reader(source.format)
    items = [item for chunk in chunks for item in reader.read(chunk)]
    records = [r for r in items if isinstance(r, Record)]
    errors = [e for e in items if isinstance(e, RecordError)]
    assert len(records) + len(errors) == len(items)
    return chunks, records, errors


def by_id(records: list[Record]) -> dict[str, Record]:
    """Records by the location part of their id, `<dataset>/<location>` (checked here)."""
    out = {}
    for r in records:
        dataset, _, location = r.id.partition("/")
        assert dataset == r.dataset, r.id
        out[location] = r
    assert len(out) == len(records), "record ids must be unique"
    return out


def index_of(record: Record) -> int:
    """The structure index in a record id '<dataset>/<file>:<key>:<index>'."""
    return int(record.id.rsplit(":", 1)[1])


def errors_at(errors: list[RecordError]) -> dict[tuple[str, int | None], RecordError]:
    """Errors keyed by (key, index)."""
    return {(e.key, e.index): e for e in errors}


def assert_names(err: RecordError | Exception, path: Path, key: str, index: int | None = None) -> None:
    """The error message names the file, the key and (when given) the record index."""
    msg = str(err)
    assert str(path) in msg, msg
    assert key in msg, msg
    if index is not None:
        assert f"{key}[{index}]" in msg, msg


def assert_chunks_ok(chunks: list[Chunk], total: int) -> None:
    """Chunk ids unique and filesystem-safe, and the chunks cover `total` structures."""
    ids = [c.chunk_id for c in chunks]
    assert len(set(ids)) == len(ids)
    assert all(c.replace("-", "").replace("_", "").replace(".", "").isalnum() for c in ids), ids
    assert sum(c.n_structures for c in chunks) == total
