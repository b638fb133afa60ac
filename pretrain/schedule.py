"""Learning rate (warmup, decay, reduce-on-plateau) and early stopping, as small state that checkpoints whole."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from polyfid.pretrain.config import OptimSection


@dataclass
class PlateauState:
    best: float = math.inf
    bad_validations: int = 0  # since the last improvement (early stopping)
    bad_since_cut: int = 0  # since the last improvement or lr cut (plateau)
    factor: float = 1.0  # product of plateau cuts so far
    stop: bool = False


class LRSchedule:
    """lr(step) = lr * warmup(step) * decay(step) * plateau factor; `observe(val_loss)` after each validation."""

    def __init__(self, optim: OptimSection):
        self.optim = optim
        self.state = PlateauState()

    def lr(self, step: int) -> float:
        o = self.optim
        warm = min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps else 1.0
        span = max(o.max_steps - o.warmup_steps, 1)
        frac = min(max(step - o.warmup_steps, 0) / span, 1.0)
        if o.decay == "linear":
            decay = 1.0 - frac * (1.0 - o.min_lr_ratio)
        elif o.decay == "cosine":
            decay = o.min_lr_ratio + (1.0 - o.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))
        else:
            decay = 1.0
        return o.lr * warm * decay * self.state.factor

    def observe(self, value: float) -> None:
        """Record a validation loss: improvements reset the counters; plateaus cut lr; patience runs out -> stop."""
        s, o = self.state, self.optim
        if not math.isfinite(value):
            value = math.inf
        if value < s.best * (1 - 1e-4):
            s.best, s.bad_validations, s.bad_since_cut = value, 0, 0
            return
        s.bad_validations += 1
        s.bad_since_cut += 1
        if o.plateau_patience is not None and s.bad_since_cut >= o.plateau_patience:
            s.factor *= o.plateau_factor
            s.bad_since_cut = 0
        if o.early_stopping_patience is not None and s.bad_validations >= o.early_stopping_patience:
            s.stop = True

    def state_dict(self) -> dict:
        return asdict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = PlateauState(**state)
