"""Fuzzing the readers: whatever a file holds, reading it gives records or named errors (`SourceError` for the
whole source, `RecordError` per structure), never a crash or a hang, and a record never changes meaning: its atoms,
positions and labels are the file's, converted to eV / Angstrom."""

from __future__ import annotations

import tempfile
from importlib.resources import files
from pathlib import Path

import h5py
import numpy as np
from ase import units
from hypothesis import given
from hypothesis import strategies as st

from polyfid.data_shards.errors import SourceError
from polyfid.data_shards.validation import MAX_Z, MIN_DISTANCE, min_distance
from tests.data_shards.readers import make_source, read_all

DFT_SUBSET = files("polyfid.data_shards") / "demo_corpus" / "dft_subset.extxyz"
moderate = st.floats(-100.0, 100.0)
values = moderate | st.floats(width=64) | st.sampled_from([0.0, 1e30, -1e30, float("nan"), float("inf")])
elements = st.sampled_from([1, 1, 6, 6, 7, 8, 8, 17, 0, -1, 119, 200])  # mostly valid, some not


def _read(source):
    """Records and errors, or None when the whole source is refused with a SourceError."""
    try:
        _, records, errors = read_all(source)
    except SourceError as exc:
        assert str(exc).startswith(f"source {source.name!r}")
        return None
    return records, errors


def _check_plausible(rec, source) -> None:
    assert rec.n_atoms >= 1 and rec.numbers.min() >= 1 and rec.numbers.max() <= MAX_Z
    assert np.isfinite(rec.positions).all() and min_distance(rec.positions, rec.cell, rec.pbc) >= MIN_DISTANCE
    assert rec.labels
    for lab in rec.labels.values():
        if lab.energy is not None:
            assert np.isfinite(lab.energy) and abs(lab.energy) / rec.n_atoms <= source.limits.max_abs_energy_per_atom
        if lab.forces is not None:
            assert lab.forces.shape == (rec.n_atoms, 3) and np.abs(lab.forces).max() <= source.limits.max_abs_force


@st.composite
def generic_files(draw):
    m, n = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    per_row = draw(st.booleans())
    shape = (m, n) if per_row else (n,)
    numbers = np.array(draw(st.lists(elements, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))))
    spread = draw(st.sampled_from([0.0, 1.0, 3.0]))
    positions = np.arange(m * n * 3, dtype=np.float64).reshape(m, n, 3) * spread
    if draw(st.booleans()):
        positions.flat[draw(st.integers(0, positions.size - 1))] = draw(values)
    energy = np.array(draw(st.lists(moderate | values, min_size=m, max_size=m)))
    forces_shape = draw(st.sampled_from([(m, n, 3), (m, n + 1, 3), (m, 3)]))
    forces = np.array(draw(st.lists(moderate, min_size=int(np.prod(forces_shape)),
                                    max_size=int(np.prod(forces_shape))))).reshape(forces_shape)  # fmt: skip
    if draw(st.booleans()):
        forces.flat[draw(st.integers(0, forces.size - 1))] = draw(values)
    padding = draw(st.booleans())
    return numbers.reshape(shape), positions, energy, forces, padding


@given(generic_files())
def test_generic_h5(content):
    numbers, positions, energy, forces, padding = content
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.h5"
        with h5py.File(path, "w") as f:
            f["z"], f["r"], f["e"], f["f"] = numbers, positions, energy, forces
        source = make_source(path, "generic_h5", {"x": {"energy": "e", "forces": "f"}},
                             options={"numbers": "z", "positions": "r", "padding": padding},
                             units={"energy": "hartree", "length": "bohr"})  # fmt: skip
        read = _read(source)
    if read is None:
        return
    records, errors = read
    assert len(records) + len(errors) == len(energy)
    for rec in records:
        _check_plausible(rec, source)
        i = int(rec.id.rsplit(":", 1)[1])
        z = numbers[i] if numbers.ndim == 2 else numbers
        keep = z != 0 if padding and numbers.ndim == 2 else np.ones(len(z), dtype=bool)
        assert rec.numbers.tolist() == z[keep].tolist()  # no atom lost or invented
        np.testing.assert_allclose(rec.positions, positions[i][keep] * units.Bohr, rtol=1e-12)
        if "x" in rec.labels and rec.labels["x"].energy is not None:
            assert rec.labels["x"].energy == energy[i] * units.Hartree


def _mutate(text: str, edits: list[tuple[int, str]], cut: int | None) -> str:
    chars = list(text)
    for pos, ch in edits:
        chars[pos % len(chars)] = ch
    out = "".join(chars)
    return out[:cut] if cut is not None else out


EXTXYZ = "".join(DFT_SUBSET.read_text().splitlines(keepends=True)[:16])  # the first two frames


@given(
    st.lists(
        st.tuples(st.integers(0, len(EXTXYZ)), st.sampled_from(list("0123456789 .-=eE:\nXFTnaiO\"'"))), max_size=6
    ),
    st.none() | st.integers(0, len(EXTXYZ)),
)
def test_extxyz(edits, cut):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.extxyz"
        path.write_text(_mutate(EXTXYZ, edits, cut))
        levels = {"gfn2-xtb": {"energy": "gfn2_xtb_energy", "forces": "gfn2_xtb_forces", "valid": "gfn2_xtb_ok"}}
        source = make_source(path, "ase", levels)
        read = _read(source)
    if read is not None:
        for rec in read[0]:
            _check_plausible(rec, source)
