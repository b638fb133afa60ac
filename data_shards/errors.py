"""Errors raised for bad input: each names the file, the key inside it and the record index."""

from __future__ import annotations

from polyfid.core.errors import PolyfidError


class PolyfidDataError(PolyfidError):
    """Base class for data-layer errors with a user-facing message."""


class SourceError(PolyfidDataError):
    """A whole source is unusable (missing file, unknown format or unit, level key absent)."""

    def __init__(self, source: str, message: str, path: str | None = None):
        self.source, self.path = source, path
        where = f"{path}: " if path else ""
        super().__init__(f"source {source!r}: {where}{message}")


class RecordError(PolyfidDataError):
    """One record is invalid; `reason` is a short machine-countable category."""

    def __init__(self, path: str, key: str, index: int | None, reason: str, detail: str = ""):
        self.path, self.key, self.index, self.reason, self.detail = path, key, index, reason, detail
        at = f"[{index}]" if index is not None else ""
        super().__init__(f"{path}: record {key}{at}: {reason}" + (f" ({detail})" if detail else ""))


class ShardCorruptedError(PolyfidDataError):
    """A shard's bytes do not match the checksum recorded in the manifest, or it cannot be parsed."""
