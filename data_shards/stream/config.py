"""`StreamConfig`: what to stream, how to mix datasets and how large batches are."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Mode = Literal["train", "eval"]


class StreamConfig(BaseModel):
    """Settings shared by the torch and Ray Data paths.

    Mixing: `ratios` (relative weight per dataset: every selected dataset of the split must be named, 0 leaves
    it out; other known dataset names are ignored, so one dict serves train and val) or `temperature` T
    (p_d ∝ n_d^(1/T) over sample counts: 1 = proportional, `inf` = uniform). Neither set means T = 1.
    `batches_per_epoch` None: selected atoms / (max_atoms * world_size), at least 1.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    shard_dirs: list[Path] = Field(min_length=1)
    split: str = "train"
    datasets: list[str] | None = Field(default=None, min_length=1)
    ratios: dict[str, float] | None = None
    temperature: float | None = Field(default=None, gt=0)
    max_atoms: int = Field(gt=0)
    max_structures: int | None = Field(default=None, gt=0)
    shuffle_buffer: int = Field(default=1000, ge=0)
    seed: int = Field(default=0, ge=0)
    batches_per_epoch: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check_mixing(self) -> StreamConfig:
        if self.ratios is not None:
            if self.temperature is not None:
                raise ValueError("give either `ratios` or `temperature`, not both")
            if any(not math.isfinite(w) or w < 0 for w in self.ratios.values()) or sum(self.ratios.values()) <= 0:
                raise ValueError(f"ratios must be finite, >= 0 and not all 0: {self.ratios}")
        return self
