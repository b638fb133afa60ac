"""Trivial baselines of a fine-tune, scored on its test split: what a user gets without training anything. A model
worth having beats them; every table of fine-tunes shows them beside it (`polyfid report`).

- E0 only: per-element energies fitted by least squares on the train energies (for one molecule: the mean).
- Each other level of the target's shards used as-is: its forces as the target's forces, and its energies plus
  per-element offsets fitted on the train structures that have both (a constant shift for one molecule).

With Delta-learning (`baseline_level`) the target labels are target minus baseline, so a level's labels enter
minus the baseline's: the baseline used as-is predicts a zero difference.
"""

from __future__ import annotations

import numpy as np
import torch

from polyfid.data_shards.stream import Batch
from polyfid.finetune.linear import element_counts, fit_counts
from polyfid.finetune.train import TargetData


def _errors(diff: np.ndarray, kind: str) -> dict[str, float]:
    return {f"{kind}_mae": float(np.abs(diff).mean()), f"{kind}_rmse": float(np.sqrt((diff**2).mean()))}


def _level_as_is(train: Batch, test: Batch, h: int, j: int, b: int | None, elements: list[int]) -> dict[str, float]:
    """Level j's labels (minus baseline b's) as level h's, on the test structures: energies shifted by offsets
    fitted on train (when every test structure has them), forces where every test structure with h's has them."""

    def labels(batch: Batch, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        value, mask = getattr(batch, kind), getattr(batch, f"{kind}_mask")
        if b is None:
            return value[:, j], mask[:, j]
        return value[:, j] - value[:, b], mask[:, j] & mask[:, b]

    out: dict[str, float] = {}
    (e_train, ok_train), (e_test, ok_test) = labels(train, "energy"), labels(test, "energy")
    both = (train.energy_mask[:, h] & ok_train).numpy()
    if both.any() and bool(ok_test.all()):
        diff = (train.energy[:, h] - e_train).numpy()[both]
        offset = fit_counts(element_counts(train, elements)[both], diff, elements)
        pred = e_test.numpy() + offset.predict(element_counts(test, elements), None)
        out |= _errors(pred - test.energy[:, h].numpy(), "energy")
    forces, ok = labels(test, "forces")
    with_h = test.forces_mask[:, h]
    if with_h.any() and bool(ok[with_h].all()):
        atoms = with_h[test.batch]
        out |= _errors((forces[atoms] - test.forces[atoms, h]).double().numpy().ravel(), "forces")
    return out


def trivial_baselines(data: TargetData, baseline: str | None = None) -> dict[str, dict[str, float]]:
    """{name: {energy_mae, energy_rmse[, forces_mae, forces_rmse]}} in eV and eV/A on the test split; `baseline`:
    the level the target labels are relative to (Delta-learning)."""
    train, test, h = data.plan.collate(data.train), data.plan.collate(data.test), data.level_index
    b = None if baseline is None else data.plan.level_names.index(baseline)
    elements = sorted(set(train.numbers.tolist()) | set(test.numbers.tolist()))
    out = {}
    if b is None:  # with a baseline, E0 only on the difference is the baseline used as-is (scored below)
        e0 = fit_counts(element_counts(train, elements), train.energy[:, h].numpy(), elements)
        out["E0 only"] = _errors(e0.predict(element_counts(test, elements), None) - test.energy[:, h].numpy(), "energy")
    for j, level in enumerate(data.plan.level_names):
        if j != h and (found := _level_as_is(train, test, h, j, b, elements)):
            out[f"{level} as-is"] = found
    return out
