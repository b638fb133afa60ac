"""Anything ``ase.io.read`` reads (``ase``): extended XYZ, ASE databases, trajectories, ...

A level key is looked up in ``atoms.info``, then ``atoms.arrays``, then the attached calculator's results
(ASE's extxyz reader moves ``energy=`` and ``forces`` into a SinglePointCalculator). For ASE databases,
rows are read with their ``key_value_pairs`` and ``data`` merged into ``info``.

Options: ``charge`` / ``multiplicity`` (an info key, or an int constant), ``index`` (a slice string such as
``'0:1000'`` or ``'::10'`` selecting frames; default all), ``format`` (passed to ``ase.io.read``; default
guessed from the file). Record keys are ``frame`` with the frame's index in the whole file. Cells and pbc are
kept when a frame is periodic.

Planning counts frames without parsing them where it can: a line scan of (ext)XYZ files (which also lists
the comment-line and column keys, to check the level keys), ``count()`` for databases; other formats are
read once in full.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ase.db
import ase.io
import numpy as np
from ase import Atoms
from ase.io.extxyz import key_val_str_to_dict
from ase.io.formats import filetype, string2index

from polyfid.data_shards.errors import RecordError, SourceError
from polyfid.data_shards.readers.base import Chunk
from polyfid.data_shards.readers.common import (
    LevelRows,
    Rows,
    Selection,
    check_levels_present,
    level_key_names,
    plan_files,
    resolve_options,
    rows_records,
)
from polyfid.data_shards.record import Record
from polyfid.data_shards.sources import SourceConfig

DEFAULTS: dict[str, Any] = {"charge": None, "multiplicity": None, "index": ":", "format": None}
RECORD_KEY = "frame"
_DB_FORMATS = {"db", "json", "postgresql", "mysql"}
_XYZ_FORMATS = {"xyz", "extxyz"}


def _format(source: SourceConfig, path: Path, opts: dict[str, Any]) -> str:
    """ASE's name for the file's format (the `format` option, or guessed)."""
    if opts["format"]:
        return str(opts["format"])
    try:
        return filetype(str(path))
    except Exception as exc:  # ASE raises its own types too (UnknownFileTypeError for an empty file)
        raise SourceError(source.name, f"ASE cannot tell the file format: {exc}", str(path)) from exc


# ---------------------------------------------------------------- frame access


def lookup(atoms: Atoms, key: str) -> Any:
    """`key` from info, then arrays, then the calculator's results; None when absent."""
    if key in atoms.info:
        return atoms.info[key]
    if key in atoms.arrays:
        return atoms.arrays[key]
    results = getattr(atoms.calc, "results", None) or {}
    return results.get(key)


def _db_atoms(row: Any) -> Atoms:
    """A database row as Atoms with its key_value_pairs and data merged into info."""
    atoms = row.toatoms(add_additional_information=True)
    info = atoms.info
    atoms.info = {**info.pop("key_value_pairs", {}), **info.pop("data", {}), **info}
    return atoms


def read_frames(path: Path, fmt: str, start: int, stop: int, step: int = 1) -> list[Atoms]:
    """Frames start:stop:step of the file."""
    if fmt in _DB_FORMATS:
        with ase.db.connect(str(path), type=fmt, serial=True) as db:
            rows = db.select(offset=start, limit=max(stop - start, 0))
            return [_db_atoms(row) for row in itertools.islice(rows, 0, None, step)]
    return list(ase.io.read(str(path), index=slice(start, stop, step), format=fmt))


def _frame_rows(atoms: Atoms, index: int, source: SourceConfig, opts: dict[str, Any]) -> Rows:
    """One frame as a one-row block."""
    levels = {}
    for level, keys in source.levels.items():
        force_key = keys.forces or keys.gradient
        valid = lookup(atoms, keys.valid) if keys.valid else None
        levels[level] = LevelRows(
            energy=_one(lookup(atoms, keys.energy)) if keys.energy else None,
            forces=_one(lookup(atoms, force_key)) if force_key else None,
            is_gradient=keys.gradient is not None,
            valid=None if valid is None else _one(valid),
        )
    periodic = bool(np.any(atoms.pbc))
    return Rows(
        key=RECORD_KEY,
        start=index,
        numbers=atoms.numbers,
        positions=atoms.positions[None],
        levels=levels,
        cell=atoms.cell.array if periodic else None,
        pbc=atoms.pbc if periodic else None,
        charge=_info_value(atoms, opts["charge"]),
        multiplicity=_info_value(atoms, opts["multiplicity"]),
    )


def _one(value: Any) -> np.ndarray | None:
    """A label as a one-row array (None stays None: the label is missing)."""
    return None if value is None else np.asarray(value, dtype=np.float64)[None]


def _info_value(atoms: Atoms, key: str | int | None) -> np.ndarray | None:
    if key is None or isinstance(key, int):
        return None if key is None else np.asarray(key)
    value = atoms.info.get(key)
    return None if value is None else np.asarray(value, dtype=np.float64)


# ---------------------------------------------------------------- planning


