"""Trivial baselines of a fine-tune, scored on its test split: what a user gets without training anything. A model
worth having beats them; every table of fine-tunes shows them beside it (`polyfid report`).

- E0 only: per-element energies fitted by least squares on the train energies (for one molecule: the mean).
- Each other level of the target's shards used as-is: its forces as the target's forces, and its energies plus
  per-element offsets fitted on the train structures that have both (a constant shift for one molecule).
"""

from __future__ import annotations

import numpy as np

from polyfid.data_shards.stream import Batch
from polyfid.finetune.linear import element_counts, fit_counts
from polyfid.finetune.train import TargetData


def _errors(diff: np.ndarray, kind: str) -> dict[str, float]:
    return {f"{kind}_mae": float(np.abs(diff).mean()), f"{kind}_rmse": float(np.sqrt((diff**2).mean()))}


def _level_as_is(train: Batch, test: Batch, h: int, j: int, elements: list[int]) -> dict[str, float]:
    """Level j's labels as level h's, on the test structures: energies shifted by offsets fitted on train (when
    every test structure has a j energy), forces where both levels have them on every test structure that has h's."""
    out: dict[str, float] = {}
    both = (train.energy_mask[:, h] & train.energy_mask[:, j]).numpy()
    if both.any() and bool(test.energy_mask[:, j].all()):
        diff = (train.energy[:, h] - train.energy[:, j]).numpy()[both]
        offset = fit_counts(element_counts(train, elements)[both], diff, elements)
        pred = test.energy[:, j].numpy() + offset.predict(element_counts(test, elements), None)
        out |= _errors(pred - test.energy[:, h].numpy(), "energy")
    with_h = test.forces_mask[:, h]
    if with_h.any() and bool(test.forces_mask[:, j][with_h].all()):
        atoms = with_h[test.batch]
        out |= _errors((test.forces[atoms, j] - test.forces[atoms, h]).double().numpy().ravel(), "forces")
    return out


def trivial_baselines(data: TargetData) -> dict[str, dict[str, float]]:
    """{name: {energy_mae, energy_rmse[, forces_mae, forces_rmse]}} in eV and eV/A on the test split."""
    train, test, h = data.plan.collate(data.train), data.plan.collate(data.test), data.level_index
    elements = sorted(set(train.numbers.tolist()) | set(test.numbers.tolist()))
    e0 = fit_counts(element_counts(train, elements), train.energy[:, h].numpy(), elements)
    out = {"E0 only": _errors(e0.predict(element_counts(test, elements), None) - test.energy[:, h].numpy(), "energy")}
    for j, level in enumerate(data.plan.level_names):
        if j != h and (found := _level_as_is(train, test, h, j, elements)):
            out[f"{level} as-is"] = found
    return out
