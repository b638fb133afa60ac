"""Model speed: polyfid HIP-NN / HIP-NN-TS / HIP-HOP-NN next to hippynn's at the same hyperparameters, same batches.

    .venv/bin/pip install -r benchmarks/requirements.txt   # hippynn 0.1.3 (+ numba kernels): benchmark-only
    .venv/bin/python benchmarks/bench_models.py [--batch 64 256] [--steps 20]
    .venv/bin/python benchmarks/bench_models.py --scaling        # polyfid only: step time and memory vs atoms

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

from polyfid.data_shards.record import LevelLabels, Record
from polyfid.data_shards.stream import collate
from polyfid.models import build_model
from polyfid.models.registry import BACKBONES

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
    config_cls, module_cls = BACKBONES[kind]
    extra = POLYFID_EXTRA[kind]
    config = config_cls(elements=ELEMENTS, cutoff=CUTOFF, r_soft_min=SOFT_MIN, r_soft_max=CUTOFF, **SIZES, **extra)
    return build_model(module_cls(config), {LEVEL: None})


def scaling(kinds: list[str], sizes: list[int]) -> None:
    """Training-step time and peak resident memory vs atoms per batch (each size in a fresh subprocess, so the
    peak is that size's own); memory is reported per 1,000 atoms above the process' baseline."""
    import subprocess
    import sys

    print(f"{'model':<8} {'atoms':>7} {'ms/step':>9} {'atoms/s':>10} {'MiB/1k atoms':>13}")
    for kind in kinds:
        for n_atoms in sizes:
            out = subprocess.run(
                [sys.executable, __file__, "--one-scaling", kind, str(n_atoms)], capture_output=True, text=True
            )
            if out.returncode:
                lines = out.stderr.strip().splitlines()
                why = lines[-1] if lines else f"killed (exit {out.returncode}: out of memory on this machine?)"
                print(f"{kind:<8} {n_atoms:>7} failed: {why}", flush=True)
                continue
            ms, mib = map(float, out.stdout.split())
            print(
                f"{kind:<8} {n_atoms:>7} {ms:>9.1f} {n_atoms / ms * 1e3:>10,.0f} {mib / n_atoms * 1e3:>13.2f}",
                flush=True,
            )


def one_scaling(kind: str, n_atoms: int) -> None:
    import resource

    z, r, e, f = load_ethanol()
    n_mol = max(1, n_atoms // len(z))
    records = [Record(f"e:{i}", "d", z, r[i % len(r)], {LEVEL: LevelLabels(float(e[i % len(r)]), f[i % len(r)])})
               for i in range(n_mol)]  # fmt: skip
    batch = collate(records, [LEVEL], ["d"])
    step = polyfid_step(polyfid_model(kind), [batch], train=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step(0)
    steps = max(2, min(20, 20000 // n_atoms))
    t0 = time.perf_counter()
    for k in range(steps):
        step(k)
    ms = (time.perf_counter() - t0) / steps * 1e3
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(ms, peak - base)


POLYFID_EXTRA = {"hipnn": {}, "hipnn_ts": {"l_max": 2}, "hiphop": {"n_max": 4, "l_max": 3, "group_norm": False}}
# (label, polyfid kind, hippynn node class, hippynn extra kwargs): same hyperparameters on both sides
ARCHITECTURES = [
    ("HIP-NN", "hipnn", "Hipnn", {}),
    ("HIP-NN-TS", "hipnn_ts", "HipnnQuad", {}),
    ("HIP-HOP-NN", "hiphop", "HipHopnn", {"n_max": 4, "l_max": 3, "group_norm": False}),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=[a[1] for a in ARCHITECTURES], help="polyfid kinds to run")
    parser.add_argument("--scaling", action="store_true", help="step time and memory vs atoms per batch")
    parser.add_argument("--atoms", type=int, nargs="+", default=[100, 1000, 10000, 100000], help="with --scaling")
    parser.add_argument("--one-scaling", nargs=2, metavar=("KIND", "ATOMS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one_scaling:
        one_scaling(args.one_scaling[0], int(args.one_scaling[1]))
        return
    if args.scaling:
        scaling(args.models, args.atoms)
        return
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
            if kind not in args.models:
                continue
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
