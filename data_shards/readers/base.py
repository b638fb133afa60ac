"""The reader interface: plan cheap chunks on the driver, read each chunk in a (Ray) task."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from polyfid.data_shards.errors import RecordError
from polyfid.data_shards.record import Record
from polyfid.data_shards.sources import SourceConfig


@dataclass(frozen=True)
class Chunk:
    """A picklable unit of work: one file of a source and a selection inside it.

    `selection` is reader-specific plain data (e.g. a list of group names, or [start, stop]).
    `chunk_id` is stable for the same inputs: it names the chunk's shards and its resume marker.
    """

    source: SourceConfig
    path: Path
    selection: Any
    chunk_id: str
    n_structures: int


class Reader(Protocol):
    def plan(self, source: SourceConfig, base_dir: Path) -> list[Chunk]:
        """Split a source into chunks of about `source.chunk_size` structures, reading only metadata.

        Raises SourceError for a missing file, a level key absent from the file, or an unknown layout.
        """
        ...

    def read(self, chunk: Chunk) -> Iterator[Record | RecordError]:
        """Yield the chunk's records, or a RecordError in place of each bad one (errors are values, so
        the caller can skip them and go on). Records are made with `polyfid.data_shards.validation.build_record`,
        which converts units, drops NaN labels and validates.
        """
        ...
