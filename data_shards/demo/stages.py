"""The pipeline stages: xTB MD and scan geometries, the torsion scan, the DFT subset, the ethanol target."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
from ase import Atoms
from tqdm import tqdm

from polyfid.core.atomic import atomic_write_bytes
from polyfid.data_shards.demo import molecules
from polyfid.data_shards.demo.labelling import empty_level, label_into, md_frames
from polyfid.data_shards.demo.output import extxyz_frame, h5_group, write_extxyz, write_h5
from polyfid.data_shards.demo.provenance import file_attrs, provenance_md, sources_yaml
from polyfid.data_shards.demo.run import CCSDT, DFT, MP2, XTB, Run
from polyfid.data_shards.qm import LEVELS, Worker


def run_pipeline(run: Run) -> None:
    """All stages into run.out: sources.yaml, md_xtb.h5, scan_ethanol.h5, dft_subset.extxyz, target_ethanol.h5,
    PROVENANCE.md; failures are recorded, not raised."""
    run.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run.out / "sources.yaml", sources_yaml().encode())
    xtb = stage_xtb(run)
    write_md(run, xtb["md"])
    print(f"xTB stage done in {run.timings['xtb']:.0f} s", flush=True)
    need_pyscf = any(LEVELS[lv].backend == "pyscf" for lv in run.levels)
    with tqdm(total=n_calculations(run), desc="labels", file=sys.stdout, mininterval=5) as bar:
        run.bar = bar
        bar.update(run.scale.scan_points)  # xTB scan points, already done
        pw = Worker("pyscf") if need_pyscf else None
        try:
            for name, fn in (
                ("scan", lambda: stage_scan(run, pw, xtb["scan"])),
                ("dft", lambda: stage_dft(run, pw, xtb["md"])),
                ("target", lambda: stage_target(run, pw, xtb["target"])),
            ):
                t = time.perf_counter()
                fn()
                run.timings[name] = time.perf_counter() - t
                tqdm.write(f"stage {name} done in {run.timings[name]:.0f} s")
        finally:
            if pw is not None:
                pw.stop()
    atomic_write_bytes(run.out / "PROVENANCE.md", provenance_md(run).encode())


def n_calculations(run: Run) -> int:
    """Number of single-point calculations (progress-bar total)."""
    sc = run.scale
    n = sc.scan_points
    n += sc.scan_points if MP2 in run.levels else 0
    n += len(sc.pretrain) * min(sc.dft_per_mol, sc.md_frames) if DFT in run.levels else 0
    n += min(sc.n_mp2, sc.target_frames) if MP2 in run.levels else 0
    n += min(sc.n_ccsdt, sc.target_frames) if CCSDT in run.levels else 0
    return n


def stage_xtb(run: Run) -> dict[str, Any]:
    """All GFN2-xTB work (MD of every molecule, the torsion-scan geometries): one tblite worker."""
    sc = run.scale
    out: dict[str, Any] = {"md": {}, "target": None, "scan": None}
    t = time.perf_counter()
    with Worker("xtb") as xw:
        for k, name in enumerate(tqdm(sc.pretrain, desc="xTB MD", leave=False, file=sys.stdout)):
            out["md"][name] = md_frames(run, xw, name, sc.md_frames, sc.md_stride, run.seed + k)
        target = molecules.TARGET
        out["target"] = md_frames(run, xw, target, sc.target_frames, sc.target_stride, run.seed + 1000)
        out["scan"] = scan_geometries(run, xw)
    run.timings["xtb"] = time.perf_counter() - t
    return out


def scan_geometries(run: Run, xw: Worker) -> dict[str, Any]:
    """xTB-relaxed ethanol, hydroxyl H rotated rigidly about O-C over 360 degrees; xTB E+F on each."""
    atoms = molecules.get(molecules.TARGET)
    ok, value, _ = xw.call("xtb_relax", (atoms.numbers, atoms.positions), run.timeout)
    if ok:
        atoms.positions = value
    else:
        tqdm.write(f"xTB relaxation failed ({value}); scanning the G2 geometry")
    h, o, c1, c2 = molecules.hoc_c_dihedral(atoms)
    angles = np.arange(run.scale.scan_points) * 360.0 / run.scale.scan_points
    pos = []
    for ang in angles:
        a = atoms.copy()
        a.set_dihedral(h, o, c1, c2, float(ang), indices=[h])
        pos.append(a.positions.copy())
    positions = np.asarray(pos)
    xtb = empty_level(len(angles), len(atoms), True)
    label_into(run, xw, XTB, "scan", atoms.numbers, positions, xtb, range(len(angles)))
    return {
        "numbers": atoms.numbers,
        "positions": positions,
        XTB: xtb,
        "angles": angles,
        "dihedral": np.array([h, o, c1, c2]),
        "relaxed_ok": ok,
    }


def write_md(run: Run, md: dict[str, Any]) -> None:
    """Write the MD frames of the pretraining molecules with their xTB labels to md_xtb.h5."""
    groups = {name: h5_group(d["numbers"], d["positions"], {XTB: d[XTB]}) for name, d in md.items()}
    attrs = file_attrs(
        run,
        "GFN2-xTB Langevin MD frames (500 K) of the pretraining molecules (ASE G2 "
        "starting geometries), GFN2-xTB energies and forces on every frame.",
        [f"md:{n}" for n in md],
    )
    write_h5(run.out / "md_xtb.h5", groups, attrs)


def stage_scan(run: Run, pw: Worker | None, scan: dict[str, Any]) -> None:
    """MP2 E+F on the torsion scan; writes scan_ethanol.h5."""
    n = len(scan["angles"])
    levels = {XTB: scan[XTB]}
    if MP2 in run.levels and pw is not None:
        levels[MP2] = empty_level(n, len(scan["numbers"]), True)
        label_into(run, pw, MP2, "scan", scan["numbers"], scan["positions"], levels[MP2], range(n))
    extra = {"dihedral_deg": scan["angles"], "dihedral_atoms": scan["dihedral"]}
    group = h5_group(scan["numbers"], scan["positions"], levels, extra)
    attrs = file_attrs(
        run,
        "Rigid torsion scan of ethanol's H-O-C-C dihedral (hydroxyl H rotated about the "
        "O-C bond) starting from the GFN2-xTB minimum "
        f"({'relaxed' if scan['relaxed_ok'] else 'G2 geometry: relaxation failed'}); "
        "dihedral_atoms are 0-based (H, O, C, C).",
        ["scan"],
    )
    write_h5(run.out / "scan_ethanol.h5", {molecules.TARGET: group}, attrs)


def stage_dft(run: Run, pw: Worker | None, md: dict[str, Any]) -> None:
    """B3LYP/def2-SVP E+F on evenly spaced MD frames of each pretraining molecule; writes dft_subset.extxyz."""
    frames: list[Atoms] = []
    for name, d in md.items():
        m = len(d["positions"])
        if m == 0:
            continue
        idx = np.unique(np.linspace(0, m - 1, min(run.scale.dft_per_mol, m)).round().astype(int))
        dft = empty_level(m, len(d["numbers"]), True)
        if DFT in run.levels and pw is not None:
            label_into(run, pw, DFT, f"dft:{name}", d["numbers"], d["positions"], dft, idx)
        levels = {XTB: d[XTB], DFT: dft}
        for i in idx:
            info = {"molecule": name, "md_frame": int(i)}
            frames.append(extxyz_frame(d["numbers"], d["positions"], levels, int(i), info))
    write_extxyz(run.out / "dft_subset.extxyz", frames)


def stage_target(run: Run, pw: Worker | None, target: dict[str, Any]) -> None:
    """MP2 E+F and CCSD(T) E on prefixes of the ethanol MD frames; checkpointed target_ethanol.h5."""
    numbers, positions = target["numbers"], target["positions"]
    m, n = positions.shape[:2]
    levels = {XTB: target[XTB]}
    for lv in (MP2, CCSDT):
        if lv in run.levels and pw is not None:
            levels[lv] = empty_level(m, n, LEVELS[lv].forces)

    def save(complete: bool) -> None:
        attrs = file_attrs(
            run,
            "Ethanol (target, not in pretraining): GFN2-xTB Langevin MD frames at 500 K. "
            "GFN2-xTB E+F on all; MP2/cc-pVDZ E+F on a prefix (fine-tune on its energies; its "
            "forces are for held-out scoring); CCSD(T)/cc-pVDZ energies on a shorter prefix.",
            ["md:" + molecules.TARGET, "target"],
            complete,
        )
        write_h5(run.out / "target_ethanol.h5", {molecules.TARGET: h5_group(numbers, positions, levels)}, attrs)

    n_mp2, n_cc = min(run.scale.n_mp2, m), min(run.scale.n_ccsdt, m)
    for i in range(max(n_mp2, n_cc)):
        for lv, n_lv in ((MP2, n_mp2), (CCSDT, n_cc)):
            if lv in levels and i < n_lv:
                label_into(run, pw, lv, "target", numbers, positions, levels[lv], [i], respect_deadline=True)
        if (i + 1) % 25 == 0:
            save(complete=False)
    save(complete=True)
