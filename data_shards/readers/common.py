"""Helpers shared by the readers: options, chunk planning, row blocks -> records, HDF5 layouts.

Every reader reduces its input to :class:`Rows` (a block of consecutive structures under one key, arrays in
file units) and turns them into records with :func:`rows_records`, which goes through
:func:`polyfid.data_shards.validation.build_record` and yields a :class:`RecordError` in place of each bad record.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from ase.data import atomic_numbers as SYMBOL_TO_Z

from polyfid.data_shards.errors import RecordError, SourceError
from polyfid.data_shards.readers.base import Chunk
from polyfid.data_shards.record import Record
from polyfid.data_shards.sources import LevelKeys, SourceConfig
from polyfid.data_shards.validation import RawLabels, build_record

Selection = Any  # reader-specific plain data (tuples of str/int): JSON-able for the chunk fingerprint


class RowsError(ValueError):
    """A block of rows cannot be read as a whole (missing dataset, wrong length, unknown element)."""

    def __init__(self, key: str, detail: str, reason: str = "bad_shape"):
        self.key, self.detail, self.reason = key, detail, reason
        super().__init__(f"{key}: {detail}")


# ---------------------------------------------------------------- options


def resolve_options(source: SourceConfig, defaults: dict[str, Any]) -> dict[str, Any]:
    """`defaults` overridden by `source.options`; a SourceError for an option this format does not know."""
    unknown = sorted(set(source.options) - set(defaults))
    if unknown:
        raise SourceError(
            source.name, f"unknown option(s) {unknown} for format {source.format!r}; known: {sorted(defaults)}"
        )
    return {**defaults, **source.options}


def level_key_names(keys: LevelKeys) -> list[str]:
    """Every key a level reads from the file (energy, forces or gradient, valid)."""
    return [k for k in (keys.energy, keys.forces, keys.gradient, keys.valid) if k]


def check_levels_present(
    source: SourceConfig, path: Path, present: Callable[[str], bool], where: str | None = None
) -> None:
    """A SourceError naming the file and key for a configured level key found nowhere in the file
    (`where`: 'group', 'frame', ... to say 'in any group'; None: 'in the file')."""
    place = f"in any {where}" if where else "in the file"
    for level, keys in source.levels.items():
        for key in level_key_names(keys):
            if not present(key):
                raise SourceError(source.name, f"level {level!r}: key {key!r} not found {place}", str(path))


# ---------------------------------------------------------------- planning


def safe_tag(text: str) -> str:
    """A filesystem-safe version of `text` (letters, digits, '.', '_', '-')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "file"


def file_tags(paths: Sequence[Path]) -> dict[Path, str]:
    """A stable tag per file: its stem, or its path relative to the common folder when stems collide."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return {p: safe_tag(p.stem) for p in paths}
    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    return {p: safe_tag(str(p.relative_to(root))) for p in paths}


def plan_files(
    source: SourceConfig, base_dir: Path, plan_file: Callable[[Path], list[tuple[Selection, int]]]
) -> list[Chunk]:
    """Chunks of every file of `source`; `plan_file(path)` gives (selection, n_structures) pairs in order."""
    paths = source.files(base_dir)
    tags = file_tags(paths)
    return [
        Chunk(source=source, path=path, selection=sel, chunk_id=f"{tags[path]}-{i:05d}", n_structures=n)
        for path in paths
        for i, (sel, n) in enumerate(plan_file(path))
    ]


def split_range(start: int, stop: int, size: int) -> list[tuple[tuple[int, int], int]]:
    """[start, stop) cut into (a, b) selections of at most `size` structures."""
    return [((a, min(a + size, stop)), min(a + size, stop) - a) for a in range(start, stop, size)]


def pack_groups(counts: Iterable[tuple[str, int]], size: int) -> list[tuple[Selection, int]]:
    """Pack (key, n) into selections ((key, start, stop), ...) of about `size` structures; big keys are split."""
    out: list[tuple[Selection, int]] = []
    current: list[tuple[str, int, int]] = []
    filled = 0
    for key, n in counts:
        start = 0
        while start < n:
            stop = min(n, start + size - filled)
            current.append((key, start, stop))
            filled += stop - start
            start = stop
            if filled >= size:
                out.append((tuple(current), filled))
                current, filled = [], 0
    if current:
        out.append((tuple(current), filled))
    return out


# ---------------------------------------------------------------- rows -> records


@dataclass
class LevelRows:
    """One level's labels for a block, in file units: energy (m,) or (m, 1), forces (m, N, 3), valid (m,)."""

    energy: np.ndarray | None = None
    forces: np.ndarray | None = None
    is_gradient: bool = False
    valid: np.ndarray | None = None


