"""Shard folders built from the project's own QM corpus (data_shards/demo_corpus): two folders, three datasets with
different level sets and sizes. No ../shared needed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ase.io
import h5py
import numpy as np
import pytest

from polyfid.data_shards.manifest import DatasetInfo, LevelStats, Manifest, ShardEntry
from polyfid.data_shards.record import LevelLabels, Record
from polyfid.data_shards.shard_writer import write_shard

CORPUS = Path(__file__).resolve().parents[3] / "data_shards" / "demo_corpus"
# level name -> its group in the corpus HDF5 files
H5_LEVELS = {"gfn2-xtb": "gfn2_xtb", "mp2/cc-pvdz": "mp2_ccpvdz", "ccsd(t)/cc-pvdz": "ccsdt_ccpvdz"}
# dataset -> (folder, every k-th record is val, records per train shard, records per val shard)
LAYOUT = {"ethanol_ccsdt": ("a", 5, 40, 100), "ethanol_mf": ("a", 5, 8, 5), "molecules": ("b", 4, 2, 2)}


def _split(dataset: str, index: int) -> str:
    every = LAYOUT[dataset][1]
    return "val" if index % every == every - 1 else "train"


@dataclass
class Shards:
    dirs: list[Path]
    records: dict[str, dict[str, Record]]  # split -> id -> record
    level_names: list[str]
    dataset_names: list[str]


def _labels(group: h5py.Group, i: int) -> LevelLabels | None:
    energy = float(group["energy"][i])
    if ("ok" in group and not group["ok"][i]) or not np.isfinite(energy):
        return None
    forces = group["forces"][i] if "forces" in group else None
    if forces is not None and not np.isfinite(forces).all():
        forces = None
    return LevelLabels(energy, None if forces is None else forces.astype(np.float32))


def _ethanol(path: Path, dataset: str) -> list[Record]:
    """Ethanol geometries with GFN2-xTB E+F, MP2 E+F on most and CCSD(T) E on a few (or a torsion scan)."""
    with h5py.File(path) as f:
        g = f["CH3CH2OH"]
        numbers, positions = g["atomic_numbers"][()], g["positions"][()]
        out = []
        for i in range(positions.shape[0]):
            labels = {lv: lab for lv, key in H5_LEVELS.items() if key in g and (lab := _labels(g[key], i)) is not None}
            out.append(Record(f"{dataset}/{i}", dataset, numbers.astype(np.uint8), positions[i], labels))
    return out


def _molecules(path: Path) -> list[Record]:
    """The first geometry of each of the 8 small molecules of the DFT subset: B3LYP E+F on all, GFN2-xTB energies
    on every other one (its forces left out), so label sets vary within the dataset."""
    firsts: dict[str, ase.Atoms] = {}
    for atoms in ase.io.read(path, index=":"):
        firsts.setdefault(atoms.get_chemical_formula(), atoms)
    out = []
    for k, (formula, atoms) in enumerate(firsts.items()):
        labels = {"b3lyp/def2-svp": LevelLabels(float(atoms.info["b3lyp_def2svp_energy"]),
                                                atoms.arrays["b3lyp_def2svp_forces"].astype(np.float32))}  # fmt: skip
        if k % 2 == 0:
            labels["gfn2-xtb"] = LevelLabels(float(atoms.info["gfn2_xtb_energy"]))
        out.append(Record(f"molecules/{formula}", "molecules", atoms.numbers.astype(np.uint8), atoms.positions, labels))
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
        "ethanol_ccsdt": _ethanol(CORPUS / "target_ethanol.h5", "ethanol_ccsdt"),
        "ethanol_mf": _ethanol(CORPUS / "scan_ethanol.h5", "ethanol_mf"),
        "molecules": _molecules(CORPUS / "dft_subset.extxyz"),
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
