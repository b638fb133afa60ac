"""Evaluation of a model head against one level of theory: energy and force errors, per-element force errors,
parity plots, and the smoothness of a potential energy scan compared with the reference."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.data import chemical_symbols

from polyfid.core.errors import ConfigError
from polyfid.core.plots import pyplot, save_figure
from polyfid.data_shards.errors import PolyfidDataError
from polyfid.data_shards.stream import Batch, StreamConfig, StreamPlan, make_dataloader
from polyfid.finetune.scan_coordinate import scan_coordinate
from polyfid.models import PolyfidModel

SPLITS = ("train", "val", "test")


@dataclass
class Predictions:
    """Per-structure energies (eV) and per-atom forces (eV/A) of the structures with a label at the level."""

    ids: list[str] = field(default_factory=list)
    n_atoms: list[int] = field(default_factory=list)
    energy_ref: list[float] = field(default_factory=list)
    energy_pred: list[float] = field(default_factory=list)
    geometries: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (numbers, positions) per energy
    numbers: list[np.ndarray] = field(default_factory=list)  # atoms of structures with force labels
    forces_ref: list[np.ndarray] = field(default_factory=list)
    forces_pred: list[np.ndarray] = field(default_factory=list)

    def add(self, batch: Batch, level_index: int, energy: torch.Tensor, forces: torch.Tensor | None) -> None:
        e_mask = batch.energy_mask[:, level_index]
        for s in torch.nonzero(e_mask).flatten().tolist():
            self.ids.append(batch.ids[s])
            self.n_atoms.append(int(batch.n_atoms[s]))
            self.energy_ref.append(float(batch.energy[s, level_index]))
            self.energy_pred.append(float(energy[s]))
            atoms = batch.batch == s
            self.geometries.append((batch.numbers[atoms].numpy(), batch.positions[atoms].double().numpy()))
        if forces is not None:
            atoms = batch.forces_mask[batch.batch, level_index]
            self.numbers.append(batch.numbers[atoms].numpy())
            self.forces_ref.append(batch.forces[atoms, level_index].double().numpy())
            self.forces_pred.append(forces[atoms].double().numpy())


@dataclass
class Evaluation:
    level: str
    n_energies: int
    n_force_atoms: int
    energy_mae: float | None  # eV
    energy_rmse: float | None
    energy_mae_per_atom: float | None  # eV/atom
    forces_mae: float | None  # eV/A, over components
    forces_rmse: float | None
    forces_mae_per_element: dict[str, float]  # element symbol -> eV/A

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """The evaluation as rounded, labelled lines (meV, meV/A) for a terminal."""
        out = [f"level {self.level}: {self.n_energies} structures, {self.n_force_atoms} atoms with forces"]
        if self.energy_mae is not None:
            out.append(f"energy MAE {1e3 * self.energy_mae:.1f} meV, RMSE {1e3 * self.energy_rmse:.1f} meV, "
                       f"MAE per atom {1e3 * self.energy_mae_per_atom:.2f} meV/atom")  # fmt: skip
        if self.forces_mae is not None:
            per = ", ".join(f"{e} {1e3 * v:.1f}" for e, v in self.forces_mae_per_element.items())
            out.append(f"forces MAE {1e3 * self.forces_mae:.1f} meV/A, RMSE {1e3 * self.forces_rmse:.1f} meV/A "
                       f"(per element: {per})")  # fmt: skip
        return out


def predict(
    model: PolyfidModel,
    shard_dirs: list[Path],
    level: str,
    splits: tuple[str, ...] = ("test",),
    datasets: list[str] | None = None,
    max_atoms: int = 1024,
) -> Predictions:
    """Run head `level` over every structure of the splits (eval mode, one process); with several splits, a split
    without structures is skipped (a scan spread over train/val/test by the hash split, say)."""
    out = Predictions()
    model.eval()
    for split in splits:
        try:
            plan = StreamPlan.from_config(
                StreamConfig(shard_dirs=shard_dirs, split=split, datasets=datasets, max_atoms=max_atoms)
            )
        except PolyfidDataError:
            if len(splits) == 1:
                raise
            continue
        if level not in plan.level_names:
            raise PolyfidDataError(f"level {level!r} is not in {shard_dirs} (levels: {plan.level_names})")
        level_index = plan.level_names.index(level)
        for batch in make_dataloader(plan, "eval"):
            has_forces = bool(batch.forces_mask[:, level_index].any())
            with torch.no_grad():
                pred = model(batch, [level], compute_forces=has_forces)
            energy, forces = pred.energy[:, 0], pred.forces[:, 0] if has_forces else None
            if level in model.heads.baselines:
                energy, forces = add_baseline(batch, plan, model.heads.baselines[level], energy, forces)
            out.add(batch, level_index, energy, forces)
    return out


def add_baseline(
    batch: Batch, plan: StreamPlan, method: str, energy: torch.Tensor, forces: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A Delta-learning head's predictions plus the shards' labels of the method it corrects."""
    if method not in plan.level_names:
        raise PolyfidDataError(
            f"the head corrects {method!r}, whose labels these shards lack (levels: {plan.level_names})"
        )
    b = plan.level_names.index(method)
    missing = ~batch.energy_mask[:, b] | (~batch.forces_mask[:, b] if forces is not None else False)
    if bool(missing.any()):
        raise PolyfidDataError(f"{batch.ids[int(missing.nonzero()[0])]}: no {method} labels to add to the head's")
    energy = energy + batch.energy[:, b].to(energy.dtype)
    return energy, None if forces is None else forces + batch.forces[:, b].to(forces.dtype)


