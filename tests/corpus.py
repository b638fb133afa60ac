"""The project's own QM corpus (data_shards/demo_corpus) as test inputs: no ../shared needed."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

CORPUS = Path(__file__).resolve().parents[1] / "data_shards" / "demo_corpus"
TARGET_ETHANOL = CORPUS / "target_ethanol.h5"
# flat-file group -> the corpus group it copies (GFN2-xTB E+F, MP2/cc-pVDZ E+F, CCSD(T)/cc-pVDZ E on some)
FLAT_GROUPS = {"xtb_gfn2": "gfn2_xtb", "mp2_ccpvdz": "mp2_ccpvdz", "ccsd_t_ccpvdz": "ccsdt_ccpvdz"}


def ethanol_arrays(n: int | None = None) -> dict[str, np.ndarray]:
    """The first `n` target-ethanol geometries: `atomic_numbers`, `positions` and `<group>/<key>` label arrays."""
    with h5py.File(TARGET_ETHANOL) as f:
        g = f["CH3CH2OH"]
        out = {"atomic_numbers": g["atomic_numbers"][()], "positions": g["positions"][:n]}
        for flat, group in FLAT_GROUPS.items():
            for key in ("energy", "forces", "ok"):
                if key in g[group]:
                    out[f"{flat}/{key}"] = g[group][key][:n]
    return out


def write_flat_ethanol(path: Path, n: int = 50) -> Path:
    """A flat multi-level HDF5 file (one molecule, datasets at the top) of the first `n` target-ethanol geometries:
    a private copy a test may damage."""
    with h5py.File(path, "w") as f:
        for key, value in ethanol_arrays(n).items():
            f[key] = value
    return path
