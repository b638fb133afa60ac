"""`FinetuneConfig`: a pretrained model, a small target set at one level of theory, and how to adapt to it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from polyfid.core.config import Section, load_yaml_config
from polyfid.core.tracking import TrackingSection
from polyfid.data_shards.record import LevelName
from polyfid.pretrain.config import ModelSection


class TargetSection(Section):
    shard_dirs: list[Path] = Field(min_length=1, description="shard folders holding the target set")
    level: LevelName = Field(description="the level of theory fitted (a new head unless the model has one)")
    datasets: list[str] | None = Field(default=None, min_length=1, description="target datasets; null: all")
    n_train: int | None = Field(
        default=None, ge=4, description="the first N of a seeded shuffle of the train split; null: all"
    )
    max_atoms: int = Field(default=512, gt=0, description="atom budget of one batch")
    subset_seed: int | None = Field(
        default=None, ge=0, description="seed of the n_train (and auxiliary n) subsets; null: the run's seed"
    )


LINEAR_INIT = "linear"


class AuxiliaryLevel(Section):
    """Multi-fidelity fine-tuning: a (usually lower) level kept in the fit beside the target, on the target's own
    geometries (`datasets` unset) or on replayed pretraining datasets. Its labels of the target level are never
    used (only the target's `n_train` subset fits the target level)."""

    level: LevelName = Field(description="the auxiliary level of theory (its own head)")
    datasets: list[str] | None = Field(
        default=None, min_length=1, description="replayed datasets; null: the target's own geometries"
    )
    n: int | None = Field(default=None, ge=1, description="a seeded subset of their train structures; null: all")
    energy_weight: float = Field(default=1.0, ge=0, description="weight of its energy term")
    forces_weight: float = Field(default=1.0, ge=0, description="weight of its force term")


class DistillSection(Section):
    """Distilled forces for an energy-only target: a teacher model labels the target level's energies and forces on
    many structures, and the model fits them beside the target's own energies (never replaced; forces the target
    carries are not fitted, the teacher's are). The usual teacher is a Delta-learning fine-tune (`baseline_level`)
    on the same target: the student then needs no baseline method at inference."""

    teacher: str = Field(
        description="a fitted model with a head at the target level: a package, a run directory, or a models:/ URI "
        "(a Delta-learning teacher's baseline labels come from the shards)"
    )
    datasets: list[str] | None = Field(
        default=None, min_length=1, description="datasets whose train structures it labels; null: the target's"
    )
    n: int | None = Field(default=None, ge=1, description="a seeded subset of those structures; null: all")


class CommitteeSection(Section):
    """A committee for uncertainty: `members` fine-tunes of the same target differing in seed (batch order, fresh
    weights) and, with `subsample` < 1, in a seeded subset of the fitted records; packaged as one committee file
    whose members' spread calculators and `polyfid predict` report."""

    members: int = Field(ge=2, description="committee size K (the run's own model is member 0)")
    subsample: float = Field(
        default=1.0, gt=0, le=1, description="fraction of the fitted records each further member sees; 1: all"
    )


class FinetuneTracking(TrackingSection):
    """Tracking defaults of a fine-tune (a partial `tracking:` section keeps them): registered as polyfid-<level>."""

    experiment: str = Field(default="polyfid-finetune", description="MLflow experiment name")
    registered_model: str | None = Field(default=None, description="registered model name; null: polyfid-<level>")


class FinetuneConfig(Section):
    run_dir: Path = Field(description="run directory: package, result.json, plots, MLflow store")
    seed: int = Field(
        default=0,
        ge=0,
        description="seed of the fresh weights and the batch order (and of the subset, unless target.subset_seed)",
    )
    source: str | None = Field(
        default=None,
        description="a model package, a run directory, or a registry URI (models:/name/3, models:/name@alias); "
        "null: train `model` from scratch on the target alone",
    )
    model: ModelSection | None = Field(
        default=None, description="with no source: the architecture trained from scratch (as pretrain's model)"
    )
    registry_uri: str | None = Field(
        default=None, description="MLflow store of a models:/ source; null: tracking.mlflow_uri, $MLFLOW_TRACKING_URI"
    )
    init: Literal["pretrained", "scratch"] = Field(
        default="pretrained", description="scratch: the source's architecture with fresh weights (the control)"
    )
    target: TargetSection = Field(description="the small target set and its level of theory")
    auxiliary: list[AuxiliaryLevel] = Field(
        default_factory=list, description="levels kept in the fit beside the target (multi-fidelity fine-tuning)"
    )
    scan: str | None = Field(default=None, description="a dataset of the target's shards scored as a scan")
    learning_curve: list[int] = Field(
        default_factory=list, description="also fit both models at these n_train and report error vs N"
    )
    head_init: LevelName | None = Field(
        default=None,
        description="target head start: null fresh, 'linear' the linear baseline's ridge weights, or a head to copy",
    )
    delta_from: LevelName | None = Field(
        default=None,
        description="a delta target head: this level's head (auxiliary or in the source) plus a correction "
        "starting at zero; the target's forces start as that level's",
    )
    baseline_level: LevelName | None = Field(
        default=None,
        description="Delta-learning: the target head fits target minus this level's labels (a method run outside "
        "the model, e.g. gfn2-xtb, labelled on every target structure); at inference its calculator is added",
    )
    distill: DistillSection | None = Field(
        default=None, description="distilled forces from a teacher model (forces_weight weighs them); null: none"
    )
    committee: CommitteeSection | None = Field(
        default=None, description="also train a committee and score its uncertainty on test; null: one model"
    )
    e0_prior: LevelName | None = Field(
        default=None,
        description="head whose E0 the target's E0 refit corrects (kept along compositions the target leaves "
        "undetermined); null: the target's own head, else the head head_init copies or delta_from names, else zero",
    )
    strategy: Literal["full", "head", "freeze"] = Field(
        default="full", description="what trains: everything, the heads, or all but the first freeze_blocks blocks"
    )
    freeze_blocks: int = Field(default=1, ge=0, description="interaction blocks frozen by strategy freeze")
    forces_weight: float = Field(default=0.0, ge=0, description="> 0: fit the target's forces too, where it has them")
    lr: float = Field(default=1e-3, gt=0, description="Adam learning rate")
    max_epochs: int = Field(default=300, ge=1, description="epochs at most (unless steps is set)")
    steps: int | None = Field(
        default=None, ge=1, description="optimiser-step budget (the last epoch is cut short); null: max_epochs"
    )
    patience: int = Field(default=30, ge=1, description="epochs without a better val energy RMSE before stopping")
    lr_decay: Literal["none", "cosine"] = Field(default="none", description="lr decay over the step budget")
    plateau_patience: int | None = Field(
        default=None, ge=1, description="epochs without a better val energy RMSE before lr *= plateau_factor"
    )
    plateau_factor: float = Field(default=0.5, gt=0, lt=1, description="lr factor on a plateau")
    hierarchicality_weight: float = Field(
        default=0.0, ge=0, description="weight of the hierarchicality penalty (dimensionless: keep it small)"
    )
    tracking: FinetuneTracking = Field(default=FinetuneTracking(), description="MLflow tracking and registry")

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
        if (self.source is None) == (self.model is None):
            raise ValueError("give either source (a pretrained model) or model (an architecture from scratch)")
        if self.model is not None and self.init != "scratch":
            raise ValueError("model (no source) trains from scratch: set init: scratch")
        if self.init == "scratch" and (self.head_init or self.strategy != "full"):
            raise ValueError("init=scratch trains every weight from a fresh start: no head_init, strategy full")
        if self.delta_from is not None and (self.head_init is not None or self.delta_from == self.target.level):
            raise ValueError("a delta head (delta_from) starts as its base plus zero: no head_init, and not itself")
        levels = [a.level for a in self.auxiliary]
        if self.baseline_level is not None and (self.baseline_level == self.target.level or self.delta_from):
            raise ValueError("baseline_level is a method outside the model: not the target level, no delta_from")
        if self.distill is not None and (self.baseline_level is not None or self.forces_weight == 0):
            raise ValueError(
                "distill trains a standalone student on the teacher's forces: set forces_weight > 0, no baseline_level"
            )
        if self.init == "scratch" and self.e0_prior is not None and self.e0_prior not in levels:
            raise ValueError(
                f"init=scratch starts with no heads: e0_prior {self.e0_prior!r} must be an auxiliary level, or null"
            )
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
    """YAML files merged in order, `--set` overrides last (see polyfid.core.config.load_yaml_config)."""
    return load_yaml_config(paths, overrides, FinetuneConfig, ("run_dir", "source", "target.shard_dirs"))
