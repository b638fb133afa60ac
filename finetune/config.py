"""`FinetuneConfig`: a pretrained model, a small target set at one level of theory, and how to adapt to it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from pretrain.config import TrackingSection, _Section, load_yaml_config


class TargetSection(_Section):
    shard_dirs: list[Path] = Field(min_length=1)
    level: str  # the level of theory fitted (a new head unless the model has one)
    datasets: list[str] | None = Field(default=None, min_length=1)
    n_train: int | None = Field(default=None, ge=4)  # first N of a seeded shuffle of the train split (learning curves)
    max_atoms: int = Field(default=512, gt=0)


class FinetuneConfig(_Section):
    run_dir: Path
    seed: int = Field(default=0, ge=0)
    source: Path  # model package, or a pretraining run directory
    target: TargetSection
    head_init: str | None = None  # None: a fresh head; else copy this existing head's weights
    strategy: Literal["full", "head", "freeze"] = "full"  # freeze: the first `freeze_blocks` interaction blocks
    freeze_blocks: int = Field(default=1, ge=0)
    forces_weight: float = Field(default=0.0, ge=0)  # > 0: fit the target's forces too, where it has them
    lr: float = Field(default=1e-3, gt=0)
    max_epochs: int = Field(default=300, ge=1)
    patience: int = Field(default=30, ge=1)  # epochs without a better val energy RMSE before stopping
    tracking: TrackingSection = TrackingSection(experiment="polyfid-finetune", registered_model=None)

    @field_validator("run_dir", "source")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

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
