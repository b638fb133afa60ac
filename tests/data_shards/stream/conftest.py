"""Shard folders built from real QM data: two folders, three datasets with different level sets and sizes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase.units import Hartree
from polyfid.data_shards.manifest import DatasetInfo, LevelStats, Manifest, ShardEntry
from polyfid.data_shards.record import LevelLabels, Record, normalize_level
from polyfid.data_shards.shard_writer import write_shard

from tests.shared_data import shared_path

# dataset -> (folder, every k-th record is val, records per train shard, records per val shard)
LAYOUT = {"ethanol_ccsdt": ("a", 5, 100, 100), "ethanol_mf": ("a", 5, 10, 5), "ani1": ("b", 4, 2, 2)}


def _split(dataset: str, index: int) -> str:
    every = LAYOUT[dataset][1]
    return "val" if index % every == every - 1 else "train"


@dataclass
class Shards:
    dirs: list[Path]
    records: dict[str, dict[str, Record]]  # split -> id -> record
    level_names: list[str]
    dataset_names: list[str]


def _labels(group: h5py.Group, i: int, scale: float = 1.0, energy_key: str = "energy") -> LevelLabels | None:
    energy = float(group[energy_key][i])
    if ("ok" in group and not group["ok"][i]) or not np.isfinite(energy):
        return None
    forces = group["forces"][i] if "forces" in group else None
    if forces is not None and not np.isfinite(forces).all():
        forces = None
    return LevelLabels(energy * scale, None if forces is None else (forces * scale).astype(np.float32))


def _ethanol(path: Path, dataset: str) -> list[Record]:
    with h5py.File(path) as f:
        numbers, positions = f["atomic_numbers"][()], f["positions"][()]
        levels = [k for k in f if isinstance(f[k], h5py.Group)]
        out = []
        for i in range(positions.shape[0]):
            labels = {normalize_level(lv): lab for lv in levels if (lab := _labels(f[lv], i)) is not None}
            out.append(Record(f"{dataset}/{i}", dataset, numbers.astype(np.uint8), positions[i], labels))
    return out


def _ani1(path: Path) -> list[Record]:
    out = []
    with h5py.File(path) as f:
        for formula in sorted(f):
            g = f[formula]
            for i in range(g["coordinates"].shape[0]):
                labels = {}
                dft = _labels(g, i, Hartree, "wb97x_dz.energy")
                if dft is not None:  # forces: hartree/angstrom
                    labels["wb97x_dz"] = LevelLabels(dft.energy, (g["wb97x_dz.forces"][i] * Hartree).astype(np.float32))
                cc = float(g["ccsd(t)_cbs.energy"][i])
                if np.isfinite(cc):
                    labels["ccsd(t)_cbs"] = LevelLabels(cc * Hartree)
                numbers = g["atomic_numbers"][()].astype(np.uint8)
                out.append(
                    Record(f"ani1/{formula}/{i}", "ani1", numbers, g["coordinates"][i].astype(np.float64), labels)
                )
    return out


def _write_folder(root: Path, datasets: dict[str, list[Record]]) -> None:
    shards, levels = [], {}
    for name, records in datasets.items():
        for split, size in zip(("train", "val"), LAYOUT[name][2:], strict=True):
            chosen = [r for i, r in enumerate(records) if _split(name, i) == split]
            for k in range(0, len(chosen), size):
                info = write_shard(root / name / split / f"c0-{k // size}.tar", root, chosen[k : k + size])
                shards.append(ShardEntry(dataset=name, split=split, chunk_id="c0", **vars(info)))
        for rec in records:
            for lv in rec.labels:
                levels.setdefault(lv, set()).add(name)
    Manifest(
        shards=shards,
        datasets={name: DatasetInfo(source={"name": name}, files=[]) for name in datasets},
        levels={lv: LevelStats({}, 0, 0, 0.0, 1.0, None, sorted(ds)) for lv, ds in levels.items()},
        split={"train": 0.8, "val": 0.2},
        build_fingerprint="tests",
    ).write(root)


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Shards:
    data = {
        "ethanol_ccsdt": _ethanol(shared_path("generated/ethanol_ccsdt_xtb.h5"), "ethanol_ccsdt"),
        "ethanol_mf": _ethanol(shared_path("generated/ethanol_mf.h5"), "ethanol_mf"),
        "ani1": _ani1(shared_path("public/ani1_n5.hdf5")),
    }
    root = tmp_path_factory.mktemp("shards")
    folders = {}
    for name, records in data.items():
        folders.setdefault(LAYOUT[name][0], {})[name] = records
    for folder, datasets in folders.items():
        _write_folder(root / folder, datasets)
    records: dict[str, dict[str, Record]] = {"train": {}, "val": {}}
    for name, recs in data.items():
        for i, r in enumerate(recs):
            records[_split(name, i)][r.id] = r
    levels = sorted({lv for recs in data.values() for r in recs for lv in r.labels})
    return Shards([root / f for f in sorted(folders)], records, levels, sorted(data))