def _xyz_scan(path: Path) -> tuple[int, set[str]]:
    """Number of frames of an (ext)XYZ file and every comment-line key and Properties column name."""
    keys: set[str] = set()
    headers: set[str] = set()
    n = 0
    with open(path) as fh:
        for first in fh:
            if not first.strip():
                break
            natoms = int(first.split()[0])
            comment = next(fh, "").strip()
            if comment not in headers:  # frames often repeat a header: parse each distinct one once
                headers.add(comment)
                keys |= _comment_keys(comment)
            for _ in itertools.islice(fh, natoms):
                pass
            n += 1
    return n, keys


def _comment_keys(comment: str) -> set[str]:
    """Keys of an extxyz comment line: key=value names plus Properties column names."""
    try:
        parsed = key_val_str_to_dict(comment)
    except (ValueError, IndexError):
        return set()
    columns = str(parsed.get("Properties", "")).split(":")[::3]
    return set(parsed) | set(columns)


def _count_and_keys(path: Path, fmt: str) -> tuple[int, set[str] | None]:
    """Frame count; plus the keys found when they could be gathered cheaply (None: check frames instead)."""
    if fmt in _XYZ_FORMATS:
        return _xyz_scan(path)
    if fmt in _DB_FORMATS:
        with ase.db.connect(str(path), type=fmt, serial=True) as db:
            return db.count(), None
    frames = ase.io.read(str(path), index=":", format=fmt)
    return len(frames), _frame_keys(frames)


def _frame_keys(frames: list[Atoms]) -> set[str]:
    keys: set[str] = set()
    for atoms in frames:
        keys |= set(atoms.info) | set(atoms.arrays) | set(getattr(atoms.calc, "results", None) or {})
    return keys


def _present_in_frames(path: Path, fmt: str, n: int, wanted: set[str]) -> set[str]:
    """The wanted keys found by reading frames in order, stopping once all are found (databases)."""
    found: set[str] = set()
    for start in range(0, n, 256):
        found |= _frame_keys(read_frames(path, fmt, start, min(start + 256, n))) & wanted
        if found == wanted:
            break
    return found


def _plan_file(source: SourceConfig, path: Path, opts: dict[str, Any]) -> list[tuple[Selection, int]]:
    fmt = _format(source, path, opts)
    try:
        n, keys = _count_and_keys(path, fmt)
    except Exception as exc:  # ASE raises many types for unreadable input
        raise SourceError(source.name, f"ASE cannot read the file as {fmt!r}: {exc}", str(path)) from exc
    wanted = {k for lk in source.levels.values() for k in level_key_names(lk)}
    present = keys if keys is not None else _present_in_frames(path, fmt, n, wanted)
    check_levels_present(source, path, present.__contains__, "frame")
    frames = range(n)[_index_slice(source, opts["index"])]
    size = source.chunk_size
    return [
        ((fmt, part.start, part.stop, part.step), len(part))
        for part in (frames[i : i + size] for i in range(0, len(frames), size))
    ]


def _index_slice(source: SourceConfig, index: Any) -> slice:
    try:
        sl = string2index(str(index))
    except ValueError as exc:
        raise SourceError(source.name, f"option 'index' {index!r} is not a slice like '0:100'") from exc
    if isinstance(sl, int):
        sl = slice(sl, sl + 1 if sl != -1 else None)
    if sl.step is not None and sl.step < 1:
        raise SourceError(source.name, f"option 'index' {index!r}: the step must be positive")
    return sl


# ---------------------------------------------------------------- reader


class AseReader:
    """Reader for the ``ase`` format."""

    def plan(self, source: SourceConfig, base_dir: Path) -> list[Chunk]:
        opts = resolve_options(source, DEFAULTS)
        return plan_files(source, base_dir, lambda path: _plan_file(source, path, opts))

    def read(self, chunk: Chunk) -> Iterator[Record | RecordError]:
        source, path = chunk.source, chunk.path
        opts = resolve_options(source, DEFAULTS)
        fmt, start, stop, step = chunk.selection
        for index, atoms in self._frames(path, fmt, start, stop, step):
            if isinstance(atoms, RecordError):
                yield atoms
                continue
            yield from rows_records(
                source, path, RECORD_KEY, index, index + 1, lambda a=atoms, i=index: _frame_rows(a, i, source, opts)
            )

    @staticmethod
    def _frames(path: Path, fmt: str, start: int, stop: int, step: int) -> Iterator[tuple[int, Atoms | RecordError]]:
        """(index, Atoms) for the chunk's frames; when the block fails to parse, frame by frame, with a
        RecordError in place of each unreadable frame."""
        indices = range(start, stop, step)
        try:
            frames: list[Atoms] | None = read_frames(path, fmt, start, stop, step)
        except Exception:  # ASE raises many types for malformed input: isolate the bad frames below
            frames = None
        if frames is not None and len(frames) == len(indices):
            yield from zip(indices, frames, strict=True)
            return
        for i in indices:
            try:
                (atoms,) = read_frames(path, fmt, i, i + 1)
                yield i, atoms
            except Exception as exc:
                yield i, RecordError(str(path), RECORD_KEY, i, "unreadable", f"{type(exc).__name__}: {exc}")
