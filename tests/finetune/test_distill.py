"""Distilled forces: a Delta-learning teacher (MP2 - xTB on the demo's ethanol) labels every target train geometry,
and a standalone student fits those labels beside the true energies, which the teacher never replaces (the target's
own MP2 forces, which only score, are never fitted)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polyfid.data_shards.record import LevelLabels, Record
from polyfid.finetune.distill import teacher_labels, with_distilled
from polyfid.finetune.run import run_finetune
from polyfid.finetune.train import load_target
from polyfid.models.package import load_package
from tests.finetune.test_finetune import LEVEL, _config

NO_TRACKING = {"register_model": False, "system_metrics": False}


def _record(key: str, labels: dict[str, LevelLabels]) -> Record:
    return Record(key, "d", np.array([1, 1]), np.zeros((2, 3)), labels)


def test_true_energies_are_kept_forces_are_the_teachers_and_new_structures_join():
    forces = np.ones((2, 3), np.float32)
    fit = [_record("a", {LEVEL: LevelLabels(-1.0, forces)}), _record("b", {"xtb": LevelLabels(-5.0, forces)})]
    taught = [LevelLabels(-2.0, 2 * forces), LevelLabels(-3.0, 3 * forces), LevelLabels(-4.0, 4 * forces)]
    out = {r.id: r for r in with_distilled(fit, [_record(k, {}) for k in "abc"], taught, LEVEL)}
    assert out["a"].labels[LEVEL].energy == -1.0 and np.array_equal(out["a"].labels[LEVEL].forces, 2 * forces)
    assert out["b"].labels["xtb"].energy == -5.0 and out["b"].labels[LEVEL].energy == -3.0
    assert set(out["c"].labels) == {LEVEL} and out["c"].labels[LEVEL].energy == -4.0


@pytest.fixture(scope="module")
def teacher(source, demo_shards, tmp_path_factory):
    """A Delta-learning fine-tune on xTB: its MP2 predictions need the shards' xTB labels."""
    tmp = tmp_path_factory.mktemp("teacher")
    cfg = _config(tmp, source, demo_shards, max_epochs=2, baseline_level="gfn2-xtb", tracking=NO_TRACKING)
    return run_finetune(cfg)["package"]


def test_a_delta_learning_teacher_labels_every_train_geometry_with_its_baseline_added(
    source,
    demo_shards,
    teacher,
    tmp_path,
):
    cfg = _config(tmp_path, source, demo_shards, init="scratch", forces_weight=1.0, max_epochs=2,
                  distill={"teacher": str(teacher)}, tracking=NO_TRACKING)  # fmt: skip
    data = load_target(cfg)
    plain = load_target(_config(tmp_path, source, demo_shards))
    assert len(data.train) == 40 and len(data.fit) > 2 * len(data.train)  # every ethanol train frame, not only 40
    assert all(r.labels[LEVEL].forces is not None for r in data.fit)
    own = {r.id: r.labels[LEVEL].energy for r in plain.train}
    assert all(r.labels[LEVEL].energy == own[r.id] for r in data.fit if r.id in own)  # true energies kept
    labelled = teacher_labels(load_package(teacher).model, data.plan, plain.train, LEVEL, 180)
    fitted = {r.id: r.labels[LEVEL].forces for r in data.fit}
    assert all(np.array_equal(fitted[r.id], t.forces) for r, t in zip(plain.train, labelled, strict=True))
    every = cfg.model_copy(update={"target": cfg.target.model_copy(update={"n_train": None}), "distill": None})
    pool = {r.id: r for r in load_target(every).train}  # every train frame with an MP2 energy
    new = next(r for r in data.fit if r.id not in own and r.id in pool)
    raw = pool[new.id]
    head = load_package(teacher).model
    with torch.no_grad():
        out = head(data.plan.collate([raw]), [LEVEL], compute_forces=True)
    (label,) = teacher_labels(head, data.plan, [raw], LEVEL, 180)
    x = raw.labels["gfn2-xtb"]
    assert label.energy == pytest.approx(float(out.energy[0, 0]) + x.energy, rel=1e-9)
    assert np.allclose(label.forces, out.forces[:, 0].numpy() + x.forces, atol=1e-5)
    assert (
        new.labels[LEVEL].energy == pytest.approx(label.energy) and new.labels[LEVEL].energy != raw.labels[LEVEL].energy
    )

    result = run_finetune(cfg)
    assert result["n_fit"] == len(data.fit)
    assert result["fitted_on"] == f"40 {LEVEL} E + teacher E+F (all target train geometries)"
    student = load_package(result["package"])
    assert not student.metadata.get("head_baselines")  # standalone: no xTB at inference


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"forces_weight": 0.0}, "forces_weight > 0"),
        ({"forces_weight": 1.0, "baseline_level": "gfn2-xtb"}, "no baseline_level"),
    ],
)
def test_distill_needs_forces_and_no_baseline(source, demo_shards, tmp_path, extra, match):
    with pytest.raises(ValueError, match=match):
        _config(tmp_path, source, demo_shards, distill={"teacher": "t.pt"}, **extra)


def test_a_teacher_without_the_target_head_is_refused(source, demo_shards, tmp_path):
    cfg = _config(tmp_path, source, demo_shards, forces_weight=1.0, distill={"teacher": str(source)})
    with pytest.raises(ValueError, match=f"no '{LEVEL}' head"):
        load_target(cfg)
