"""The units of corpus work, run as Ray tasks: sample one molecule's geometries, build one held-out scan, label
one chunk of structures at one level. Each calculation runs in a `qm.Worker` child with a timeout, so a hung or
crashing calculation costs that calculation only and comes back as a reason, never as a lost task."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from polyfid.data_shards.corpus.config import CorpusConfig, ScanSettings
from polyfid.data_shards.corpus.molecules import Molecule, bonds, conformers, match_atoms
from polyfid.data_shards.qm import LEVELS, Worker, label

SAMPLE_TASK = "polyfid.data_shards.corpus.sampling:sample_geometries"
RELAX_TASK = "polyfid.data_shards.corpus.sampling:relax"
MD_SECONDS_PER_ATOM_STEP = 2e-3  # generous: the sampling timeout scales with the work it does


def sample_task(molecule: Molecule, config: CorpusConfig) -> dict[str, Any]:
    """All sampled structures of `molecule` with their GFN2-xTB labels (see sampling.sample_geometries)."""
    t0 = time.perf_counter()
    seed = config.seed * 100_003 + molecule.index * 2 + (molecule.role == "heldout")
    try:
        starts = conformers(molecule, config.conformers, seed)
    except Exception as exc:
        return {"error": f"conformers: {type(exc).__name__}: {exc}"[:300]}
    md, nm = config.md, config.normal_modes
    steps = len(starts) * len(md.temperatures_k) * (md.equil_steps + md.frames * md.stride)
    steps += len(starts) * (300 + 6 * len(molecule.numbers) + len(nm.temperatures_k) * nm.samples)
    timeout = config.timeout_s + MD_SECONDS_PER_ATOM_STEP * steps * len(molecule.numbers)
    args = (np.array(molecule.numbers), starts, molecule.charge, molecule.multiplicity)
    with Worker("xtb") as worker:
        ok, value, _ = worker.call(SAMPLE_TASK, (*args, md.model_dump(), nm.model_dump(), seed), timeout)
    if not ok:
        return {"error": f"sampling: {value}"}
    return {**value, "wall_s": time.perf_counter() - t0}


def scan_task(molecule: Molecule, scan: ScanSettings, config: CorpusConfig) -> dict[str, Any]:
    """A rigid scan from the GFN2-xTB minimum of the first conformer: positions (P, N, 3) and the coordinate
    (degrees, or Angstrom for a bond), the moving side being the graph fragment beyond the scanned bond."""
    from ase import Atoms

    try:
        start = conformers(molecule, 1, config.seed)[0]
        atoms_idx = match_atoms(molecule, scan.smarts)
    except Exception as exc:
        return {"error": f"scan setup: {type(exc).__name__}: {exc}"[:300]}
    with Worker("xtb") as worker:
        args = (np.array(molecule.numbers), start, molecule.charge, molecule.multiplicity)
        ok, value, _ = worker.call(RELAX_TASK, args, config.timeout_s)
    if not ok:
        return {"error": f"scan relaxation: {value}"}
    atoms = Atoms(numbers=molecule.numbers, positions=value)
    if scan.kind == "dihedral":
        a, b, c, d = atoms_idx[:4]
        mask = _fragment(len(atoms), bonds(molecule), c, b)
        values = np.arange(scan.points) * 360.0 / scan.points + atoms.get_dihedral(a, b, c, d)
        frames = []
        for v in values:
            x = atoms.copy()
            x.set_dihedral(a, b, c, d, float(v), mask=mask)
            frames.append(x.positions.copy())
    else:
        a, b = atoms_idx[:2]
        mask = _fragment(len(atoms), bonds(molecule), b, a)
        values = atoms.get_distance(a, b) + np.linspace(*scan.bond_range_a, scan.points)
        frames = []
        for v in values:
            x = atoms.copy()
            x.set_distance(a, b, float(v), fix=0, mask=mask)
            frames.append(x.positions.copy())
    return {
        "positions": np.array(frames),
        "coordinate": values % 360 if scan.kind == "dihedral" else values,
        "scan_atoms": np.array(atoms_idx),
    }


def _fragment(n: int, edges: list[tuple[int, int]], start: int, blocked: int) -> list[bool]:
    """Atoms reachable from `start` without crossing `blocked`: the side of the bond that moves."""
    nbrs: dict[int, list[int]] = {i: [] for i in range(n)}
    for i, j in edges:
        nbrs[i].append(j)
        nbrs[j].append(i)
    seen, todo = {start}, [start]
    while todo:
        for j in nbrs[todo.pop()]:
            if j != blocked and j not in seen:
                seen.add(j)
                todo.append(j)
    return [i in seen for i in range(n)]


def label_task(level: str, molecule: Molecule, positions: np.ndarray, forces: bool, timeout: float) -> dict[str, Any]:
    """One level on a chunk of one molecule's structures: energy, forces (when asked), ok, wall time, error."""
    m, n = positions.shape[:2]
    out: dict[str, Any] = {
        "energy": np.full(m, np.nan),
        "ok": np.zeros(m, bool),
        "wall_time": np.zeros(m),
        "error": [""] * m,
    }
    if forces:
        out["forces"] = np.full((m, n, 3), np.nan)
    numbers = np.array(molecule.numbers)
    with Worker(LEVELS[level].backend) as worker:
        for i, x in enumerate(positions):
            lab = label(worker, level, numbers, x, timeout, molecule.charge, molecule.multiplicity, forces)
            out["energy"][i], out["ok"][i], out["wall_time"][i], out["error"][i] = (
                lab.energy,
                lab.ok,
                lab.wall,
                lab.error,
            )
            if forces and lab.forces is not None:
                out["forces"][i] = lab.forces
    return out
