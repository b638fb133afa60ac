"""The build configuration (SOURCES.yaml): which datasets, where, in which format and units."""

from __future__ import annotations

import functools
import glob
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from polyfid.core.config import validate_config
from polyfid.data_shards.errors import SourceError
from polyfid.data_shards.record import normalize_level
from polyfid.data_shards.units import energy_factor, force_factor, length_factor

FORMATS = ("ani_h5", "spice_h5", "sgdml_npz", "ase", "generic_h5")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Units(_Strict):
    """Units of the numbers stored in the source file; converted to eV / Angstrom at ingestion."""

    energy: str = "ev"
    length: str = "angstrom"
    forces: str | None = None  # default: <energy>/<length>

    @model_validator(mode="after")
    def _known(self) -> Units:
        energy_factor(self.energy)
        length_factor(self.length)
        force_factor(self.force_unit)
        return self

    @property
    def force_unit(self) -> str:
        return self.forces or f"{self.energy}/{self.length}"


class LevelKeys(_Strict):
    """Where one level's labels live inside the file. `gradient` is dE/dR (stored negated as forces)."""

    energy: str | None = None
    forces: str | None = None
    gradient: str | None = None
    valid: str | None = None  # optional boolean key: False marks the label as missing
    units: Units | None = None  # overrides the source's units for this level

    @model_validator(mode="after")
    def _one_force_key(self) -> LevelKeys:
        if self.forces and self.gradient:
            raise ValueError("give either 'forces' or 'gradient', not both")
        if not (self.energy or self.forces or self.gradient):
            raise ValueError("a level needs at least an 'energy', 'forces' or 'gradient' key")
        return self


class Limits(_Strict):
    """Plausibility bounds, checked after unit conversion: a value beyond them is a unit or file error
    (`implausible_energy` / `implausible_forces`), never a label. The defaults pass every element's all-electron
    total energy and any force a QM dataset holds."""

    max_abs_energy_per_atom: float = Field(default=1.0e6, gt=0, description="|E| / n_atoms bound (eV)")
    max_abs_force: float = Field(default=1.0e4, gt=0, description="bound on every force component (eV/Angstrom)")


class SplitConfig(_Strict):
    """Fractions for the hash-based split (train is what remains) and what is hashed, so that near-duplicates do not
    straddle splits: `id` each structure; `group` each file key (a molecule or trajectory: every frame of it lands
    in one split); `formula` each composition; `block` runs of `block` consecutive frames of a key (MD), dropping
    `gap` frames on each side of a boundary between blocks of different splits, so no held-out frame is next to a
    training frame."""

    val: float = Field(default=0.05, ge=0, lt=1)
    test: float = Field(default=0.05, ge=0, lt=1)
    by: Literal["id", "group", "formula", "block"] = Field(default="id")
    block: int = Field(default=20, ge=1, description="by=block: consecutive frames per block")
    gap: int = Field(default=0, ge=0, description="by=block: frames dropped on each side of a split boundary")

    @model_validator(mode="after")
    def _sum(self) -> SplitConfig:
        if self.val + self.test >= 1:
            raise ValueError("val + test must be < 1")
        if self.by == "block" and 2 * self.gap >= self.block:
            raise ValueError(f"split.gap {self.gap} drops every frame of a block of {self.block}")
        return self


class SourceConfig(_Strict):
    """One dataset. `path` is a file or glob, relative to the YAML file's folder."""

    name: str
    path: str
    format: Literal["ani_h5", "spice_h5", "sgdml_npz", "ase", "generic_h5"]
    units: Units = Field(default_factory=Units)
    levels: dict[str, LevelKeys]
    options: dict[str, Any] = Field(default_factory=dict)  # format-specific keys (see each reader)
    chunk_size: int = Field(
        default=10_000, gt=0, description="structures per build task; a chunk writes one shard or more per split"
    )
    limits: Limits = Field(default_factory=Limits)
    split: SplitConfig | None = Field(
        default=None,
        description="this dataset's split, instead of the file's (e.g. by: group for a scan kept whole); a file"
        " that two datasets read must be split the same way in both, or geometries leak between splits",
    )

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\ ") or v.startswith("."):
            raise ValueError(f"dataset name {v!r} must be non-empty, without '/', '\\' or spaces")
        return v

    @field_validator("levels")
    @classmethod
    def _normalise_levels(cls, v: dict[str, LevelKeys]) -> dict[str, LevelKeys]:
        if not v:
            raise ValueError("at least one level of theory is required")
        out = {normalize_level(k): keys for k, keys in v.items()}
        if len(out) != len(v):
            raise ValueError(f"level names collide after normalisation: {sorted(v)}")
        return out

    def units_for(self, level: str) -> Units:
        return self.levels[level].units or self.units

    def record_name(self, path: Path) -> str:
        """The file's part of a record id: its name for a plain path; for a glob, its path below the glob's
        fixed prefix (so `data/*/train.h5` gives `a/train.h5`, unique and independent of where `data` lives)."""
        return _record_name(self.path, str(path))

    def files(self, base_dir: Path) -> list[Path]:
        """The files this source matches, sorted; a SourceError if none."""
        pattern = self.path if Path(self.path).is_absolute() else str(base_dir / self.path)
        found = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
        if not found:
            raise SourceError(self.name, f"no file matches {pattern!r}")
        return found


@functools.lru_cache(maxsize=1024)
def _record_name(pattern: str, path: str) -> str:
    parts = Path(pattern).parts
    wild = next((i for i, part in enumerate(parts) if glob.has_magic(part)), None)
    if wild is None or not Path(pattern).is_absolute():
        return Path(path).name
    return Path(path).relative_to(Path(*parts[:wild])).as_posix()


class BuildConfig(_Strict):
    """The whole SOURCES.yaml file."""

    sources: list[SourceConfig]
    split: SplitConfig = Field(default_factory=SplitConfig)
    shard_max_bytes: int = Field(
        default=64 * 2**20,
        gt=0,
        description="target shard size (bytes); a stream holds `interleave` shards per dataset in memory",
    )
    shard_max_samples: int = Field(default=100_000, gt=0, description="at most this many samples per shard")
    mix_chunks: int = Field(
        default=8,
        ge=1,
        description="chunks of a source, spread across it, whose records one build task shuffles "
        "together into its shards (1: each chunk alone)",
    )
    base_dir: Path = Path(".")  # set by load_build_config: folder of the YAML file

    @model_validator(mode="after")
    def _unique_names_absolute_paths(self) -> BuildConfig:
        names = [s.name for s in self.sources]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate dataset names: {sorted(dup)}")
        for source in self.sources:
            if not Path(source.path).is_absolute():
                source.path = os.path.normpath(Path(self.base_dir).resolve() / source.path)
        return self


def load_build_config(path: str | Path) -> BuildConfig:
    """Read and validate SOURCES.yaml; errors name the file and the offending field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise SourceError(str(path), f"cannot read config: {' '.join(str(exc).split())}") from exc
    if not isinstance(raw, dict):
        raise SourceError(str(path), "config must be a mapping with a 'sources' list")
    return validate_config({**raw, "base_dir": path.resolve().parent}, str(path), BuildConfig)
