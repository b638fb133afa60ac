"""Off-equilibrium geometries with GFN2-xTB, run inside a tblite worker process (`qm.Worker("xtb")`).

From each conformer: a BFGS minimum, Langevin MD frames at several temperatures, and classical harmonic
(Boltzmann) displacements along the normal modes of the finite-difference Hessian. Every structure comes back
with its GFN2-xTB energy and forces (eV, eV/A). A segment that fails (SCF divergence, a molecule flying apart)
ends that segment only; the reason is returned with what was sampled before it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms, units

from polyfid.data_shards.qm import xtb_energy_forces

#: kind codes of the `origin` array: where each structure comes from.
MINIMUM, MD, NORMAL_MODE = 0, 1, 2
KINDS = {MINIMUM: "xtb minimum", MD: "xtb Langevin MD", NORMAL_MODE: "normal-mode displacement"}
MIN_DISTANCE_A = 0.6  # a sampled structure with two atoms closer than this is rejected


def _atoms(numbers: np.ndarray, positions: np.ndarray, charge: int, multiplicity: int) -> Atoms:
    from tblite.ase import TBLite

    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.calc = TBLite(method="GFN2-xTB", charge=charge, multiplicity=multiplicity, verbosity=0)
    return atoms


def relax(numbers: np.ndarray, positions: np.ndarray, charge: int, multiplicity: int) -> np.ndarray:
    """The GFN2-xTB BFGS minimum (fmax 0.01 eV/A, at most 300 steps) from `positions`."""
    from ase.optimize import BFGS

    atoms = _atoms(numbers, positions, charge, multiplicity)
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=300)
    return atoms.positions.copy()


def md_frames(
    numbers: np.ndarray,
    start: np.ndarray,
    charge: int,
    multiplicity: int,
    md: dict[str, Any],
    temperature: float,
    seed: int,
) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """Langevin MD at `temperature` from `start`: md["frames"] (positions, energy, forces) every md["stride"] steps
    after equilibration; the labels are the MD's own GFN2-xTB results, not recomputed."""
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta

    atoms = _atoms(numbers, start, charge, multiplicity)
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    with np.errstate(divide="ignore", invalid="ignore"):  # a linear molecule has a zero moment of inertia
        ZeroRotation(atoms)
    atoms.set_velocities(np.nan_to_num(atoms.get_velocities()))
    atoms.set_constraint(FixCom())
    dyn = Langevin(
        atoms,
        md["timestep_fs"] * units.fs,
        temperature_K=temperature,
        friction=md["friction_per_fs"] / units.fs,
        fixcm=False,
        rng=rng,
    )
    dyn.run(md["equil_steps"])
    frames = []
    for _ in range(md["frames"]):
        dyn.run(md["stride"])
        frames.append((atoms.positions.copy(), atoms.get_potential_energy(), atoms.get_forces(apply_constraint=False)))
    return frames


def hessian(numbers: np.ndarray, positions: np.ndarray, charge: int, multiplicity: int, h: float = 0.005) -> np.ndarray:
    """The (3N, 3N) GFN2-xTB Hessian in eV/A^2 by central differences of the forces, symmetrized."""
    n3 = positions.size
    out = np.empty((n3, n3))
    for i in range(n3):
        step = np.zeros(n3)
        step[i] = h
        plus = xtb_energy_forces(numbers, positions + step.reshape(-1, 3), charge, multiplicity)[1]
        minus = xtb_energy_forces(numbers, positions - step.reshape(-1, 3), charge, multiplicity)[1]
        out[i] = -(plus - minus).ravel() / (2 * h)
    return 0.5 * (out + out.T)


