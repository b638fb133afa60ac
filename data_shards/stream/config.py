"""`StreamSettings`: what to stream and how to batch it (shared with the pretraining config's `data` section);
`StreamConfig`: those settings for one split and seed, as the stream planner takes them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Mode = Literal["train", "eval"]


class StreamSettings(BaseModel):
    """Mixing: `ratios` (relative weight per dataset: every selected dataset of the split must be named, 0 leaves
    it out; other known dataset names are ignored, so one dict serves train and val) or `temperature` T
    (p_d ∝ n_d^(1/T) over sample counts: 1 = proportional, `inf` = uniform). Neither set means T = 1.
    `batches_per_epoch` None: selected atoms / (max_atoms * world_size), at least 1.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    shard_dirs: list[Path] = Field(min_length=1, description="shard folders (polyfid shards build) to stream from")
    datasets: list[str] | None = Field(default=None, min_length=1, description="datasets streamed; null: all")
    ratios: dict[str, float] | None = Field(
        default=None, description="relative sampling weight per dataset (0 leaves one out); excludes temperature"
    )
    temperature: float | None = Field(
        default=None, gt=0, description="sampling p_d ~ n_d^(1/T) over dataset sizes (1: proportional, inf: uniform)"
    )
    max_atoms: int = Field(default=512, gt=0, description="atom budget of one batch (per rank)")
    max_structures: int | None = Field(default=None, gt=0, description="at most this many structures per batch")
    shuffle_buffer: int = Field(default=1000, ge=0, description="records in the shuffle buffer (0: no shuffling)")
    interleave: int = Field(
        default=4, ge=1, description="shards of a dataset read at once per consumer, samples drawn among them"
    )
    batches_per_epoch: int | None = Field(
        default=None, gt=0, description="train batches per rank per epoch; null: the atoms / (max_atoms x ranks)"
    )

    @model_validator(mode="after")
    def _check_mixing(self) -> StreamSettings:
        if self.ratios is not None:
            if self.temperature is not None:
                raise ValueError("give either `ratios` or `temperature`, not both")
            if any(not math.isfinite(w) or w < 0 for w in self.ratios.values()) or sum(self.ratios.values()) <= 0:
                raise ValueError(f"ratios must be finite, >= 0 and not all 0: {self.ratios}")
        return self


class StreamConfig(StreamSettings):
    """Stream settings for one split and seed: the input of `StreamPlan.from_config`."""

    split: str = Field(default="train", description="the split streamed (train, val, test)")
    seed: int = Field(default=0, ge=0, description="seed of every shuffle and mixture draw")
