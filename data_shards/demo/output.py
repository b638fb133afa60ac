"""Output files: the HDF5 and extxyz layouts of labelled structures, each file written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from polyfid.core.atomic import atomic_path
from polyfid.data_shards.qm import LEVELS


def h5_group(
    numbers: np.ndarray,
    positions: np.ndarray,
    levels: dict[str, dict[str, np.ndarray]],
    extra: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Flatten one molecule's arrays into {dataset_path: array} for write_h5."""
    out: dict[str, Any] = {
        "atomic_numbers": np.asarray(numbers, np.int64),
        "positions": np.asarray(positions, np.float64),
    }
    attrs: dict[str, dict[str, str]] = {}
    for level, arrays in levels.items():
        key = LEVELS[level].key
        for k, v in arrays.items():
            out[f"{key}/{k}"] = v
        attrs[key] = {"level": level, "method": LEVELS[level].description}
    out.update(extra or {})
    out["@attrs"] = attrs
    return out


def write_h5(path: Path, groups: dict[str, dict[str, Any]], attrs: dict[str, Any]) -> None:
    """Write groups {name: {dataset_path: array}} and file attrs (dicts/lists as JSON) atomically."""
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, val in attrs.items():
            f.attrs[key] = val if isinstance(val, str) else json.dumps(val)
        for gname, data in groups.items():
            grp = f.create_group(gname)
            for dname, arr in data.items():
                if dname.endswith("@attrs"):
                    continue
                arr = np.asarray(arr)
                big = arr.ndim >= 2 and arr.size > 1000
                grp.create_dataset(dname, data=arr, compression="gzip" if big else None)
            for dname, dattrs in data.get("@attrs", {}).items():
                for k, v in dattrs.items():
                    (grp[dname] if dname else grp).attrs[k] = v


def extxyz_frame(
    numbers: np.ndarray,
    positions: np.ndarray,
    levels: dict[str, dict[str, np.ndarray]],
    i: int,
    info: dict[str, Any],
) -> Atoms:
    """Structure `i` of positions (M,N,3) as Atoms: `info`, then per level `<key>_energy`, `<key>_ok` (info)
    and `<key>_forces` (arrays) from its level arrays (see labelling.empty_level)."""
    a = Atoms(numbers=numbers, positions=positions[i])
    a.info.update({**info, "level_names": ",".join(levels)})
    for lv, arrays in levels.items():
        key = LEVELS[lv].key
        a.info[f"{key}_energy"] = float(arrays["energy"][i])
        a.info[f"{key}_ok"] = bool(arrays["ok"][i])
        a.arrays[f"{key}_forces"] = np.array(arrays["forces"][i], dtype=np.float64)
    return a


def write_extxyz(path: Path, frames: list[Atoms]) -> None:
    """Write `frames` to one extxyz file atomically."""
    from ase.io import write

    with atomic_path(path) as tmp:
        write(tmp, frames, format="extxyz")
