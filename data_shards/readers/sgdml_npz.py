"""sGDML / MD17 ``.npz`` (``sgdml_npz``): ``R (M, N, 3)``, ``z (N,)``, and per level ``E (M,)`` or ``(M, 1)``
and ``F (M, N, 3)`` (the level keys name the arrays).

Options: ``positions`` (default ``R``), ``numbers`` (default ``z``), ``charge`` / ``multiplicity`` (an array
name or an int constant). Archives are opened with ``allow_pickle=False``: object arrays are refused.
Planning reads only the ``.npy`` headers; each chunk loads the arrays it needs once and slices its range.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from polyfid.data_shards.errors import RecordError, SourceError
from polyfid.data_shards.readers.base import Chunk
from polyfid.data_shards.readers.common import (
    LevelRows,
    Rows,
    RowsError,
    Selection,
    plan_files,
    resolve_options,
    rows_records,
    split_range,
)
from polyfid.data_shards.record import Record
from polyfid.data_shards.sources import SourceConfig

DEFAULTS: dict[str, Any] = {"positions": "R", "numbers": "z", "charge": None, "multiplicity": None}


def _read_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of an open .npy stream, left positioned at the data."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fh)
    raise ValueError(f"unsupported .npy format version {version}")


class NpzArchive:
    """Slices of the arrays of an .npz archive, read from the .npy members without loading whole arrays.
    Object arrays are refused and nothing is unpickled (as ``np.load(..., allow_pickle=False)``)."""

    def __init__(self, source: SourceConfig, path: Path):
        try:
            self._zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise SourceError(source.name, f"not a readable .npz archive: {exc}", str(path)) from exc

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self._zip.close()

    def n_rows(self, key: str) -> int:
        """Leading dimension of array `key` (header only)."""
        with self._zip.open(f"{key}.npy") as fh:
            shape = _read_header(fh)[0]
        return shape[0] if shape else 0

    def headers(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Shape and dtype of every array, from the .npy headers only."""
        out = {}
        for name in self._zip.namelist():
            if name.endswith(".npy"):
                with self._zip.open(name) as fh:
                    shape, _, dtype = _read_header(fh)
                out[name[: -len(".npy")]] = (shape, dtype)
        return out

    def rows(self, key: str, a: int, b: int, row_ndim: int, total: int | None = None) -> np.ndarray:
        """Rows a..b-1 of array `key`, or the whole array when it has at most `row_ndim` dims (shared).
        RowsError when a per-row array does not have `total` rows."""
        with self._zip.open(f"{key}.npy") as fh:
            shape, fortran, dtype = _read_header(fh)
            if dtype.hasobject:
                raise RowsError(key, "object array refused (would need pickle)", reason="unreadable")
            if len(shape) > row_ndim and total is not None and shape[0] != total:
                raise RowsError(key, f"shape {shape}, expected {total} rows like the positions")
            if fortran or len(shape) <= row_ndim:
                fh.seek(0)
                full = np.lib.format.read_array(fh, allow_pickle=False)
                return full if len(shape) <= row_ndim else full[a:b]
            b = min(b, shape[0])
            a = min(a, b)
            row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            fh.seek(fh.tell() + a * row_bytes)
            data = fh.read((b - a) * row_bytes)
        return np.frombuffer(data, dtype=dtype).reshape((b - a, *shape[1:]))


def _array_keys(source: SourceConfig, opts: dict[str, Any]) -> list[str]:
    """The arrays this source reads: positions, numbers, every level key, charge/multiplicity names."""
    keys = [opts["positions"], opts["numbers"]]
    keys += [k for k in (opts["charge"], opts["multiplicity"]) if isinstance(k, str)]
    for lk in source.levels.values():
        keys += [k for k in (lk.energy, lk.forces, lk.gradient, lk.valid) if k]
    return keys


def _plan_file(source: SourceConfig, path: Path) -> list[tuple[Selection, int]]:
    opts = resolve_options(source, DEFAULTS)
    try:
        with NpzArchive(source, path) as npz:
            headers = npz.headers()
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SourceError(source.name, f"not a readable .npz archive: {exc}", str(path)) from exc
    for key in _array_keys(source, opts):
        if key not in headers:
            raise SourceError(source.name, f"array {key!r} not in the archive (has {sorted(headers)})", str(path))
        if headers[key][1].hasobject:
            raise SourceError(source.name, f"array {key!r} holds Python objects (pickle), refused", str(path))
    shape = headers[opts["positions"]][0]
    if len(shape) != 3:
        raise SourceError(source.name, f"array {opts['positions']!r} has shape {shape}, expected (M, N, 3)", str(path))
    return split_range(0, shape[0], source.chunk_size)


def _rows(source: SourceConfig, npz: NpzArchive, opts: dict[str, Any], a: int, b: int) -> Rows:
    """Structures a..b-1 of the archive."""
    total = npz.n_rows(opts["positions"])

    def take(key: str | None, row_ndim: int) -> np.ndarray | None:
        return None if key is None else npz.rows(key, a, b, row_ndim, total)

    levels = {
        level: LevelRows(
            energy=take(keys.energy, 0),
            forces=take(keys.forces or keys.gradient, 2),
            is_gradient=keys.gradient is not None,
            valid=take(keys.valid, 0),
        )
        for level, keys in source.levels.items()
    }
    charge, mult = (opts[k] for k in ("charge", "multiplicity"))
    return Rows(
        key=opts["positions"],
        start=a,
        numbers=take(opts["numbers"], 1),
        positions=take(opts["positions"], 2),
        levels=levels,
        charge=np.asarray(charge) if isinstance(charge, int) else take(charge, 0),
        multiplicity=np.asarray(mult) if isinstance(mult, int) else take(mult, 0),
    )


class SgdmlNpzReader:
    """Reader for the ``sgdml_npz`` format."""

    def plan(self, source: SourceConfig, base_dir: Path) -> list[Chunk]:
        return plan_files(source, base_dir, lambda path: _plan_file(source, path))

    def read(self, chunk: Chunk) -> Iterator[Record | RecordError]:
        source, path = chunk.source, chunk.path
        opts = resolve_options(source, DEFAULTS)
        a, b = chunk.selection
        with NpzArchive(source, path) as npz:
            yield from rows_records(source, path, opts["positions"], a, b, lambda: _rows(source, npz, opts, a, b))
