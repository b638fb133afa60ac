"""Group a record stream into batches under an atom budget (and optionally a structure count)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from polyfid.data_shards.errors import PolyfidDataError
from polyfid.data_shards.grouping import budget_groups
from polyfid.data_shards.record import Record


class OversizeRecordError(PolyfidDataError):
    """A single record has more atoms than a whole batch may hold."""


def pack(records: Iterable[Record], max_atoms: int, max_structures: int | None = None) -> Iterator[list[Record]]:
    """Greedy in-order packing: a group is closed when the next record would break a limit.

    The last, partial group of a finite stream is yielded too.
    """

    def n_atoms(rec: Record) -> int:
        n = rec.numbers.shape[0]
        if n > max_atoms:
            raise OversizeRecordError(
                f"record {rec.id!r} (dataset {rec.dataset!r}) has {n} atoms, more than max_atoms={max_atoms}"
            )
        return n

    return budget_groups(records, n_atoms, max_atoms, max_structures)
