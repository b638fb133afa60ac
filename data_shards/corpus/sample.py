"""A committable sample of a generated corpus: the best-labelled few structures of every pretraining molecule per
tier, the held-out files whole, the full run's manifest and provenance, and sources.yaml to build shards from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from polyfid.core.atomic import atomic_path, atomic_write_bytes
from polyfid.core.digest import sha256_file


def _ok_counts(group: Any) -> np.ndarray:
    """Per structure, how many levels label it."""
    m = group["positions"].shape[0]
    counts = np.zeros(m, int)
    for key in group:
        if hasattr(group[key], "keys") and "ok" in group[key]:
            counts += group[key]["ok"][()].astype(int)
    return counts


def _copy_rows(src: Any, dst: Any, rows: np.ndarray, m: int) -> None:
    """Copy group `src` into `dst`, keeping `rows` of every dataset whose first axis has the structures (m)."""
    import h5py

    dst.attrs.update(dict(src.attrs))
    for key, obj in src.items():
        if isinstance(obj, h5py.Group):
            _copy_rows(obj, dst.create_group(key), rows, m)
            continue
        data = obj[()]
        if obj.ndim and obj.shape[0] == m:
            data = data[rows]
        dst.create_dataset(key, data=data, compression="gzip" if np.size(data) > 1000 else None)
        dst[key].attrs.update(dict(obj.attrs))


def _structure_groups(group: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, group) of every group holding structures (`positions`), at any depth (corpus.h5 nests tiers)."""
    if "positions" in group:
        return [(path, group)]
    return [found for name, sub in group.items() if hasattr(sub, "keys")
            for found in _structure_groups(sub, f"{path}/{name}" if path else name)]  # fmt: skip


def write_sample(corpus: str | Path, out: str | Path, per_molecule: int = 2) -> None:
    """Write the sample of `corpus` into `out` (files replaced atomically; other files there are left alone)."""
    import h5py

    corpus, out = Path(corpus), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with h5py.File(corpus / "corpus.h5") as src, atomic_path(out / "corpus.h5") as tmp, h5py.File(tmp, "w") as dst:
        dst.attrs.update(dict(src.attrs))
        for name, group in _structure_groups(src):
            counts = _ok_counts(group)
            rows = np.sort(np.argsort(-counts, kind="stable")[:per_molecule])
            _copy_rows(group, dst.create_group(name), rows, group["positions"].shape[0])
    for path in sorted(corpus.glob("heldout_*.h5")) + sorted(corpus.glob("scan_*.h5")):
        with atomic_path(out / path.name) as tmp:
            shutil.copyfile(path, tmp)
    note = (
        f"# SAMPLE: {per_molecule} best-labelled structures per pretraining molecule and tier; held-out files whole\n"
    )
    atomic_write_bytes(out / "sources.yaml", (note + (corpus / "sources.yaml").read_text()).encode())
    with atomic_path(out / "targets.yaml") as tmp:
        shutil.copyfile(corpus / "targets.yaml", tmp)
    for name, target in (("manifest.json", "full_manifest.json"), ("PROVENANCE.md", "PROVENANCE.md")):
        with atomic_path(out / target) as tmp:
            shutil.copyfile(corpus / name, tmp)
    files = sorted(p.name for p in out.iterdir() if p.is_file() and p.name != "sample_manifest.json")
    listing = {p: {"bytes": (out / p).stat().st_size, "sha256": sha256_file(out / p)} for p in files}
    atomic_write_bytes(
        out / "sample_manifest.json", json.dumps({"per_molecule": per_molecule, "files": listing}, indent=1).encode()
    )
