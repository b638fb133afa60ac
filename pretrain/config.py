"""`PretrainConfig`: everything `polyfid pretrain` needs, as validated data (YAML + `--set key=value` overrides)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from data_shards.errors import PolyfidDataError


class ConfigError(PolyfidDataError):
    """A pretraining config that cannot be used (message names the file and the offending key)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSection(_Section):
    """Which shards to stream and how to mix them (see data_shards.stream.StreamConfig)."""

    shard_dirs: list[Path] = Field(min_length=1)
    levels: list[str] | None = Field(default=None, min_length=1)  # heads to train; None: every level in the shards
    datasets: list[str] | None = Field(default=None, min_length=1)  # None: every dataset
    ratios: dict[str, float] | None = None
    temperature: float | None = Field(default=None, gt=0)
    max_atoms: int = Field(default=512, gt=0)  # atom budget of one batch (per rank)
    max_structures: int | None = Field(default=None, gt=0)
    shuffle_buffer: int = Field(default=1000, ge=0)
    batches_per_epoch: int | None = Field(default=None, gt=0)
    loader: Literal["webdataset", "ray_data"] = "webdataset"
    num_workers: int = Field(default=0, ge=0)  # DataLoader workers per rank (webdataset loader)
    prefetch: int = Field(default=4, ge=0)  # batches read ahead per task by a background thread (0: none)
    val_max_atoms: int | None = Field(default=None, gt=0)  # default: max_atoms

    @model_validator(mode="after")
    def _mixing(self) -> DataSection:
        if self.ratios is not None and self.temperature is not None:
            raise ValueError("give either data.ratios or data.temperature, not both")
        if self.loader == "ray_data" and self.num_workers:
            raise ValueError("data.num_workers applies to the webdataset loader only")
        return self


class ModelSection(_Section):
    """The backbone kind (pretrain.models.registry) and its settings; `elements` defaults to the shards' elements."""

    backbone: Literal["hipnn", "hipnn_ts", "hiphop"] = "hipnn"
    settings: dict[str, Any] = Field(default_factory=dict)
    normalize_heads: bool = True


class LevelWeights(_Section):
    energy: float = Field(default=1.0, ge=0)
    forces: float = Field(default=1.0, ge=0)


class LossSection(_Section):
    """Per head: energy RMSE + MAE (total energy, eV; or per atom), force RMSE + MAE (eV/A) where labels exist."""

    energy_weight: float = Field(default=1.0, ge=0)
    forces_weight: float = Field(default=1.0, ge=0)
    hierarchicality_weight: float = Field(default=1e-4, ge=0)
    energy_per_atom: bool = False
    per_level: dict[str, LevelWeights] = Field(default_factory=dict)  # 0 turns a level's term off

    def weights(self, level: str) -> LevelWeights:
        w = self.per_level.get(level, LevelWeights())
        return LevelWeights(energy=w.energy * self.energy_weight, forces=w.forces * self.forces_weight)


class ReptileSection(_Section):
    """Reptile: draw a task (a dataset or a level), k optimiser steps on it, theta += eps (theta_task - theta)."""

    task_kind: Literal["dataset", "level"] = "dataset"
    inner_steps: int = Field(default=5, ge=1)
    eps_start: float = Field(default=1.0, gt=0, le=1)
    eps_end: float = Field(default=0.1, gt=0, le=1)  # linear in outer steps
    task_ratios: dict[str, float] | None = None  # relative task weights; None: proportional to train samples
    optimizer_state: Literal["reset", "keep"] = "reset"  # Adam moments at the start of each inner loop


class StrategySection(_Section):
    kind: Literal["single", "multifidelity", "reptile"] = "multifidelity"
    level: str | None = None  # `single`: the one level trained
    reptile: ReptileSection = ReptileSection()

    @model_validator(mode="after")
    def _level(self) -> StrategySection:
        if self.kind == "single" and not self.level:
            raise ValueError("strategy.kind 'single' needs strategy.level (the level of theory to train)")
        if self.kind != "single" and self.level:
            raise ValueError(f"strategy.level is for kind 'single' only (kind is {self.kind!r}); use data.levels")
        return self


class OptimSection(_Section):
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    max_steps: int = Field(default=1000, ge=1)  # optimiser steps (Reptile: inner steps)
    warmup_steps: int = Field(default=0, ge=0)
    decay: Literal["none", "linear", "cosine"] = "none"
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)
    grad_clip: float | None = Field(default=10.0, gt=0)
    grad_accum: int = Field(default=1, ge=1)
    plateau_patience: int | None = Field(default=None, ge=1)  # validations without improvement -> lr *= factor
    plateau_factor: float = Field(default=0.5, gt=0, lt=1)
    early_stopping_patience: int | None = Field(default=None, ge=1)  # validations without improvement -> stop
    max_nonfinite: int = Field(default=10, ge=0)  # skipped non-finite losses before the run aborts


