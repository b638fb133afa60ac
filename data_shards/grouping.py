"""Greedy in-order grouping under a cost budget: shared by shard packing (bytes) and batching (atoms)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def budget_groups(
    items: Iterable[T], cost: Callable[[T], int], max_cost: int, max_count: int | None = None
) -> Iterator[list[T]]:
    """Lists of consecutive items; a list is closed when the next item would exceed `max_cost` in total or
    `max_count` items. An item costing more than `max_cost` alone gets its own list. The last, partial list of a
    finite stream is yielded too."""
    group: list[T] = []
    total = 0
    for item in items:
        c = cost(item)
        if group and (total + c > max_cost or len(group) == max_count):
            yield group
            group, total = [], 0
        group.append(item)
        total += c
    if group:
        yield group
