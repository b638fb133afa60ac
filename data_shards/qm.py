"""Quantum-chemistry labellers (GFN1/GFN2-xTB via tblite; HF, B3LYP, MP2, CCSD(T) via PySCF) in worker processes.

Every calculation runs in a persistent child process (`Worker`) with a timeout: a hung or crashed
calculation kills and restarts the worker and comes back as a failed `Label` (NaN + reason), never
an exception. tblite and PySCF get separate workers (their OpenMP runtimes do not mix). The parent
never imports either package. Units returned: eV, eV/Angstrom (converted from Hartree, Hartree/Bohr).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import multiprocessing as mp
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import units

HARTREE_EV: float = float(units.Hartree)
BOHR_A: float = float(units.Bohr)
MAX_MEMORY_MB: int = 2000
STARTUP_TIMEOUT_S: float = 120.0  # a worker's imports (PySCF: a few seconds) must finish within this


@dataclass(frozen=True)
class Level:
    """A level of theory: its canonical name, HDF5 folder / key stem, and how it is computed."""

    name: str
    key: str
    backend: str  # "xtb" or "pyscf"
    method: str
    basis: str | None
    forces: bool
    description: str


LEVELS: dict[str, Level] = {
    lv.name: lv
    for lv in (
        Level(
            "gfn2-xtb",
            "gfn2_xtb",
            "xtb",
            "GFN2-xTB",
            None,
            True,
            "GFN2-xTB (tblite), default accuracy and electronic temperature (300 K)",
        ),
        Level(
            "gfn1-xtb",
            "gfn1_xtb",
            "xtb",
            "GFN1-xTB",
            None,
            True,
            "GFN1-xTB (tblite), default accuracy and electronic temperature (300 K)",
        ),
        Level(
            "hf/def2-svp",
            "hf_def2svp",
            "pyscf",
            "HF",
            "def2-svp",
            True,
            "HF/def2-SVP (RHF, UHF for open shells), def2-universal-jkfit density fitting (PySCF)",
        ),
        Level(
            "b3lyp/def2-svp",
            "b3lyp_def2svp",
            "pyscf",
            "B3LYP",
            "def2-svp",
            True,
            "RKS (UKS for open shells) B3LYP/def2-SVP, PySCF default grid, no dispersion, no density fitting "
            "(PySCF>=2.3 'b3lyp' = VWN-RPA variant, as in Gaussian)",
        ),
        Level(
            "mp2/cc-pvdz",
            "mp2_ccpvdz",
            "pyscf",
            "MP2",
            "cc-pvdz",
            True,
            "RHF-MP2/cc-pVDZ (UHF-MP2 for open shells), frozen cores, conventional integrals, analytic gradient "
            "(PySCF)",
        ),
        Level(
            "ccsd(t)/cc-pvdz",
            "ccsdt_ccpvdz",
            "pyscf",
            "CCSD(T)",
            "cc-pvdz",
            False,
            "RHF-CCSD(T)/cc-pVDZ (UHF-CCSD(T) for open shells), frozen cores, energy only (PySCF)",
        ),
    )
}


@dataclass
class Label:
    """Result of one calculation. energy eV, forces eV/Angstrom; on failure NaN and `error` says why."""

    energy: float = float("nan")
    forces: np.ndarray | None = None
    ok: bool = False
    error: str = ""
    wall: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def software_versions() -> dict[str, str]:
    """Installed versions of the programs involved (read from package metadata, nothing imported)."""
    out = {}
    for pkg in ("pyscf", "tblite", "ase", "numpy", "h5py"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# --------------------------------------------------------------------------- computations (in the worker)


def xtb_energy_forces(
    numbers: np.ndarray, positions: np.ndarray, charge: int = 0, multiplicity: int = 1, method: str = "GFN2-xTB"
) -> tuple[float, np.ndarray]:
    """xTB (`method`) energy (eV) and forces (eV/A) at `positions` (Angstrom), for a total charge and multiplicity."""
    from tblite.interface import Calculator

    numbers, positions = np.asarray(numbers), np.asarray(positions) / BOHR_A
    calc = Calculator(method, numbers, positions, charge=float(charge), uhf=multiplicity - 1)
    calc.set("verbosity", 0)
    res = calc.singlepoint()
    return float(res.get("energy")) * HARTREE_EV, -np.asarray(res.get("gradient")) * HARTREE_EV / BOHR_A


def xtb_md(
    numbers: np.ndarray,
    positions: np.ndarray,
    n_frames: int,
    stride: int,
    equil_steps: int,
    temperature_k: float,
    timestep_fs: float,
    friction_per_fs: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """Langevin MD with GFN2-xTB: `n_frames` frames every `stride` steps after `equil_steps`, with xTB E+F."""
    from ase import Atoms
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
    from tblite.ase import TBLite

    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_k, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    atoms.set_constraint(FixCom())
    dyn = Langevin(
        atoms,
        timestep_fs * units.fs,
        temperature_K=temperature_k,
        friction=friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
    )
    dyn.run(equil_steps)
    frames = []
    for _ in range(n_frames):
        dyn.run(stride)
        frames.append(atoms.positions.copy())
    pos = np.asarray(frames)
    ef = [xtb_energy_forces(numbers, p) for p in pos]
    return {"positions": pos, "energy": np.array([e for e, _ in ef]), "forces": np.array([f for _, f in ef])}


def xtb_relax(numbers: np.ndarray, positions: np.ndarray, fmax: float = 0.01) -> np.ndarray:
    """GFN2-xTB BFGS minimum (Angstrom) starting from `positions`."""
    from ase import Atoms
    from ase.optimize import BFGS
    from tblite.ase import TBLite

    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=500)
    return atoms.positions.copy()


def _pyscf_mol(numbers: np.ndarray, positions: np.ndarray, basis: str, charge: int, multiplicity: int) -> Any:
    from pyscf import gto

    atom = [(int(z), tuple(map(float, p))) for z, p in zip(numbers, positions, strict=True)]
    return gto.M(
        atom=atom,
        basis=basis,
        unit="Angstrom",
        charge=charge,
        spin=multiplicity - 1,
        verbose=0,
        max_memory=MAX_MEMORY_MB,
    )


def _converged_scf(mf: Any) -> Any:
    """Run the SCF; retry with second-order (Newton) SCF if DIIS does not converge; raise if still not."""
    mf.conv_tol = 1e-10
    mf.kernel()
    if not mf.converged:
        mf = mf.newton()
        mf.kernel(mf.make_rdm1())
    if not mf.converged:
        raise RuntimeError("SCF did not converge")
    return mf


def _n_frozen(numbers: np.ndarray) -> int:
    """Number of core orbitals to freeze: 1s of Li-Ne, 1s2s2p of Na-Ar (PySCF's chemical-core convention)."""
    return int(sum(1 if 2 < z <= 10 else 5 if 10 < z <= 18 else 0 for z in numbers))


def pyscf_label(
    level: str,
    numbers: np.ndarray,
    positions: np.ndarray,
    charge: int = 0,
    multiplicity: int = 1,
    forces: bool = True,
) -> tuple[float, np.ndarray | None]:
    """Energy (eV) and, where the level has them and `forces` asks, forces (eV/A) with PySCF at `level` (a LEVELS
    name). Restricted references for closed shells, unrestricted ones for open shells."""
    from pyscf import cc, dft, mp, scf

    lv = LEVELS[level]
    mol = _pyscf_mol(numbers, positions, lv.basis or "", charge, multiplicity)
    closed = multiplicity == 1
    want_grad = forces and lv.forces
    grad = None
    if lv.method == "HF":
        mf = _converged_scf((scf.RHF(mol) if closed else scf.UHF(mol)).density_fit())
        energy = mf.e_tot
        grad = mf.nuc_grad_method().kernel() if want_grad else None
    elif lv.method == "B3LYP":
        mf = dft.RKS(mol) if closed else dft.UKS(mol)
        mf.xc = "b3lyp"
        mf = _converged_scf(mf)
        energy = mf.e_tot
        grad = mf.nuc_grad_method().kernel() if want_grad else None
    elif lv.method == "MP2":
        mf = _converged_scf(scf.RHF(mol) if closed else scf.UHF(mol))
        pt = mp.MP2(mf, frozen=_n_frozen(numbers))
        pt.kernel()
        energy = pt.e_tot
        grad = pt.nuc_grad_method().kernel() if want_grad else None
    elif lv.method == "CCSD(T)":
        mf = _converged_scf(scf.RHF(mol) if closed else scf.UHF(mol))
        mycc = cc.CCSD(mf, frozen=_n_frozen(numbers))
        mycc.conv_tol = 1e-8
        mycc.kernel()
        if not mycc.converged:
            raise RuntimeError("CCSD did not converge")
        energy = mycc.e_tot + mycc.ccsd_t()
    else:
        raise ValueError(f"unknown PySCF method {lv.method!r}")
    forces = None if grad is None else -np.asarray(grad) * HARTREE_EV / BOHR_A
    return float(energy) * HARTREE_EV, forces


_TASKS = {"xtb_energy_forces": xtb_energy_forces, "xtb_md": xtb_md, "xtb_relax": xtb_relax, "pyscf_label": pyscf_label}


def _task(name: str) -> Callable[..., Any]:
    """A task by name: one of _TASKS, or `polyfid.<module>:<function>` (another generator's worker-side code)."""
    if name in _TASKS:
        return _TASKS[name]
    module, _, function = name.partition(":")
    if not module.startswith("polyfid.") or not function:
        raise ValueError(f"unknown worker task {name!r}")
    return getattr(importlib.import_module(module), function)


def _serve(conn: Any, threads: int) -> None:
    """Worker main loop: receive (task, args), reply ("ok", value) or ("err", message)."""
    if "pyscf" in os.environ.get("POLYFID_WORKER_KIND", ""):
        from pyscf import cc, dft, lib, mp, scf  # noqa: F401 (imported before "ready": calls time only their work)

        lib.num_threads(threads)
    else:
        import tblite.interface  # noqa: F401
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        task, args = msg
        try:
            conn.send(("ok", _task(task)(*args)))
        except Exception as exc:
            tb = traceback.format_exc(limit=3).strip().splitlines()[-1]
            conn.send(("err", f"{type(exc).__name__}: {exc} [{tb}]"[:500]))


# --------------------------------------------------------------------------- worker (in the parent)


class Worker:
    """A persistent child process (spawned) that runs tasks with a timeout; restarted after a failure.

    kind: "xtb" or "pyscf" (never both in one process). threads: OpenMP threads in the child.
    """

    def __init__(self, kind: str, threads: int = 1) -> None:
        self.kind = kind
        self.threads = threads
        self._proc: Any = None
        self._conn: Any = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(self.threads)
        os.environ["POLYFID_WORKER_KIND"] = self.kind
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self.threads), daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(STARTUP_TIMEOUT_S) or self._conn.recv() != ("ready", None):
            raise EOFError("the worker did not start")

    def stop(self) -> None:
        """Terminate the child (if any)."""
        if self._proc is not None:
            try:
                self._conn.send(None)
                self._proc.join(timeout=5)
            except (OSError, BrokenPipeError):
                pass
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
        self._proc = self._conn = None

    def call(self, task: str, args: tuple[Any, ...], timeout: float) -> tuple[bool, Any, float]:
        """Run `task(*args)` in the child: (ok, value-or-error-message, wall seconds)."""
        t0 = time.perf_counter()
        try:
            if self._proc is None or not self._proc.is_alive():
                self._start()
                t0 = time.perf_counter()  # wall times are the calculation's, not the worker's start-up
            self._conn.send((task, args))
            if not self._conn.poll(timeout):
                self.stop_hard()
                return False, f"timeout after {timeout:.0f} s", time.perf_counter() - t0
            status, value = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError) as exc:
            self.stop_hard()
            return False, f"worker died: {type(exc).__name__}", time.perf_counter() - t0
        return status == "ok", value, time.perf_counter() - t0

    def stop_hard(self) -> None:
        """Kill the child without waiting (after a timeout or crash)."""
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
        if self._proc is not None:
            self._proc.join()
        self._proc = self._conn = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def label(
    worker: Worker,
    level: str,
    numbers: np.ndarray,
    positions: np.ndarray,
    timeout: float,
    charge: int = 0,
    multiplicity: int = 1,
    forces: bool = True,
) -> Label:
    """One structure at one level, in `worker` (of the matching backend); failures become a NaN Label.
    forces=False skips a PySCF gradient (xTB forces cost nothing extra and always come)."""
    lv = LEVELS[level]
    if lv.backend == "xtb":
        args: tuple[Any, ...] = (numbers, positions, charge, multiplicity, lv.method)
        ok, value, wall = worker.call("xtb_energy_forces", args, timeout)
    else:
        ok, value, wall = worker.call("pyscf_label", (level, numbers, positions, charge, multiplicity, forces), timeout)
    if not ok:
        return Label(error=str(value), wall=wall)
    energy, forces = value
    if not np.isfinite(energy) or (forces is not None and not np.all(np.isfinite(forces))):
        return Label(error="non-finite result", wall=wall)
    return Label(energy=energy, forces=forces, ok=True, wall=wall)
