"""Model speed: polyfid HIP-NN / HIP-NN-TS / HIP-HOP-NN next to hippynn's at the same hyperparameters, same batches.

    .venv/bin/pip install -r benchmarks/requirements.txt   # hippynn 0.1.3 (+ numba kernels): benchmark-only
    .venv/bin/python benchmarks/bench_models.py [--batch 64 256] [--steps 20]

Data: the demo corpus' 400 ethanol geometries (9 atoms) with GFN2-xTB energies and forces. Training step = forward
+ forces (autograd) + energy/force MSE + backward (double backward) + Adam step; inference = energy + forces.
Hyperparameters (both libraries): 64 features, 20 sensitivities, 2 interaction layers, 3 atom layers, soft min
0.75 A, soft max and cutoff 5.5 A, float32. Prints structures/s and polyfid / hippynn ratios measured in this run.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import torch

from data_shards.record import LevelLabels, Record
from data_shards.stream import collate
from pretrain.models import Hipnn, HipnnConfig, build_model

TARGET = Path(__file__).resolve().parents[1] / "data_shards" / "demo_corpus" / "target_ethanol.h5"
LEVEL = "gfn2-xtb"
ELEMENTS = [1, 6, 8]
SIZES = dict(n_features=64, n_sensitivities=20, n_interactions=2, n_atom_layers=3)
SOFT_MIN, CUTOFF = 0.75, 5.5


def load_ethanol() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with h5py.File(TARGET) as f:
        (group,) = f.values()
        return (group["atomic_numbers"][()], group["positions"][()], group["gfn2_xtb/energy"][()],
                group["gfn2_xtb/forces"][()])  # fmt: skip


def polyfid_step(model: torch.nn.Module, batches: list, train: bool) -> Callable[[int], None]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train(train)

    def step(k: int) -> None:
        batch = batches[k % len(batches)]
        if not train:
            with torch.no_grad():
                model(batch, [LEVEL])
            return
        out = model(batch, [LEVEL])
        loss = ((out.energy[:, 0] - batch.energy[:, 0]) ** 2).mean() + (
            (out.forces[:, 0] - batch.forces[:, 0]) ** 2
        ).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def hippynn_step(kind: str, batches: list, train: bool, extra: dict) -> Callable[[int], None]:
    from hippynn.graphs import GraphModule, inputs, networks, physics, targets

    species = inputs.SpeciesNode(db_name="Z")
    positions = inputs.PositionsNode(db_name="R")
    params = dict(possible_species=[0, *ELEMENTS], n_features=SIZES["n_features"],
                  n_sensitivities=SIZES["n_sensitivities"], dist_soft_min=SOFT_MIN, dist_soft_max=CUTOFF,
                  dist_hard_max=CUTOFF, n_interaction_layers=SIZES["n_interactions"],
                  n_atom_layers=SIZES["n_atom_layers"], **extra)  # fmt: skip
    network = getattr(networks, kind)("net", (species, positions), module_kwargs=params)
    energy = targets.HEnergyNode("energy", network).mol_energy
    forces = physics.GradientNode("forces", (energy, positions), sign=-1)
    model = GraphModule([species, positions], [energy, forces])
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train(train)

    def step(k: int) -> None:
        z, r, e, f = batches[k % len(batches)]
        r = r.clone().requires_grad_(True)
        if not train:
            model(z, r)
            return
        e_pred, f_pred = model(z, r)
        loss = ((e_pred[:, 0] - e) ** 2).mean() + ((f_pred - f) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def rate(step: Callable[[int], None], n_structures: int, steps: int) -> float:
    for k in range(3):  # warm-up (numba compilation, allocator)
        step(k)
    t0 = time.perf_counter()
    for k in range(steps):
        step(k)
    return n_structures * steps / (time.perf_counter() - t0)


def polyfid_model(kind: str) -> torch.nn.Module:
    if kind == "hipnn":
        backbone = Hipnn(HipnnConfig(elements=ELEMENTS, cutoff=CUTOFF, r_soft_min=SOFT_MIN, r_soft_max=CUTOFF, **SIZES))
    else:
        raise ValueError(kind)
    return build_model(backbone, {LEVEL: None})


# (label, polyfid kind, hippynn node class, hippynn extra kwargs)
ARCHITECTURES = [("HIP-NN", "hipnn", "Hipnn", {})]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    z, r, e, f = load_ethanol()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; ethanol, 9 atoms")
    print(f"{'model':<12} {'batch':>5} {'mode':<9} {'polyfid':>10} {'hippynn':>10} {'ratio':>6}  (structures/s)")
    for bs in args.batch:
        idx = [np.arange(k, k + bs) % len(r) for k in range(0, 4 * bs, bs)]
        records = [Record(f"e:{i}", "d", z, r[i], {LEVEL: LevelLabels(float(e[i]), f[i])}) for i in range(len(r))]
        ours = [collate([records[i] for i in ix], [LEVEL], ["d"]) for ix in idx]
        theirs = [(torch.as_tensor(np.tile(z, (bs, 1))), torch.as_tensor(r[ix], dtype=torch.float32),
                   torch.as_tensor(e[ix], dtype=torch.float32), torch.as_tensor(f[ix], dtype=torch.float32))
                  for ix in idx]  # fmt: skip
        for label, kind, hkind, extra in ARCHITECTURES:
            for train in (True, False):
                ours_rate = rate(polyfid_step(polyfid_model(kind), ours, train), bs, args.steps)
                theirs_rate = rate(hippynn_step(hkind, theirs, train, extra), bs, args.steps)
                mode = "train" if train else "inference"
                print(
                    f"{label:<12} {bs:>5} {mode:<9} {ours_rate:>10,.0f} {theirs_rate:>10,.0f} "
                    f"{ours_rate / theirs_rate:>6.2f}"
                )


if __name__ == "__main__":
    main()
