"""`FinetuneConfig`: a pretrained model, a small target set at one level of theory, and how to adapt to it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pretrain.config import TrackingSection, _Section, load_yaml_config


class TargetSection(_Section):
    shard_dirs: list[Path] = Field(min_length=1)
    level: str  # the level of theory fitted (a new head unless the model has one)
    datasets: list[str] | None = Field(default=None, min_length=1)
    n_train: int | None = Field(default=None, ge=4)  # first N of a seeded shuffle of the train split (learning curves)
    max_atoms: int = Field(default=512, gt=0)


LINEAR_INIT = "linear"


class AuxiliaryLevel(_Section):
    """Multi-fidelity fine-tuning: a (usually lower) level kept in the fit beside the target, on the target's own
    geometries (`datasets` unset) or on replayed pretraining datasets. Its labels of the target level are never
    used (only the target's `n_train` subset fits the target level)."""

    level: str
    datasets: list[str] | None = Field(default=None, min_length=1)  # None: the target's datasets
    n: int | None = Field(default=None, ge=1)  # a seeded subset of their train structures; None: all
    energy_weight: float = Field(default=1.0, ge=0)
    forces_weight: float = Field(default=1.0, ge=0)


class FinetuneTracking(TrackingSection):
    """Tracking defaults of a fine-tune (a partial `tracking:` section keeps them): registered as polyfid-<level>."""

    experiment: str = "polyfid-finetune"
    registered_model: str | None = None  # None: polyfid-<target level>
    register_model: bool = True  # False: track the run, register nothing (sweeps)


class FinetuneConfig(_Section):
    run_dir: Path
    seed: int = Field(default=0, ge=0)
    # a model package, a pretraining run directory, or an MLflow registry URI (models:/name/3, models:/name@alias)
    source: str
    registry_uri: str | None = None  # MLflow store for a models:/ source (default: tracking, $MLFLOW_TRACKING_URI)
    init: Literal["pretrained", "scratch"] = "pretrained"  # scratch: the source's architecture, fresh weights
    target: TargetSection
    auxiliary: list[AuxiliaryLevel] = Field(default_factory=list)  # multi-fidelity fine-tuning
    scan: str | None = None  # a dataset of the target's shards read as a scan: smoothness and errors along it
    learning_curve: list[int] = Field(default_factory=list)  # also fit both models at these n_train: error vs N
    # None: a fresh head; "linear": the linear baseline's ridge weights (linear probe, then fine-tune); else the
    # name of an existing head to copy
    head_init: str | None = None
    strategy: Literal["full", "head", "freeze"] = "full"  # freeze: the first `freeze_blocks` interaction blocks
    freeze_blocks: int = Field(default=1, ge=0)
    forces_weight: float = Field(default=0.0, ge=0)  # > 0: fit the target's forces too, where it has them
    lr: float = Field(default=1e-3, gt=0)
    max_epochs: int = Field(default=300, ge=1)
    patience: int = Field(default=30, ge=1)  # epochs without a better val energy RMSE before stopping
    tracking: FinetuneTracking = FinetuneTracking()

    @field_validator("run_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("learning_curve")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if any(n < 4 for n in v):
            raise ValueError("learning_curve sizes must be >= 4 structures")
        return sorted(set(v))

    @model_validator(mode="after")
    def _consistent(self) -> FinetuneConfig:
        if self.init == "scratch" and (self.head_init or self.strategy != "full"):
            raise ValueError("init=scratch trains every weight from a fresh start: no head_init, strategy full")
        levels = [a.level for a in self.auxiliary]
        if self.target.level in levels or len(set(levels)) < len(levels):
            raise ValueError(f"auxiliary levels {levels} must differ from each other and from the target level")
        return self

    @property
    def registered_name(self) -> str:
        """`polyfid-<level>` with characters MLflow model names dislike replaced."""
        if self.tracking.registered_model:
            return self.tracking.registered_model
        slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in self.target.level).strip("-")
        return f"polyfid-{slug}"


def load_finetune_config(paths: list[str | Path], overrides: list[str] | None = None) -> FinetuneConfig:
    """YAML files merged in order, `--set` overrides last (see pretrain.config.load_yaml_config)."""
    return load_yaml_config(paths, overrides, FinetuneConfig, ("run_dir", "source", "target.shard_dirs"))
