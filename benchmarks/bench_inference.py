"""Inference and MD speed: eager vs the exported head (`polyfid export`) vs exported + torch.compile (inductor), and
the MD couplings (ASE, LAMMPS fix external, TorchSim batched), on ethanol (9 atoms), float64.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_inference.py [--no-compile] [--device cuda]

Model: HIP-NN at the benchmark hyperparameters of bench_models.py (64 features, 20 sensitivities, 2 interaction
layers, 3 atom layers, cutoff 5.5 A) with one head and random weights (speed does not depend on the weights; say
so when quoting). Structures: the demo corpus' ethanol geometries. Every figure is printed with its ratio to the
eager baseline measured in this run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from bench_models import CUTOFF, ELEMENTS, SIZES, SOFT_MIN, load_ethanol

from polyfid.models import build_model
from polyfid.models.calculator import PolyfidCalculator
from polyfid.models.compiled import save_exported
from polyfid.models.package import save_package
from polyfid.models.registry import build_backbone

LEVEL = "gfn2-xtb"


def timed(fn: Callable[[], object], repeat: int, warmup: int = 3) -> float:
    """Seconds per call (median of 3 rounds of `repeat` calls after `warmup`)."""
    for _ in range(warmup):
        fn()
    rounds = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeat):
            fn()
        rounds.append((time.perf_counter() - t) / repeat)
    return float(np.median(rounds))


def package(folder: Path) -> Path:
    config = {
        "elements": ELEMENTS,
        **SIZES,
        "r_soft_min": SOFT_MIN,
        "r_soft_max": CUTOFF,
        "cutoff": CUTOFF,
        "dtype": "float64",
    }
    torch.manual_seed(0)
    model = build_model(build_backbone("hipnn", config), {LEVEL: None})
    return save_package(folder / "bench.pt", model, provenance={"benchmark": "random weights, speed only"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (about a minute per variant)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    numbers, positions, _, _ = load_ethanol()
    frames = [Atoms(numbers=numbers, positions=p) for p in positions[: args.batch]]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        path = package(Path(tmp))
        t = time.perf_counter()
        _, error = save_exported(path, LEVEL, "float64")
        print(f"polyfid export: {time.perf_counter() - t:.1f} s, max deviation from eager {error}")
        calcs = {"eager": PolyfidCalculator(path, LEVEL, args.device, exported=False),
                 "exported": PolyfidCalculator(path, LEVEL, args.device)}  # fmt: skip
        if not args.no_compile:
            calcs["exported+compile"] = PolyfidCalculator(path, LEVEL, args.device, compile=True)
            t = time.perf_counter()
            calcs["exported+compile"].predict(frames[:2])
            calcs["exported+compile"].predict(frames[:5])
            print(f"torch.compile (inductor, dynamic shapes), first calls: {time.perf_counter() - t:.1f} s")
        assert all((c.exported is None) == (n == "eager") for n, c in calcs.items()), "the export was not picked up"
        ref = calcs["eager"].predict(frames)
        for name, calc in calcs.items():
            got = calc.predict(frames)
            de = max(abs(a["energy"] - b["energy"]) for a, b in zip(got, ref, strict=True))
            df = max(np.abs(a["forces"] - b["forces"]).max() for a, b in zip(got, ref, strict=True))
            print(f"  {name:<17} vs eager: max |dE| {de:.1e} eV, max |dF| {df:.1e} eV/A")

        print("\none ethanol, energy + forces per call (the MD regime):")
        single = {n: timed(lambda c=c: c.predict(frames[:1]), 200) for n, c in calcs.items()}
        for n, s in single.items():
            print(f"  {n:<17} {s * 1e3:7.3f} ms/call   {single['eager'] / s:5.2f}x eager")
        print(f"\n{args.batch} ethanols per call:")
        batched = {n: timed(lambda c=c: c.predict(frames), 10) for n, c in calcs.items()}
        for n, s in batched.items():
            print(f"  {n:<17} {args.batch / s:9.0f} structures/s   {batched['eager'] / s:5.2f}x eager")

        print("\nMD, ethanol, 0.5 fs NVE steps/s:")
        md = {}
        for n, calc in calcs.items():
            atoms = frames[0].copy()
            atoms.calc = calc
            MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
            dyn = VelocityVerlet(atoms, 0.5 * units.fs)
            md[f"ASE VelocityVerlet, {n}"] = 1 / timed(lambda d=dyn: d.run(10), 5, 1) * 10
        md.update(lammps_rates(calcs, frames[0], Path(tmp)))
        md.update(torchsim_rates(path, frames, args.device))
        base = md["ASE VelocityVerlet, eager"]
        for n, r in md.items():
            print(f"  {n:<44} {r:9.0f} steps/s   {r / base:6.2f}x ASE eager")


def lammps_rates(calcs: dict[str, PolyfidCalculator], atoms: Atoms, folder: Path) -> dict[str, float]:
    """LAMMPS NVE steps/s with the fix external coupling, per calculator."""
    import ase.io

    from polyfid.models.lammps_external import LammpsCoupling, load_lammps

    lammps = load_lammps()
    atoms = atoms.copy()
    atoms.center(vacuum=6.0)
    elements = sorted(set(atoms.get_chemical_symbols()))
    ase.io.write(folder / "ethanol.data", atoms, format="lammps-data", specorder=elements, masses=True)
    out = {}
    for name, calc in calcs.items():
        lmp = lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
        lmp.commands_string(f"units metal\natom_style atomic\nboundary s s s\nread_data {folder / 'ethanol.data'}\n"
                            "pair_style zero 5.0\npair_coeff * *\ntimestep 0.0005\nfix nve all nve\n"
                            "velocity all create 300 1 mom yes rot yes\n")  # fmt: skip
        coupling = LammpsCoupling(lmp, calc, elements)
        coupling.run(10)
        out[f"LAMMPS fix external, {name}"] = 200 / timed(lambda c=coupling: c.run(200), 1, 0)
        lmp.close()
    return out


def torchsim_rates(path: Path, frames: list[Atoms], device: str) -> dict[str, float]:
    """TorchSim batched NVT Langevin: systems x steps per second, for 1 and len(frames) systems per call."""
    import torch_sim as ts

    from polyfid.models.torchsim_model import PolyfidTorchSimModel

    model = PolyfidTorchSimModel(path, LEVEL, device=device, compute_stress=False)
    out = {}
    for n in (1, len(frames)):
        run = lambda n=n: ts.integrate(system=frames[:n], model=model, integrator=ts.nvt_langevin, n_steps=20,  # noqa: E731
                                       temperature=300.0, timestep=0.0005)  # fmt: skip
        out[f"TorchSim NVT, {n} ethanol(s) per call (x{n})"] = n * 20 / timed(run, 1, 1)
    return out


if __name__ == "__main__":
    main()