@dataclass
class Rows:
    """Structures start .. start+m-1 under one key, in file units. `numbers`, `cell`, `pbc`, `charge` and
    `multiplicity` may be shared by all rows ((N,), (3, 3), (3,), scalar) or per row (leading dim m)."""

    key: str
    start: int
    numbers: np.ndarray
    positions: np.ndarray  # (m, N, 3)
    levels: dict[str, LevelRows] = field(default_factory=dict)
    cell: np.ndarray | None = None
    pbc: np.ndarray | None = None
    charge: np.ndarray | None = None
    multiplicity: np.ndarray | None = None
    drop_padding: bool = False  # per-row numbers: Z=0 entries are padding, dropped with their atoms


def per_row(name: str, arr: Any, m: int, row_ndim: int, shared_ok: bool = True) -> np.ndarray | None:
    """`arr` with a leading dimension of m rows (a shared value is broadcast); RowsError if it cannot fit."""
    if arr is None:
        return None
    arr = np.asarray(arr)
    if row_ndim == 0 and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]  # (m, 1) scalars, e.g. sGDML energies
    if shared_ok and arr.ndim == row_ndim:
        return np.broadcast_to(arr, (m, *arr.shape))
    if arr.ndim == row_ndim + 1 and arr.shape[0] == m:
        return arr
    raise RowsError(name, f"shape {arr.shape} does not fit {m} structures")


def _label_rows(level: str, lr: LevelRows, m: int) -> LevelRows:
    return LevelRows(
        energy=per_row(f"level {level!r} energy", lr.energy, m, 0, shared_ok=False),
        forces=per_row(f"level {level!r} forces", lr.forces, m, 2, shared_ok=False),
        is_gradient=lr.is_gradient,
        valid=per_row(f"level {level!r} valid", lr.valid, m, 0, shared_ok=False),
    )


def _aligned(rows: Rows) -> Rows:
    """`rows` with every array given a leading dimension of m (validated)."""
    m = rows.positions.shape[0] if rows.positions.ndim == 3 else -1
    if m < 0:
        raise RowsError("positions", f"shape {rows.positions.shape}, expected (M, N, 3)")
    return Rows(
        key=rows.key,
        start=rows.start,
        numbers=per_row("numbers", rows.numbers, m, 1),
        positions=rows.positions,
        levels={lvl: _label_rows(lvl, lr, m) for lvl, lr in rows.levels.items()},
        cell=per_row("cell", rows.cell, m, 2),
        pbc=per_row("pbc", rows.pbc, m, 1),
        charge=per_row("charge", rows.charge, m, 0),
        multiplicity=per_row("multiplicity", rows.multiplicity, m, 0),
        drop_padding=rows.drop_padding and np.ndim(rows.numbers) == 2,  # only per-row numbers are padded
    )


def _raw_labels(lr: LevelRows, i: int) -> RawLabels:
    if lr.valid is not None and not bool(lr.valid[i]):
        return RawLabels(is_gradient=lr.is_gradient)
    return RawLabels(
        energy=None if lr.energy is None else lr.energy[i],
        forces=None if lr.forces is None else lr.forces[i],
        is_gradient=lr.is_gradient,
    )


def _int_or_none(name: str, value: Any) -> int | None:
    """An integer charge/multiplicity; NaN or None = unknown; RowsError for a fractional value."""
    if value is None:
        return None
    v = float(np.asarray(value, dtype=np.float64).reshape(()))
    if np.isnan(v):
        return None
    if v != round(v):
        raise RowsError(name, f"non-integer value {v}", reason=f"bad_{name}")
    return round(v)


