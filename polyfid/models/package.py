"""Versioned model package: one file holding everything needed to rebuild and run a trained PolyfidModel.

The file is a ``torch.save`` of plain containers (dict/list/str/int/float/bool/None) and tensors only, so a
plain ``torch.load(path, weights_only=True)`` reads it; no arbitrary object is pickled. Layout (format 1.3)::

    {"format": "polyfid-model-package", "format_version": "1.3", "polyfid_version": "0.1.0",
     "torch_version": ..., "created": ISO-8601 UTC,
     "backbone": {"kind": "hipnn", "config": {...}},   # kind from polyfid.models.registry.BACKBONES
     "heads": ["b3lyp/def2-svp", "gfn2-xtb"],         # head names in head order (no default head)
     "head_bases": {},                                # delta heads: name -> base head (1.1)
     "head_baselines": {},                            # Delta-learning heads: name -> outside method's level (1.2)
     "fidelity_embedding": false,                     # heads' embeddings condition the trunk (1.1)
     "charge_spin": false,                            # total charge and multiplicity condition the trunk (1.3)
     "elements": [1, 6, 7, 8], "cutoff": 5.0, "dtype": "float32",
     "units": {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3"},
     "provenance": {...},                              # caller's (manifest hash, config, ...) + git commit
     "state_dict": {name: tensor, ...}}                # weights; per-head E0 / scale are float64 buffers

A committee (K members fitted to the same data, for uncertainty) is one file of the same kind::

    {"format": "polyfid-committee", "format_version": "1.0", "members": [<package>, ...]}

each member a full package as above; `load_members` reads either file as a list of packages.

Compatibility: a package of the same major version loads (an older minor always; a newer minor when every field
this version needs is present, unknown extra fields are kept in ``metadata``); another major raises
:class:`PackageVersionError`.
"""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
from dataclasses import dataclass, field
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import torch

from polyfid.core.atomic import atomic_path
from polyfid.core.errors import PolyfidError
from polyfid.core.torch_files import RefusedLoad, load_weights_only
from polyfid.models.model import PolyfidModel
from polyfid.models.registry import backbone_spec, build_backbone

FORMAT_NAME = "polyfid-model-package"
COMMITTEE_FORMAT = "polyfid-committee"
COMMITTEE_VERSION = "1.0"
PACKAGE_FORMAT = "1.3"  # 1.1: delta heads (head_bases), fidelity embeddings; 1.2: head_baselines; 1.3: charge_spin
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")  # the MLflow pyfunc face of a package (models from code)
PACKAGE_NAME = "polyfid-pretrained.pt"  # the package inside a pretraining run: <run_dir>/model/<PACKAGE_NAME>
UNITS = {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3"}
# Fields a reader of this format version needs (a newer minor may add more; it must not remove these).
REQUIRED_FIELDS = ("format", "format_version", "backbone", "heads", "elements", "cutoff", "units", "state_dict")


class PackageError(PolyfidError, ValueError):
    """A file that is not a readable polyfid model package (message names the file)."""


class PackageVersionError(PackageError):
    """A package whose format version this polyfid cannot read."""


@dataclass
class LoadedPackage:
    """A rebuilt model (eval mode) and the package's metadata (everything but the state_dict)."""

    model: PolyfidModel
    metadata: dict[str, Any]
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # fields unknown to this polyfid (newer minor)

    @property
    def heads(self) -> list[str]:
        return list(self.metadata["heads"])

    @property
    def elements(self) -> list[int]:
        return list(self.metadata["elements"])

    @property
    def cutoff(self) -> float:
        return float(self.metadata["cutoff"])

    @property
    def format_version(self) -> str:
        return str(self.metadata["format_version"])


def polyfid_version() -> str:
    try:
        return _metadata.version("polyfid")
    except _metadata.PackageNotFoundError:
        return "unknown"


def git_commit(folder: Path | None = None) -> dict[str, Any] | None:
    """``{"git_commit": sha, "git_dirty": bool}`` of the checkout holding `folder` (this source), else None."""
    folder = folder or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"git_commit": sha, "git_dirty": bool(dirty)} if sha else None