def score(pred: Predictions, level: str) -> Evaluation:
    """Errors of the predictions (None where the data has no such label)."""
    de = np.array(pred.energy_pred) - np.array(pred.energy_ref)
    n_atoms = np.array(pred.n_atoms, dtype=float)
    per_element: dict[str, float] = {}
    f_mae = f_rmse = None
    n_force_atoms = 0
    if pred.forces_ref:
        df = np.concatenate(pred.forces_pred) - np.concatenate(pred.forces_ref)
        z = np.concatenate(pred.numbers)
        n_force_atoms = len(z)
        f_mae, f_rmse = float(np.abs(df).mean()), float(np.sqrt((df**2).mean()))
        per_element = {chemical_symbols[int(e)]: float(np.abs(df[z == e]).mean()) for e in np.unique(z)}
    return Evaluation(
        level=level,
        n_energies=len(de),
        n_force_atoms=n_force_atoms,
        energy_mae=float(np.abs(de).mean()) if len(de) else None,
        energy_rmse=float(np.sqrt((de**2).mean())) if len(de) else None,
        energy_mae_per_atom=float(np.abs(de / n_atoms).mean()) if len(de) else None,
        forces_mae=f_mae,
        forces_rmse=f_rmse,
        forces_mae_per_element=per_element,
    )


def record_index(record_id: str) -> int:
    """The index part of a record id `<file>:<key>:<index>` (the order of a scan)."""
    return int(record_id.rsplit(":", 1)[1])


def scan_order(pred: Predictions) -> list[int]:
    """Positions of the predictions sorted along the scan: by source file and key, then record index."""
    return sorted(range(len(pred.ids)), key=lambda k: (pred.ids[k].rsplit(":", 1)[0], record_index(pred.ids[k])))


def scan_roughness(pred: Predictions) -> dict[str, float]:
    """Smoothness of a scan: RMS of the second difference of the energies along the scan (records in id order),
    for the model and the reference; their ratio is 1 for a PES as smooth as the reference, larger when rougher."""
    order = scan_order(pred)
    e_pred = np.array(pred.energy_pred)[order]
    e_ref = np.array(pred.energy_ref)[order]
    if len(e_ref) < 3:
        raise ConfigError(f"scan dataset: needs at least 3 points with energies, got {len(e_ref)}")
    r_pred = float(np.sqrt((np.diff(e_pred, 2) ** 2).mean()))
    r_ref = float(np.sqrt((np.diff(e_ref, 2) ** 2).mean()))
    return {"roughness_model": r_pred, "roughness_reference": r_ref, "roughness_ratio": r_pred / max(r_ref, 1e-12)}


