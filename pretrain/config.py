"""`PretrainConfig`: everything `polyfid pretrain` needs, as validated data (YAML + `--set key=value` overrides).

Every key has a default and a one-line meaning (`polyfid config show pretrain`). The backbone settings are a
union built from the backbone registry and the strategy kind is checked against the strategy registry, so a typo
fails at load, before Ray starts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, create_model, field_validator, model_validator

from polyfid.core.config import Section, load_yaml_config
from polyfid.core.tracking import TrackingSection
from polyfid.data_shards.record import LevelName
from polyfid.data_shards.stream.config import StreamSettings
from polyfid.models.registry import BACKBONES

DEFAULT_BACKBONE = "hipnn"


class DataSection(StreamSettings):
    """Which shards to stream and how to mix and batch them (the stream settings), plus the trained levels and
    the loader."""

    levels: list[LevelName] | None = Field(
        default=None, min_length=1, description="levels of theory trained, one head each; null: every level"
    )
    loader: Literal["webdataset", "ray_data"] = Field(default="webdataset", description="batch loader")
    num_workers: int = Field(default=0, ge=0, description="DataLoader worker processes per rank (webdataset)")
    prefetch: int = Field(default=4, ge=0, description="batches read ahead per task by a background thread")
    val_max_atoms: int | None = Field(default=None, gt=0, description="atom budget of a val batch; null: max_atoms")

    @model_validator(mode="after")
    def _loader(self) -> DataSection:
        if self.loader == "ray_data" and self.num_workers:
            raise ValueError("data.num_workers applies to the webdataset loader only")
        return self


def _model_section(kind: str) -> type[Section]:
    """The `model` section of one registered backbone: `settings` is its config with `elements` optional."""
    config_cls = BACKBONES[kind][0]
    settings = create_model(
        f"{config_cls.__name__}Settings",
        __base__=config_cls,
        elements=(list[int] | None, Field(None, description="atomic numbers; null: every element in the shards")),
    )
    section = create_model(
        f"ModelSection_{kind}",
        __base__=Section,
        __doc__=f"Model with a {kind} backbone.",
        backbone=(Literal[kind], Field(kind, description=f"backbone kind: one of {sorted(BACKBONES)}")),
        settings=(settings, Field(default_factory=settings, description="the backbone's sizes and settings")),
        normalize_heads=(bool, Field(True, description="scale each head by its level's residual per-atom std")),
        fidelity_embedding=(
            bool,
            Field(False, description="a learned embedding per level conditions the trunk (a pass per head)"),
        ),
        charge_spin=(
            bool,
            Field(False, description="total charge and multiplicity condition the trunk; off: such records refused"),
        ),
    )
    section.kind_name = kind
    return section


def _backbone_of(value: Any) -> str:
    return (value.get("backbone") if isinstance(value, dict) else getattr(value, "backbone", None)) or DEFAULT_BACKBONE


MODEL_SECTIONS = {kind: _model_section(kind) for kind in BACKBONES}
ModelSection = Annotated[
    Union[tuple(Annotated[s, Tag(k)] for k, s in MODEL_SECTIONS.items())],  # noqa: UP007 (built at run time)
    Discriminator(_backbone_of),
]


class LevelWeights(Section):
    energy: float = Field(default=1.0, ge=0, description="weight of the energy term")
    forces: float = Field(default=1.0, ge=0, description="weight of the force term")


class LossSection(Section):
    """Per head: energy RMSE + MAE (total energy, eV; or per atom), force RMSE + MAE (eV/A) where labels exist."""

    energy_weight: float = Field(default=1.0, ge=0, description="weight of every head's energy RMSE + MAE")
    forces_weight: float = Field(default=1.0, ge=0, description="weight of every head's force RMSE + MAE")
    hierarchicality_weight: float = Field(default=1e-4, ge=0, description="weight of the per-layer energy penalty")
    energy_per_atom: bool = Field(default=False, description="energy errors per atom instead of per structure")
    per_level: dict[LevelName, LevelWeights] = Field(
        default_factory=dict, description="per-level factors on the weights above (0 turns a term off)"
    )

    def weights(self, level: str) -> LevelWeights:
        w = self.per_level.get(level, LevelWeights())
        return LevelWeights(energy=w.energy * self.energy_weight, forces=w.forces * self.forces_weight)


class ReptileSection(Section):
    """Reptile: draw a task (a dataset or a level), k optimiser steps on it, theta += eps (theta_task - theta)."""

    task_kind: Literal["dataset", "level"] = Field(default="dataset", description="what one task is")
    inner_steps: int = Field(default=5, ge=1, description="optimiser steps on one task per outer step (k)")
    eps_start: float = Field(default=1.0, gt=0, le=1, description="outer step size at the first outer step")
    eps_end: float = Field(default=0.1, gt=0, le=1, description="outer step size at the last (linear in between)")
    task_ratios: dict[str, float] | None = Field(
        default=None, description="relative task weights; null: proportional to train samples"
    )
    optimizer_state: Literal["reset", "keep"] = Field(
        default="reset", description="Adam moments at the start of each inner loop"
    )


class StrategySection(Section):
    kind: str = Field(default="multifidelity", description="training strategy (pretrain/strategies/): single, ...")
    level: LevelName | None = Field(default=None, description="`single`: the one level of theory trained")
    reptile: ReptileSection = Field(default=ReptileSection(), description="Reptile settings")

    @field_validator("kind")
    @classmethod
    def _known(cls, kind: str) -> str:
        from polyfid.pretrain.strategies import STRATEGIES

        if kind not in STRATEGIES:
            raise ValueError(f"unknown strategy {kind!r}; known: {sorted(STRATEGIES)}")
        return kind


class OptimSection(Section):
    lr: float = Field(default=1e-3, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay")
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="AdamW betas")
    max_steps: int = Field(default=1000, ge=1, description="optimiser steps (Reptile: inner steps)")
    warmup_steps: int = Field(default=0, ge=0, description="linear warm-up steps")
    decay: Literal["none", "linear", "cosine"] = Field(default="none", description="decay after warm-up")
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1, description="final lr / peak lr of the decay")
    grad_clip: float | None = Field(default=10.0, gt=0, description="gradient norm clip; null: none")
    grad_accum: int = Field(default=1, ge=1, description="micro-batches per optimiser step")
    plateau_patience: int | None = Field(
        default=None, ge=1, description="validations without improvement before lr *= plateau_factor; null: never"
    )
    plateau_factor: float = Field(default=0.5, gt=0, lt=1, description="lr factor on a plateau")
    early_stopping_patience: int | None = Field(
        default=None, ge=1, description="validations without improvement before the run stops; null: never"
    )
    max_nonfinite: int = Field(default=10, ge=0, description="skipped non-finite losses before the run aborts")


class DeepSpeedSection(Section):
    zero_stage: Literal[0, 1, 2] = Field(default=1, description="ZeRO stage (3 cannot train forces: double backward)")
    precision: Literal["fp32", "bf16"] = Field(default="fp32", description="training precision")
    extra: dict[str, Any] = Field(default_factory=dict, description="merged into the generated DeepSpeed config")


class ScheduleSection(Section):
    val_every: int = Field(default=100, ge=1, description="steps between validations")
    log_every: int = Field(default=10, ge=1, description="steps between train-metric logs")
    checkpoint_every: int = Field(default=100, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(default=3, ge=1, description="checkpoints kept (the newest)")


class ScalingSection(Section):
    num_workers: int = Field(default=2, ge=1, description="Ray Train workers (data-parallel ranks)")
    use_gpu: bool = Field(default=False, description="one GPU per worker")
    cpus_per_worker: float = Field(default=1.0, gt=0, description="CPUs reserved per worker")
    address: str | None = Field(default=None, description="Ray cluster address; null: a local Ray")
    max_failures: int = Field(default=3, ge=0, description="worker-group restarts from the last checkpoint")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        default="PACK", description="Ray placement of the workers"
    )


class PretrainConfig(Section):
    run_dir: Path = Field(description="run directory: checkpoints, package, logs, MLflow store (shared by nodes)")
    seed: int = Field(default=0, ge=0, description="seed of every random choice (data, init, tasks)")
    data: DataSection = Field(description="shards, levels, mixing, batches")
    model: ModelSection = Field(default=MODEL_SECTIONS[DEFAULT_BACKBONE](), description="backbone and settings")
    strategy: StrategySection = Field(default=StrategySection(), description="single, multifidelity, reptile")
    loss: LossSection = Field(default=LossSection(), description="loss terms and weights")
    optim: OptimSection = Field(default=OptimSection(), description="optimiser and schedule")
    deepspeed: DeepSpeedSection = Field(default=DeepSpeedSection(), description="DeepSpeed engine")
    schedule: ScheduleSection = Field(default=ScheduleSection(), description="validation, logs, checkpoints")
    tracking: TrackingSection = Field(default=TrackingSection(), description="MLflow tracking and registry")
    scaling: ScalingSection = Field(default=ScalingSection(), description="Ray Train workers and resources")

    @field_validator("run_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @model_validator(mode="after")
    def _strategy_rules(self) -> PretrainConfig:
        from polyfid.pretrain.strategies import STRATEGIES

        STRATEGIES[self.strategy.kind].check_config(self)
        return self


def load_config(paths: str | Path | list[str | Path], overrides: list[str] | None = None) -> PretrainConfig:
    """A pretraining config from YAML files and overrides (see `polyfid.core.config.load_yaml_config`)."""
    return load_yaml_config(paths, overrides, PretrainConfig, ("run_dir", "data.shard_dirs"))
