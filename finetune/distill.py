"""Distilled forces for an energy-only target: a teacher (a fitted model of the target level, typically a
Delta-learning model on a cheap method, which needs that method at inference) labels many structures with energies
and forces, and a standalone student fits them beside the few true energies. On the anchor protocol this is the
best standalone method that needs no high-level forces (BENCHMARKS.md section 1)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from polyfid.core.errors import ConfigError
from polyfid.data_shards.record import LevelLabels, Record
from polyfid.data_shards.stream import StreamPlan
from polyfid.data_shards.stream.packing import pack
from polyfid.finetune.evaluate import add_baseline
from polyfid.models import PolyfidModel


def teacher_labels(
    teacher: PolyfidModel, plan: StreamPlan, records: list[Record], level: str, max_atoms: int
) -> list[LevelLabels]:
    """The teacher's `level` energy and forces of each record; a Delta-learning head's predictions have the records'
    own labels of the method it corrects added (so those records must carry them)."""
    if level not in teacher.head_names:
        raise ConfigError(f"distill.teacher has no {level!r} head (heads: {teacher.head_names})")
    teacher.eval()
    out = []
    for group in pack(records, max_atoms):
        batch = plan.collate(group)
        with torch.no_grad():
            pred = teacher(batch, [level], compute_forces=True)
        energy, forces = pred.energy[:, 0], pred.forces[:, 0]
        if level in teacher.heads.baselines:
            energy, forces = add_baseline(batch, plan, teacher.heads.baselines[level], energy, forces)
        for s in range(len(group)):
            atoms = batch.batch == s
            out.append(LevelLabels(float(energy[s]), forces[atoms].double().numpy().astype(np.float32)))
    return out


def with_distilled(fit: list[Record], distilled: list[Record], labels: list[LevelLabels], level: str) -> list[Record]:
    """`fit` plus the teacher's `level` labels on the `distilled` structures: a true energy is never replaced, but
    the forces are always the teacher's (the target is energy-only: forces it carries score, as in the demo, and
    are never fitted); a structure new to the fit joins it."""
    by_key = {(r.dataset, r.id): r for r in fit}
    for record, taught in zip(distilled, labels, strict=True):
        key = (record.dataset, record.id)
        current = by_key.get(key, replace(record, labels={}))
        own = current.labels.get(level, LevelLabels())
        merged = LevelLabels(taught.energy if own.energy is None else own.energy, taught.forces)
        by_key[key] = replace(current, labels={**current.labels, level: merged})
    return list(by_key.values())
