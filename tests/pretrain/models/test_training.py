"""A short real training run: HIP-NN learns GFN2-xTB forces of the demo MD molecules."""

from __future__ import annotations

import time

import torch

from pretrain.models import Hipnn, HipnnConfig, build_model, hierarchicality
from tests.pretrain.models.structures import ELEMENTS, LEVEL, LEVELS, demo_records, level_stats, make_batch


def _force_mae(model, batch, h):
    model.eval()
    with torch.no_grad():
        out = model(batch, [LEVEL])
    return float((out.forces[:, 0] - batch.forces[:, h]).abs().mean())


def test_hipnn_learns_xtb_forces():
    """~4 s: 300 Adam steps of batch 32; the force MAE on held-out frames falls far below the label spread."""
    torch.manual_seed(0)
    h = LEVELS.index(LEVEL)
    train = list(demo_records(tuple(range(0, 300, 10))))  # 8 molecules x 30 frames
    test = make_batch(list(demo_records(tuple(range(5, 300, 30)))))  # other frames of the same MD runs
    config = HipnnConfig(
        elements=ELEMENTS, n_features=32, n_sensitivities=16, n_interactions=2, n_atom_layers=2, cutoff=5.0
    )
    model = build_model(Hipnn(config), {LEVEL: level_stats()[LEVEL]})
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    label_std = float(test.forces[:, h].std())
    mae0 = _force_mae(model, test, h)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(300):
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
    print(f"300 steps in {wall:.1f} s; force MAE {mae0:.3f} -> {mae:.3f} eV/A, label std {label_std:.3f}")
    assert mae < 0.25 * label_std, (mae, label_std)