def _drop_padding(
    numbers: np.ndarray, positions: np.ndarray, labels: dict[str, RawLabels]
) -> tuple[np.ndarray, np.ndarray, dict[str, RawLabels]]:
    """Remove Z=0 padding atoms (and their positions and forces, when those have one row per atom)."""
    keep = numbers != 0
    if keep.all():
        return numbers, positions, labels
    for raw in labels.values():
        if raw.forces is not None and np.shape(raw.forces)[:1] == keep.shape:
            raw.forces = np.asarray(raw.forces)[keep]
    if positions.shape[:1] == keep.shape:
        positions = positions[keep]
    return numbers[keep], positions, labels


def safe_build_record(source: SourceConfig, path: Path, key: str, index: int, **kwargs: Any) -> Record | RecordError:
    """`build_record`, turning an unexpected value error (e.g. a label of the wrong type) into a RecordError."""
    try:
        return build_record(source, path, key, index, **kwargs)
    except (ValueError, TypeError) as exc:
        return RecordError(str(path), key, index, "bad_value", str(exc))


def _row_record(source: SourceConfig, path: Path, rows: Rows, i: int) -> Record | RecordError:
    index = rows.start + i
    labels = {lvl: _raw_labels(lr, i) for lvl, lr in rows.levels.items()}
    numbers, positions = rows.numbers[i], rows.positions[i]
    if rows.drop_padding:
        numbers, positions, labels = _drop_padding(numbers, positions, labels)
    try:
        charge = _int_or_none("charge", None if rows.charge is None else rows.charge[i])
        multiplicity = _int_or_none("multiplicity", None if rows.multiplicity is None else rows.multiplicity[i])
    except RowsError as exc:
        return RecordError(str(path), rows.key, index, exc.reason, exc.detail)
    return safe_build_record(
        source, path, rows.key, index,
        numbers=numbers, positions=positions, labels=labels,
        cell=None if rows.cell is None else rows.cell[i],
        pbc=None if rows.pbc is None else rows.pbc[i],
        charge=charge, multiplicity=multiplicity,
    )  # fmt: skip


def block_errors(path: Path, key: str, start: int, stop: int, reason: str, detail: str) -> Iterator[RecordError]:
    """One RecordError per structure of a block that could not be read."""
    for index in range(start, stop):
        yield RecordError(str(path), key, index, reason, detail)


READ_ERRORS = (RowsError, OSError, KeyError, ValueError, TypeError)


def rows_records(
    source: SourceConfig, path: Path, key: str, start: int, stop: int, load: Callable[[], Rows]
) -> Iterator[Record | RecordError]:
    """Records of structures start..stop-1 under `key`; `load()` reads them. When the block cannot be read,
    every structure in it becomes a RecordError (the reader then goes on with the next block)."""
    try:
        rows = _aligned(load())
    except READ_ERRORS as exc:
        reason = exc.reason if isinstance(exc, RowsError) else "unreadable"
        yield from block_errors(path, key, start, stop, reason, str(exc))
        return
    for i in range(rows.positions.shape[0]):
        yield _row_record(source, path, rows, i)


# ---------------------------------------------------------------- small value helpers


def decode_str(value: Any) -> str:
    """A str from an HDF5/numpy scalar or 1-element array of bytes/str."""
    value = np.asarray(value).reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else str(value)


def to_atomic_numbers(name: str, arr: np.ndarray) -> np.ndarray:
    """Integer atomic numbers; element symbols (bytes/str) are mapped to Z. RowsError for an unknown symbol."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "SUO":
        return arr
    symbols = [s.decode() if isinstance(s, bytes) else str(s) for s in arr.reshape(-1)]
    unknown = sorted({s for s in symbols if s.strip().capitalize() not in SYMBOL_TO_Z})
    if unknown:
        raise RowsError(name, f"unknown element symbol(s) {unknown}", reason="bad_atomic_number")
    return np.array([SYMBOL_TO_Z[s.strip().capitalize()] for s in symbols], dtype=np.int64).reshape(arr.shape)


_BRACKET_ATOM = re.compile(r"\[([^\]]+)\]")
_CHARGE = re.compile(r"(\++|-+)(\d*)$")


def smiles_formal_charge(smiles: str) -> int:
    """Total formal charge of a SMILES string: the sum over bracket atoms ('[N+:9]', '[O-]', '[Fe+2]', '[O--]')."""
    total = 0
    for body in _BRACKET_ATOM.findall(smiles):
        m = _CHARGE.search(body.split(":")[0])
        if m:
            signs, digits = m.groups()
            total += (1 if signs[0] == "+" else -1) * (int(digits) if digits else len(signs))
    return total


# ---------------------------------------------------------------- HDF5


@contextmanager
def open_h5(source: SourceConfig, path: Path) -> Iterator[h5py.File]:
    """The file opened read-only; a SourceError naming it if it is not readable HDF5."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise SourceError(source.name, f"cannot open as HDF5: {exc}", str(path)) from exc
    with f:
        yield f


