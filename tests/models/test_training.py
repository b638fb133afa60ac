"""Short real training runs: each backbone learns GFN2-xTB forces of the demo MD molecules."""

from __future__ import annotations

import time

import pytest
import torch

from polyfid.data_shards.record import LevelLabels, Record
from polyfid.data_shards.reference_energies import accumulate
from polyfid.data_shards.stream import Batch
from polyfid.models import (
    HipHop,
    HipHopConfig,
    Hipnn,
    HipnnConfig,
    HipnnTS,
    HipnnTSConfig,
    build_model,
    hierarchicality,
)
from polyfid.models.testing.structures import ELEMENTS, LEVEL, LEVELS, demo_records, make_batch
from tests.corpus import ethanol_arrays


def _force_mae(model, batch, h):
    model.eval()
    with torch.no_grad():
        out = model(batch, [LEVEL])
    return float((out.forces[:, 0] - batch.forces[:, h]).abs().mean())


BACKBONES = pytest.mark.parametrize(
    ("make_backbone", "n_features", "n_steps"),
    [
        (lambda c: Hipnn(HipnnConfig(**c)), 32, 300),
        (lambda c: HipnnTS(HipnnTSConfig(**c, l_max=2)), 32, 300),
        (lambda c: HipHop(HipHopConfig(**c, n_max=4, l_max=3)), 16, 200),  # slower step (13 invariants): < 15 s
    ],
    ids=["hipnn", "hipnn-ts", "hiphop-nn"],
)


def _train(make_backbone, n_features: int, n_steps: int, train: list[Record], test: Batch) -> None:
    """Adam steps of batch 32 on real GFN2-xTB labels; the held-out force MAE must fall far below the label spread."""
    torch.manual_seed(0)
    h = LEVELS.index(LEVEL)
    config = dict(elements=ELEMENTS, n_features=n_features, n_sensitivities=16, n_interactions=2, n_atom_layers=2)
    stats = accumulate(train)[LEVEL].fit(["train"])
    model = build_model(make_backbone({**config, "cutoff": 5.0}), {LEVEL: stats})
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    label_std = float(test.forces[:, h].std())
    mae0 = _force_mae(model, test, h)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(n_steps):
        batch = make_batch([train[k] for k in torch.randperm(len(train), generator=g)[:32].tolist()])
        model.train()
        out = model(batch, [LEVEL])
        e_err = (out.energy[:, 0] - batch.energy[:, h]) / batch.n_atoms
        f_err = out.forces[:, 0] - batch.forces[:, h]
        loss = e_err.pow(2).mean() + f_err.pow(2).mean() + 1e-4 * hierarchicality(out.per_layer_energy)
        opt.zero_grad()
        loss.backward()
        opt.step()
    mae = _force_mae(model, test, h)
    wall = time.perf_counter() - t0
    print(f"{n_steps} steps in {wall:.1f} s; force MAE {mae0:.3f} -> {mae:.3f} eV/A, label std {label_std:.3f}")
    assert mae < 0.25 * label_std, (mae, label_std)


@BACKBONES
def test_learns_xtb_forces_of_the_demo_molecules(make_backbone, n_features, n_steps):
    train = list(demo_records(tuple(range(0, 300, 10))))  # 8 molecules x 30 frames
    test = make_batch(list(demo_records(tuple(range(5, 300, 30)))))  # other frames of the same MD runs
    _train(make_backbone, n_features, n_steps, train, test)


@BACKBONES
def test_learns_xtb_forces_of_ethanol_mf(make_backbone, n_features, n_steps):
    """The project's ethanol MD set (not in the demo MD): 40 geometries to train on, 10 held out."""
    data = ethanol_arrays(50)
    z, pos = data["atomic_numbers"], data["positions"]
    energy, forces, ok = (data[f"xtb_gfn2/{k}"] for k in ("energy", "forces", "ok"))
    records = [
        Record(f"ethanol_mf:{i}", "ethanol", z, pos[i], {LEVEL: LevelLabels(float(energy[i]), forces[i])})
        for i in range(len(pos))
        if ok[i]
    ]
    _train(make_backbone, n_features, n_steps, records[:40], make_batch(records[40:]))