def normal_mode_samples(
    hess: np.ndarray, positions: np.ndarray, temperature: float, n: int, floor: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """`n` displacements x ~ N(0, kT H^-1) on the vibrational modes (the 3N-6, or 3N-5 if linear, stiffest;
    eigenvalues floored at `floor`), rejecting any with two atoms closer than MIN_DISTANCE_A."""
    values, vectors = np.linalg.eigh(hess)
    n_atoms = len(positions)
    centred = positions - positions.mean(axis=0)
    linear = n_atoms == 2 or np.linalg.matrix_rank(centred, tol=1e-2) < 2
    n_vib = 3 * n_atoms - (5 if linear else 6)
    values, vectors = values[-n_vib:], vectors[:, -n_vib:]
    # LAPACK's sign is arbitrary: fix it against a generic vector (symmetric modes tie on any one component)
    vectors = vectors * np.sign(np.sqrt(np.arange(1.0, len(vectors) + 1)) @ vectors)
    sigma = np.sqrt(units.kB * temperature / np.maximum(values, floor))
    out: list[np.ndarray] = []
    for _ in range(20 * n):
        if len(out) == n:
            break
        x = positions + (vectors @ (sigma * rng.standard_normal(n_vib))).reshape(-1, 3)
        d = np.linalg.norm(x[:, None] - x[None], axis=-1) + np.eye(n_atoms) * 9
        if d.min() > MIN_DISTANCE_A:
            out.append(x)
    return out


def sample_geometries(
    numbers: np.ndarray,
    conformers: np.ndarray,
    charge: int,
    multiplicity: int,
    md: dict[str, Any],
    normal_modes: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    """All structures of one molecule: positions (M, N, 3), the GFN2-xTB energy (M,) and forces (M, N, 3),
    origin (M, 3) = (kind, conformer, temperature K), and `errors` (segments that failed, with the reason)."""
    rng = np.random.default_rng(seed)
    numbers = np.asarray(numbers)
    structures: list[tuple[np.ndarray, int, int, float, tuple[float, np.ndarray] | None]] = []
    errors: list[str] = []
    for c, start in enumerate(conformers):
        try:
            minimum = relax(numbers, start, charge, multiplicity)
        except Exception as exc:  # a conformer xTB cannot relax: sample around the force-field geometry
            errors.append(f"conformer {c}: relaxation failed ({type(exc).__name__}: {exc})"[:300])
            minimum = np.asarray(start)
        structures.append((minimum, MINIMUM, c, 0.0, None))
        for t in md["temperatures_k"]:
            try:
                frames = md_frames(numbers, minimum, charge, multiplicity, md, t, int(rng.integers(2**31)))
            except Exception as exc:
                errors.append(f"conformer {c}: MD at {t:.0f} K failed ({type(exc).__name__}: {exc})"[:300])
                continue
            structures += [(x, MD, c, t, (e, f)) for x, e, f in frames]
        if normal_modes["samples"] and len(numbers) > 1:
            try:
                hess = hessian(numbers, minimum, charge, multiplicity)
            except Exception as exc:
                errors.append(f"conformer {c}: Hessian failed ({type(exc).__name__}: {exc})"[:300])
                continue
            for t in normal_modes["temperatures_k"]:
                xs = normal_mode_samples(
                    hess, minimum, t, normal_modes["samples"], normal_modes["stiffness_floor_ev_a2"], rng
                )
                structures += [(x, NORMAL_MODE, c, t, None) for x in xs]
    positions, energy, forces, origin = [], [], [], []
    for x, kind, c, t, labels in structures:
        try:
            e, f = labels or xtb_energy_forces(numbers, x, charge, multiplicity)
        except Exception as exc:
            errors.append(f"{KINDS[kind]} (conformer {c}, {t:.0f} K): GFN2-xTB failed ({exc})"[:300])
            continue
        if not (np.isfinite(e) and np.isfinite(f).all()):
            errors.append(f"{KINDS[kind]} (conformer {c}, {t:.0f} K): non-finite GFN2-xTB result")
            continue
        positions.append(x)
        energy.append(e)
        forces.append(f)
        origin.append((kind, c, t))
    n = len(numbers)
    return {
        "positions": np.asarray(positions, np.float64).reshape(-1, n, 3),
        "energy": np.asarray(energy, np.float64),
        "forces": np.asarray(forces, np.float64).reshape(-1, n, 3),
        "origin": np.asarray(origin, np.float64).reshape(-1, 3),
        "errors": errors,
    }