def _plain(value: Any, where: str) -> Any:
    """Check `value` is JSON-like plain data (so weights_only loading and printing both work); return a copy."""
    try:
        return json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where} must be plain data (dict/list/str/int/float/bool/None): {exc}") from None


def package_dict(model: PolyfidModel, provenance: dict[str, Any]) -> dict[str, Any]:
    """The package content of `model` as plain containers and CPU tensors."""
    if not isinstance(model, PolyfidModel):
        raise TypeError(f"expected a PolyfidModel (unwrap DDP/DeepSpeed: .module), got {type(model).__name__}")
    if not model.head_names:
        raise ValueError("the model has no heads: nothing to package")
    prov = _plain(dict(provenance), "provenance")
    if "git_commit" not in prov:
        prov.update(git_commit() or {})
    state = {
        k: v.detach().to("cpu", copy=True).contiguous() if isinstance(v, torch.Tensor) else _plain(v, k)
        for k, v in model.state_dict().items()
    }  # non-tensors: module extra state such as the heads' names
    return {
        "format": FORMAT_NAME,
        "format_version": PACKAGE_FORMAT,
        "polyfid_version": polyfid_version(),
        "torch_version": str(torch.__version__),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "backbone": backbone_spec(model.backbone),
        "heads": list(model.head_names),
        "head_bases": dict(model.heads.bases),
        "head_baselines": dict(model.heads.baselines),
        "fidelity_embedding": bool(model.fidelity_embedding),
        "charge_spin": bool(model.charge_spin),
        "elements": [int(z) for z in model.backbone.elements],
        "cutoff": float(model.backbone.cutoff),
        "dtype": str(model.dtype).removeprefix("torch."),
        "units": dict(UNITS),
        "provenance": prov,
        "state_dict": state,
    }


def save_package(path: str | Path, model: PolyfidModel, *, provenance: dict[str, Any]) -> Path:
    """Write `model` as a package at `path` atomically (temp file, fsync, rename). Returns the path.

    `provenance`: plain data from the caller, e.g. ``{"manifest": manifest.build_fingerprint, "config": {...}}``;
    ``git_commit``/``git_dirty`` are added when absent and this source is a git checkout.
    """
    return _write(Path(path), package_dict(model, provenance))


def save_committee(path: str | Path, models: list[PolyfidModel], *, provenance: dict[str, Any]) -> Path:
    """Write K >= 2 models with the same heads as one committee file (atomically); `provenance` as save_package's."""
    if len(models) < 2:
        raise ValueError(f"a committee needs at least 2 members, got {len(models)}")
    members = [package_dict(m, provenance) for m in models]
    if len({tuple(m["heads"]) for m in members}) > 1:
        raise ValueError("committee members must have the same heads in the same order")
    content = {"format": COMMITTEE_FORMAT, "format_version": COMMITTEE_VERSION, "members": members}
    return _write(Path(path), content)


def _write(path: Path, content: dict[str, Any]) -> Path:
    with atomic_path(path) as tmp:
        torch.save(content, tmp)
        try:  # guarantee the invariant before the rename: a plain weights_only load must read it
            torch.load(tmp, weights_only=True)
        except Exception as exc:
            raise TypeError(f"{path}: package content is not weights_only-loadable (a bug): {exc}") from exc
    return path


def _check_version(raw: dict[str, Any], path: Path) -> None:
    version = str(raw.get("format_version", ""))
    major, _, minor = version.partition(".")
    my_major, my_minor = (int(x) for x in PACKAGE_FORMAT.split("."))
    if not (major.isdigit() and minor.isdigit()):
        raise PackageError(f"{path}: bad package format_version {version!r}")
    if int(major) != my_major:
        raise PackageVersionError(
            f"{path}: package format {version} (written by polyfid {raw.get('polyfid_version', '?')}); this polyfid "
            f"({polyfid_version()}) reads format {my_major}.x only. Re-export the model with a matching polyfid."
        )
    missing = [k for k in REQUIRED_FIELDS if k not in raw]
    if missing:
        newer = int(minor) > my_minor
        raise PackageVersionError(
            f"{path}: package format {version} lacks field(s) {missing} that this polyfid (format {PACKAGE_FORMAT}) "
            + ("needs; it was written by a newer polyfid, upgrade to read it" if newer else "needs: file is damaged")
        )