class DeepSpeedSection(_Section):
    zero_stage: Literal[0, 1, 2] = 1  # ZeRO-3 cannot train forces (double backward): not offered
    precision: Literal["fp32", "bf16"] = "fp32"
    extra: dict[str, Any] = Field(default_factory=dict)  # merged into the generated DeepSpeed config


class ScheduleSection(_Section):
    val_every: int = Field(default=100, ge=1)
    log_every: int = Field(default=10, ge=1)
    checkpoint_every: int = Field(default=100, ge=1)
    keep_checkpoints: int = Field(default=3, ge=1)


class TrackingSection(_Section):
    mlflow_uri: str | None = None  # None: sqlite store in <run_dir>/mlflow.db (offline, registry included)
    experiment: str = "polyfid-pretrain"
    registered_model: str | None = "polyfid-pretrained"  # None: do not register
    system_metrics: bool = True


class ScalingSection(_Section):
    num_workers: int = Field(default=2, ge=1)  # Ray Train workers (data-parallel ranks)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0)
    address: str | None = None  # Ray cluster address; None: a local Ray
    max_failures: int = Field(default=3, ge=0)  # worker-group restarts from the last checkpoint
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"


class PretrainConfig(_Section):
    run_dir: Path
    seed: int = Field(default=0, ge=0)
    data: DataSection
    model: ModelSection = ModelSection()
    strategy: StrategySection = StrategySection()
    loss: LossSection = LossSection()
    optim: OptimSection = OptimSection()
    deepspeed: DeepSpeedSection = DeepSpeedSection()
    schedule: ScheduleSection = ScheduleSection()
    tracking: TrackingSection = TrackingSection()
    scaling: ScalingSection = ScalingSection()

    @field_validator("run_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @model_validator(mode="after")
    def _reptile_boundaries(self) -> PretrainConfig:
        if self.strategy.kind == "reptile":
            k = self.strategy.reptile.inner_steps
            for name in ("val_every", "checkpoint_every"):
                if getattr(self.schedule, name) % k:
                    raise ValueError(
                        f"schedule.{name} must be a multiple of strategy.reptile.inner_steps ({k}): "
                        "validation and checkpoints happen between Reptile outer steps"
                    )
            if self.optim.max_steps % k:
                raise ValueError(f"optim.max_steps must be a multiple of strategy.reptile.inner_steps ({k})")
        return self


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=VALUE` -> (["a", "b", "c"], VALUE parsed as YAML: numbers, booleans, lists, null)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.lr=3e-4")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `raw` with each `--set` override applied (intermediate sections are created)."""
    out = yaml.safe_load(yaml.safe_dump(raw))
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
        node[path[-1]] = value
    return out


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of two config mappings (overlay wins; sections merge key by key)."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path, path_keys: tuple[str, ...]) -> dict[str, Any]:
    """One config file; the values at the dotted `path_keys` (a path or a list of paths) are made absolute against
    the file's folder."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections")
    base = path.resolve().parent
    for dotted in path_keys:
        *parents, key = dotted.split(".")
        node = raw
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        value = node.get(key)
        if isinstance(value, str):
            node[key] = _resolve_path(base, value)
        elif isinstance(value, list):
            node[key] = [_resolve_path(base, v) if isinstance(v, str) else v for v in value]
    return raw


def _resolve_path(base: Path, value: str) -> str:
    """`value` against `base`, unless it is a URI (`models:/name/3`, `s3://...`), which is kept as written."""
    return value if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:/", value) else str(base / value)


def load_yaml_config(
    paths: str | Path | list[str | Path],
    overrides: list[str] | None,
    schema: type[BaseModel],
    path_keys: tuple[str, ...],
) -> Any:
    """Read YAML configs (later files deep-merge over earlier ones: overlays), apply `--set` overrides, validate.

    Paths in a file resolve against that file's folder; in overrides, against the working directory."""
    paths = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
    raw: dict[str, Any] = {}
    for path in paths:
        raw = merge(raw, _read_yaml(path, path_keys))
    return validate_config(apply_overrides(raw, overrides or []), " + ".join(map(str, paths)), schema)


def load_config(paths: str | Path | list[str | Path], overrides: list[str] | None = None) -> PretrainConfig:
    """A pretraining config from YAML files and overrides (see `load_yaml_config`)."""
    return load_yaml_config(paths, overrides, PretrainConfig, ("run_dir", "data.shard_dirs"))


def validate_config(raw: dict[str, Any], where: str = "config", schema: type[BaseModel] | None = None) -> Any:
    """`raw` validated against `schema` (default PretrainConfig); errors list every bad key, naming `where`."""
    try:
        return (schema or PretrainConfig).model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc']) or '<top>'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{where}: invalid config:\n  " + "\n  ".join(lines)) from None


def save_resolved(cfg: PretrainConfig, path: Path) -> None:
    """The resolved config (defaults filled in) as YAML, written atomically."""
    from data_shards.atomic import atomic_write_bytes

    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    atomic_write_bytes(path, text.encode())