def parity_plot(pred: Predictions, ev: Evaluation, path: Path, title: str = "") -> Path:
    """Energy (relative to the reference mean) and force-component parity plots as one PNG, titled with the run
    (`title`), the level, N and the errors."""
    plt = pyplot()
    panels = 2 if pred.forces_ref else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.5), squeeze=False)
    e_ref, e_pred = np.array(pred.energy_ref), np.array(pred.energy_pred)
    shift = e_ref.mean() if len(e_ref) else 0.0
    series = [(axes[0, 0], e_ref - shift, e_pred - shift, "energy - mean(ref) (eV)", ev.energy_mae, ev.energy_rmse,
               "eV", f"{ev.n_energies} structures")]  # fmt: skip
    if pred.forces_ref:
        f_ref, f_pred = np.concatenate(pred.forces_ref).ravel(), np.concatenate(pred.forces_pred).ravel()
        series.append((axes[0, 1], f_ref, f_pred, "force component (eV/A)", ev.forces_mae, ev.forces_rmse, "eV/A",
                       f"{ev.n_force_atoms} atoms"))  # fmt: skip
    fig.suptitle(f"{title + ': ' if title else ''}{ev.level}, test on {ev.n_energies} structures")
    for ax, ref, model, label, mae, rmse, unit, n in series:
        ax.scatter(ref, model, s=4, alpha=0.5)
        lo, hi = (float(min(ref.min(), model.min())), float(max(ref.max(), model.max()))) if len(ref) else (0, 1)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"model {label}")
        ax.set_title(f"N = {n}: MAE {mae:.4g}, RMSE {rmse:.4g} {unit}" if mae is not None else ev.level)
    return save_figure(fig, path)


def scan_plot(pred: Predictions, level: str, path: Path, title: str = "") -> Path:
    """Model and reference energies along a scan (records in id order), both relative to their minimum, against the
    coordinate the scan drives (a dihedral in degrees, a bond in Angstrom; point numbers if none is found)."""
    plt = pyplot()
    order = scan_order(pred)
    e_ref, e_pred = np.array(pred.energy_ref)[order], np.array(pred.energy_pred)[order]
    coordinate = scan_coordinate(pred.geometries[order[0]][0], [pred.geometries[k][1] for k in order])
    x = coordinate.values if coordinate else np.arange(len(order))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(x, e_ref - e_ref.min(), "k-o", ms=3, label=f"reference ({level})")
    ax.plot(x, e_pred - e_pred.min(), "r-s", ms=3, label="model")
    ax.set_xlabel(coordinate.label if coordinate else "scan point")
    ax.set_ylabel("energy - min (eV)")
    rmse = float(np.sqrt((((e_pred - e_pred.min()) - (e_ref - e_ref.min())) ** 2).mean()))
    ax.set_title(f"{title + chr(10) if title else ''}scan at {level}: {len(order)} points, "
                 f"relative-energy RMSE {rmse * 1e3:.0f} meV", fontsize=10)  # fmt: skip
    ax.legend()
    return save_figure(fig, path)


def score_scan(
    model: PolyfidModel, shard_dirs: list[Path], level: str, dataset: str, plot: Path | None = None, title: str = ""
) -> dict[str, Any]:
    """A dataset read as a scan (all splits, record order): roughness vs the reference, energy/force errors along
    it, and (with `plot`) the scan plot."""
    scan = predict(model, shard_dirs, level, SPLITS, [dataset])
    errors = score(scan, level)
    result = {"dataset": dataset, "points": len(scan.ids), **scan_roughness(scan),
              "energy_rmse": errors.energy_rmse, "forces_mae": errors.forces_mae}  # fmt: skip
    if plot is not None:
        result["plot"] = str(scan_plot(scan, level, plot, title))
    return result