def _read(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    if not path.is_file():
        raise PackageError(f"{path}: no such model package")
    try:
        raw = load_weights_only(path, map_location)
    except RefusedLoad as exc:
        raise PackageError(
            f"{path}: not a readable polyfid model package (truncated, corrupted or not a package): {exc.reason}"
        ) from None
    if not isinstance(raw, dict) or raw.get("format") not in (FORMAT_NAME, COMMITTEE_FORMAT):
        raise PackageError(f"{path}: not a polyfid model package (no format={FORMAT_NAME!r} marker)")
    return raw


def conditioning(metadata: dict[str, Any]) -> dict[str, bool]:
    """PolyfidModel's conditioning flags from a package's metadata (absent in older packages: off)."""
    return {k: bool(metadata.get(k, False)) for k in ("fidelity_embedding", "charge_spin")}


def load_package(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedPackage:
    """Rebuild the model of a package (eval mode, on `map_location`) with its metadata."""
    path = Path(path)
    raw = _read(path, map_location)
    if raw["format"] == COMMITTEE_FORMAT:
        raise PackageError(
            f"{path}: a committee of {len(raw.get('members', []))} models, not one package: read it with "
            "load_members (PolyfidCalculator and `polyfid predict` take it as it is)"
        )
    return _rebuild(raw, path, map_location)


def load_members(path: str | Path, map_location: str | torch.device = "cpu") -> list[LoadedPackage]:
    """The models of a committee file, or the one model of a package, as a list."""
    path = Path(path)
    raw = _read(path, map_location)
    if raw["format"] == FORMAT_NAME:
        return [_rebuild(raw, path, map_location)]
    if str(raw.get("format_version", "")).split(".")[0] != COMMITTEE_VERSION.split(".")[0]:
        raise PackageVersionError(f"{path}: committee format {raw.get('format_version')!r}; this polyfid reads 1.x")
    members = raw.get("members")
    if not isinstance(members, list) or len(members) < 2 or not all(isinstance(m, dict) for m in members):
        raise PackageError(f"{path}: a committee file without its members (damaged)")
    loaded = [_rebuild(m, path, map_location, f" member {k}") for k, m in enumerate(members)]
    if len({tuple(m.heads) for m in loaded}) > 1:
        raise PackageError(f"{path}: committee members have different heads")
    return loaded


def _rebuild(raw: dict[str, Any], path: Path, map_location: str | torch.device, where: str = "") -> LoadedPackage:
    """The LoadedPackage of one package dict (`where` names a committee member in errors)."""
    if raw.get("format") != FORMAT_NAME:
        raise PackageError(f"{path}{where}: not a polyfid model package (no format={FORMAT_NAME!r} marker)")
    _check_version(raw, path)
    try:
        backbone = build_backbone(raw["backbone"]["kind"], raw["backbone"]["config"])
        model = PolyfidModel(backbone, **conditioning(raw))
        for name in raw["heads"]:
            model.add_head(name, None)
        model.load_state_dict(raw["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise PackageError(f"{path}{where}: cannot rebuild the packaged model: {type(exc).__name__}: {exc}") from exc
    if model.head_names != list(raw["heads"]) or list(backbone.elements) != list(raw["elements"]):
        raise PackageError(f"{path}{where}: heads/elements of the rebuilt model differ from the package metadata")
    model.to(map_location).eval()
    known = {
        *REQUIRED_FIELDS,
        "head_bases",
        "head_baselines",
        "fidelity_embedding",
        "charge_spin",
        "polyfid_version",
        "torch_version",
        "created",
        "dtype",
        "provenance",
    }
    meta = {k: v for k, v in raw.items() if k != "state_dict"}
    extra = {k: v for k, v in meta.items() if k not in known}
    return LoadedPackage(model=model, metadata=meta, path=path, extra=extra)
