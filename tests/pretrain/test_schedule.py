"""Learning-rate schedule, reduce-on-plateau and early stopping."""

from __future__ import annotations

import pytest

from polyfid.pretrain.config import OptimSection
from polyfid.pretrain.schedule import LRSchedule


def test_warmup_then_cosine_to_the_floor():
    s = LRSchedule(OptimSection(lr=1.0, max_steps=110, warmup_steps=10, decay="cosine", min_lr_ratio=0.1))
    assert s.lr(0) == pytest.approx(0.1) and s.lr(9) == pytest.approx(1.0)
    assert s.lr(10) == pytest.approx(1.0) and s.lr(109) == pytest.approx(0.1, abs=1e-3)
    lin = LRSchedule(OptimSection(lr=2.0, max_steps=100, decay="linear"))
    assert lin.lr(50) == pytest.approx(1.0)


def test_plateau_cuts_then_early_stop_and_state_roundtrip():
    s = LRSchedule(OptimSection(lr=1.0, plateau_patience=2, plateau_factor=0.5, early_stopping_patience=4))
    for v in (1.0, 0.5, 0.6, 0.7):
        s.observe(v)
    assert s.lr(0) == pytest.approx(0.5) and not s.state.stop
    s.observe(float("nan"))
    s.observe(0.9)
    assert s.state.stop and s.lr(0) == pytest.approx(0.25)
    t = LRSchedule(s.optim)
    t.load_state_dict(s.state_dict())
    assert t.state == s.state
