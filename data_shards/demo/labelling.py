"""Labelling helpers of the stages: NaN-filled level arrays, labelling structures into them, xTB MD frames."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from polyfid.data_shards.demo import molecules
from polyfid.data_shards.demo.run import MD_PARAMS, XTB, Run
from polyfid.data_shards.qm import Label, Worker, label


def empty_level(m: int, n: int, forces: bool) -> dict[str, np.ndarray]:
    """NaN-filled arrays for one level (energy, forces, ok, wall_time) over m structures of n atoms."""
    out = {"energy": np.full(m, np.nan), "ok": np.zeros(m, bool), "wall_time": np.full(m, np.nan)}
    if forces:
        out["forces"] = np.full((m, n, 3), np.nan)
    return out


def label_into(
    run: Run,
    worker: Worker,
    level: str,
    dataset: str,
    numbers: np.ndarray,
    positions: np.ndarray,
    store: dict[str, np.ndarray],
    indices: Sequence[int],
    respect_deadline: bool = False,
) -> None:
    """Label positions[indices] at `level` into `store` (see empty_level); failures stay NaN."""
    st = run.stat(dataset, level)
    for i in indices:
        if respect_deadline and time.time() > run.deadline:
            lab = Label(error="not computed: time budget of the run exhausted")
        else:
            lab = label(worker, level, numbers, positions[i], run.timeout)
        st.add(int(i), lab)
        store["energy"][i], store["ok"][i], store["wall_time"][i] = lab.energy, lab.ok, lab.wall
        if "forces" in store and lab.forces is not None:
            store["forces"][i] = lab.forces
        if run.bar is not None:
            run.bar.update(1)
            run.bar.set_postfix_str(f"{dataset} {level}", refresh=False)


def md_frames(run: Run, xw: Worker, name: str, n_frames: int, stride: int, seed: int) -> dict[str, Any]:
    """xTB Langevin MD of `name`: positions (M,N,3) and the xTB level arrays; empty (M=0) on failure."""
    atoms = molecules.get(name)
    n = len(atoms)
    args = (
        atoms.numbers,
        atoms.positions,
        n_frames,
        stride,
        MD_PARAMS["equil_steps"],
        MD_PARAMS["temperature_k"],
        MD_PARAMS["timestep_fs"],
        MD_PARAMS["friction_per_fs"],
        seed,
    )
    steps = MD_PARAMS["equil_steps"] + n_frames * stride
    ok, value, wall = xw.call("xtb_md", args, timeout=max(run.timeout, 0.05 * steps))
    st = run.stat(f"md:{name}", XTB)
    st.wall_s += wall
    if not ok:
        st.failures.append({"index": -1, "error": f"MD failed: {value}"})
        tqdm.write(f"MD of {name} failed: {value}")
        return {"numbers": atoms.numbers, "positions": np.zeros((0, n, 3)), XTB: empty_level(0, n, True)}
    st.requested += n_frames
    st.ok += n_frames
    xtb = {
        "energy": value["energy"],
        "forces": value["forces"],
        "ok": np.ones(n_frames, bool),
        "wall_time": np.full(n_frames, wall / n_frames),
    }
    return {"numbers": atoms.numbers, "positions": value["positions"], XTB: xtb}