@dataclass(frozen=True)
class H5Layout:
    """Dataset paths inside each structure group. `numbers`: candidates, the first present is used.
    `charge` / `multiplicity`: a dataset path, or an int constant."""

    positions: str
    numbers: tuple[str, ...]
    cell: str | None = None
    pbc: str | None = None
    charge: str | int | None = None
    multiplicity: str | int | None = None
    charge_from_smiles: str | None = None  # dataset holding a SMILES string: charge = sum of formal charges
    drop_padding: bool = False


def find_groups(f: h5py.File, positions: str, pattern: str | None) -> list[str]:
    """Structure groups, sorted: those matching the '/'-separated glob `pattern` (None = the root group), or
    with pattern '**' every group holding the `positions` dataset, found recursively."""
    if pattern is None:
        return ["/"]
    if pattern == "**":
        return _groups_holding(f["/"], positions)
    names = ["/"]
    for part in pattern.strip("/").split("/"):
        names = [
            f"{n.rstrip('/')}/{child}"
            for n in names
            for child in sorted(f[n])
            if fnmatch.fnmatchcase(child, part) and f[n].get(child, getclass=True) is h5py.Group
        ]
    return names


def _groups_holding(group: h5py.Group, positions: str) -> list[str]:
    if group.get(positions, getclass=True) is h5py.Dataset:
        return [group.name]
    out: list[str] = []
    for child in sorted(group):
        if group.get(child, getclass=True) is h5py.Group:
            out.extend(_groups_holding(group[child], positions))
    return out


def group_record_key(group: str, layout: H5Layout) -> str:
    """The record-id key of a group: its path without the leading '/', or the positions key for the root."""
    return group.strip("/") or layout.positions


def plan_h5_groups(
    source: SourceConfig, path: Path, layout: H5Layout, pattern: str | None
) -> list[tuple[Selection, int]]:
    """Selections ((group, start, stop), ...) over the file's structure groups; SourceErrors for a file not in
    this layout (no group, numbers missing) or a level key present in no group."""
    present: set[str] = set()
    wanted = {k for keys in source.levels.values() for k in level_key_names(keys)}
    counts: list[tuple[str, int]] = []
    with open_h5(source, path) as f:
        groups = [g for g in find_groups(f, layout.positions, pattern) if layout.positions in f[g]]
        if not groups:
            where = f"group matching {pattern!r}" if pattern not in (None, "**") else "group"
            raise SourceError(source.name, f"no {where} holds a {layout.positions!r} dataset", str(path))
        for name in groups:
            g = f[name]
            if not any(k in g for k in layout.numbers):
                raise SourceError(source.name, f"group {name!r} has no {' or '.join(layout.numbers)!r}", str(path))
            present.update(k for k in wanted if k in g)
            counts.append((name, int(g[layout.positions].shape[0])))
    check_levels_present(source, path, present.__contains__, "group" if pattern is not None else None)
    return pack_groups(counts, source.chunk_size)


def _h5_rows(g: h5py.Group, name: str, start: int, stop: int, total: int) -> np.ndarray | None:
    """Rows start..stop of a per-structure dataset (None when absent); RowsError if its length is not `total`."""
    ds = g.get(name)
    if ds is None:
        return None
    if ds.ndim == 0 or ds.shape[0] != total:
        raise RowsError(name, f"shape {ds.shape}, expected {total} rows like the positions")
    return ds[start:stop]


def _h5_maybe_shared(
    g: h5py.Group, name: str | int | None, start: int, stop: int, total: int, row_ndim: int
) -> np.ndarray | None:
    """A value shared by all structures (dataset of `row_ndim` dims, or an int constant) or rows start..stop."""
    if name is None or isinstance(name, int):
        return None if name is None else np.asarray(name)
    ds = g.get(name)
    if ds is None:
        return None
    if ds.ndim == row_ndim or (row_ndim == 0 and ds.size == 1):
        return np.asarray(ds[()]).reshape(ds.shape if ds.ndim == row_ndim else ())
    return _h5_rows(g, name, start, stop, total)


def _h5_numbers(g: h5py.Group, layout: H5Layout, start: int, stop: int, n_atoms: int, total: int) -> np.ndarray:
    name = next((k for k in layout.numbers if k in g), None)
    if name is None:
        raise RowsError(" or ".join(layout.numbers), "atomic numbers dataset missing")
    ds = g[name]
    if ds.ndim == 2 and ds.shape == (n_atoms, 1):  # (N, 1) column
        arr = ds[:, 0]
    elif ds.ndim == 1:
        arr = ds[()]
    else:
        arr = _h5_rows(g, name, start, stop, total)
    return to_atomic_numbers(name, arr)


def read_h5_rows(source: SourceConfig, g: h5py.Group, layout: H5Layout, start: int, stop: int) -> Rows:
    """Structures start..stop-1 of one group, read as slices."""
    pos = g[layout.positions]
    if pos.ndim != 3:
        raise RowsError(layout.positions, f"shape {pos.shape}, expected (M, N, 3)")
    total = pos.shape[0]
    levels = {}
    for level, keys in source.levels.items():
        force_key = keys.forces or keys.gradient
        levels[level] = LevelRows(
            energy=_h5_rows(g, keys.energy, start, stop, total) if keys.energy else None,
            forces=_h5_rows(g, force_key, start, stop, total) if force_key else None,
            is_gradient=keys.gradient is not None,
            valid=_h5_rows(g, keys.valid, start, stop, total) if keys.valid else None,
        )
    charge: Any = _h5_maybe_shared(g, layout.charge, start, stop, total, 0)
    if charge is None and layout.charge_from_smiles and layout.charge_from_smiles in g:
        charge = np.asarray(smiles_formal_charge(decode_str(g[layout.charge_from_smiles][()])))
    return Rows(
        key=group_record_key(g.name, layout),
        start=start,
        numbers=_h5_numbers(g, layout, start, stop, pos.shape[1], total),
        positions=pos[start:stop],
        levels=levels,
        cell=_h5_maybe_shared(g, layout.cell, start, stop, total, 2),
        pbc=_h5_maybe_shared(g, layout.pbc, start, stop, total, 1),
        charge=charge,
        multiplicity=_h5_maybe_shared(g, layout.multiplicity, start, stop, total, 0),
        drop_padding=layout.drop_padding,
    )


def read_h5_chunk(chunk: Chunk, layout: H5Layout) -> Iterator[Record | RecordError]:
    """Records of a chunk planned by :func:`plan_h5_groups` (one file open, one slice read per dataset)."""
    source, path = chunk.source, chunk.path
    with open_h5(source, path) as f:
        for group, start, stop in chunk.selection:
            key = group_record_key(group, layout)
            g = f.get(group)
            if not isinstance(g, h5py.Group):
                yield from block_errors(path, key, start, stop, "unreadable", f"group {group!r} missing")
                continue
            yield from rows_records(source, path, key, start, stop, _loader(source, g, layout, start, stop))


def _loader(source: SourceConfig, g: h5py.Group, layout: H5Layout, start: int, stop: int) -> Callable[[], Rows]:
    return lambda: read_h5_rows(source, g, layout, start, stop)


class H5GroupReader:
    """Base of the HDF5 readers: subclasses say how a source's options map to a layout and group pattern."""

    def layout_for(self, source: SourceConfig) -> tuple[H5Layout, str | None]:
        raise NotImplementedError

    def plan(self, source: SourceConfig, base_dir: Path) -> list[Chunk]:
        layout, pattern = self.layout_for(source)
        return plan_files(source, base_dir, lambda path: plan_h5_groups(source, path, layout, pattern))

    def read(self, chunk: Chunk) -> Iterator[Record | RecordError]:
        layout, _ = self.layout_for(chunk.source)
        return read_h5_chunk(chunk, layout)
