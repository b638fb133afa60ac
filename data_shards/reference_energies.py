"""Per-element reference energies E0 by least squares (`fit_e0`: the one E0 fit of polyfid, used by the shard build,
the fine-tune refit and the linear baseline), and per-level E0 and residual statistics from mergeable sufficient
statistics.

Each build task accumulates, per level, sums over its train-split records (c = element counts, y = energy, n = atoms):
c c^T, c y, y, y^2 and their 1/n, 1/n^2 weighted versions, plus force sums. Merged on the driver, they give the
exact least-squares E0 and the mean/std of the per-atom residual (y - c.E0)/n without a second pass over the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase.data import chemical_symbols

from polyfid.data_shards.manifest import LevelStats
from polyfid.data_shards.record import Record


@dataclass(frozen=True)
class E0Fit:
    """Least-squares E0 (eV per element) of `sum_Z n_Z(s) E0_Z ~ E(s)`, with what the data determines.

    Compositions that are multiples of each other (one molecule, or a few in fixed ratios) leave directions in
    element space unconstrained: E0 is then the minimum-norm solution, meaningful only summed over compositions in
    the span of the data. `determined[k]`: whether element k's E0 alone is fixed by the data; `null_space`: an
    orthonormal basis (rows) of the undetermined directions.
    """

    e0: np.ndarray
    rank: int
    null_space: np.ndarray
    prior: np.ndarray | None = None  # the E0 kept along the undetermined directions (None: zero)

    @property
    def determined(self) -> np.ndarray:
        """Per element: whether the undetermined directions leave its E0 alone untouched."""
        return np.linalg.norm(self.null_space, axis=0) < 1e-8

    def undetermined(self, elements: Sequence[int]) -> list[str]:
        """The undetermined directions as readable combinations, e.g. ['0.71 H - 0.71 C']."""
        out = []
        for row in self.null_space:
            terms = [
                f"{'-' if c < 0 else '+'} {abs(c):.2f} {chemical_symbols[z]}"
                for z, c in zip(elements, row, strict=True)
                if abs(c) > 1e-3
            ]
            out.append(" ".join(terms).removeprefix("+ "))
        return out


def fit_e0(design: np.ndarray, target: np.ndarray, prior: np.ndarray | None = None) -> E0Fit:
    """E0 = prior + the minimum-norm least-squares solution of `design @ dE0 ~ target - design @ prior`, where
    `design` holds per-structure element counts C and `target` the energies E, or, when only sums are kept (the
    streamed shard build), the normal equations C^T C and C^T E: both systems have the same minimum-norm solution
    and the same undetermined directions (the null space of C).

    The minimum-norm correction lies in the row space of C: E0 moves only along the composition directions the
    data determines and keeps `prior` (default zero) in every other one. A fine-tune on one molecule therefore
    keeps the pretrained head's E0 for every composition it never saw, instead of a minimum-norm E0 valid only
    for that molecule's stoichiometry."""
    design, target = np.asarray(design, dtype=np.float64), np.asarray(target, dtype=np.float64)
    k = design.shape[1]
    base = np.zeros(k) if prior is None else np.asarray(prior, dtype=np.float64)
    if design.size == 0 or not np.any(design):
        return E0Fit(base.copy(), 0, np.eye(k), prior)
    delta, _, rank, _ = np.linalg.lstsq(design, target - design @ base, rcond=None)
    null = np.linalg.svd(design)[2][rank:]  # right singular vectors beyond the rank
    return E0Fit(base + delta, int(rank), null, prior)


@dataclass
class LevelAccumulator:
    """Sufficient statistics of one level; `elements` indexes the vector/matrix axes."""

    elements: list[int] = field(default_factory=list)
    ctc: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # sum c c^T
    cty: np.ndarray = field(default_factory=lambda: np.zeros(0))  # sum c y
    c_n: np.ndarray = field(default_factory=lambda: np.zeros(0))  # sum c / n
    cy_n2: np.ndarray = field(default_factory=lambda: np.zeros(0))  # sum c y / n^2
    cct_n2: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # sum c c^T / n^2
    y_n: float = 0.0  # sum y / n
    y2_n2: float = 0.0  # sum y^2 / n^2
    n_energy: int = 0
    f2: float = 0.0  # sum of squared force components
    n_force_components: int = 0
    n_forces: int = 0

    def _grow(self, elements: list[int]) -> None:
        new = sorted(set(self.elements) | set(elements))
        if new == self.elements:
            return
        idx = np.searchsorted(new, self.elements)
        k = len(new)

        def vec(v: np.ndarray) -> np.ndarray:
            out = np.zeros(k)
            out[idx] = v
            return out

        def mat(m: np.ndarray) -> np.ndarray:
            out = np.zeros((k, k))
            out[np.ix_(idx, idx)] = m
            return out

        self.ctc, self.cct_n2 = mat(self.ctc), mat(self.cct_n2)
        self.cty, self.c_n, self.cy_n2 = vec(self.cty), vec(self.c_n), vec(self.cy_n2)
        self.elements = new

    def add(self, numbers: np.ndarray, energy: float | None, forces: np.ndarray | None) -> None:
        if energy is not None:
            z, counts = np.unique(numbers, return_counts=True)
            self._grow(z.tolist())
            c = np.zeros(len(self.elements))
            c[np.searchsorted(self.elements, z)] = counts
            n = float(numbers.shape[0])
            self.ctc += np.outer(c, c)
            self.cty += c * energy
            self.c_n += c / n
            self.cy_n2 += c * energy / n**2
            self.cct_n2 += np.outer(c, c) / n**2
            self.y_n += energy / n
            self.y2_n2 += (energy / n) ** 2
            self.n_energy += 1
        if forces is not None:
            f = np.asarray(forces, dtype=np.float64)
            self.f2 += float(np.sum(f * f))
            self.n_force_components += f.size
            self.n_forces += 1

    def merge(self, other: LevelAccumulator) -> None:
        self._grow(other.elements)
        other = _aligned(other, self.elements)
        for name in ("ctc", "cty", "c_n", "cy_n2", "cct_n2"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("y_n", "y2_n2", "n_energy", "f2", "n_force_components", "n_forces"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def fit(self, datasets: list[str]) -> LevelStats:
        """Least-squares E0 (minimum-norm where element counts are collinear) and residual statistics."""
        if self.n_energy:
            fit = fit_e0(self.ctc, self.cty)  # the normal equations
            e0, rank = fit.e0, fit.rank
            mean = (self.y_n - e0 @ self.c_n) / self.n_energy
            m2 = (self.y2_n2 - 2 * e0 @ self.cy_n2 + e0 @ self.cct_n2 @ e0) / self.n_energy
            std = float(np.sqrt(max(m2 - mean**2, 0.0)))
        else:
            e0, mean, std, rank = np.zeros(len(self.elements)), 0.0, 0.0, 0
        return LevelStats(
            e0={str(z): float(v) for z, v in zip(self.elements, e0, strict=True)},
            n_energy=self.n_energy,
            n_forces=self.n_forces,
            residual_per_atom_mean=float(mean),
            residual_per_atom_std=std,
            force_rms=float(np.sqrt(self.f2 / self.n_force_components)) if self.n_force_components else None,
            datasets=sorted(datasets),
            e0_rank=int(rank),
            sums=self.to_dict(),
        )

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> LevelAccumulator:
        arrays = {"ctc", "cty", "c_n", "cy_n2", "cct_n2"}
        return cls(**{k: (np.asarray(v, dtype=np.float64) if k in arrays else v) for k, v in d.items()})


def _aligned(acc: LevelAccumulator, elements: list[int]) -> LevelAccumulator:
    out = LevelAccumulator(**{**acc.__dict__})
    out._grow(elements)
    return out


def merge_level_stats(parts: Sequence[LevelStats]) -> LevelStats:
    """One level's statistics over several shard folders: the exact least-squares E0 of their merged sufficient
    statistics. Folders written before the sums were kept: each element's E0 from the folder with the most
    energies holding it (not a joint fit, but no element of any folder is left at E0 = 0)."""
    if len(parts) == 1:
        return parts[0]
    datasets = sorted({d for p in parts for d in p.datasets})
    if all(p.sums is not None for p in parts):
        acc = LevelAccumulator()
        for p in parts:
            acc.merge(LevelAccumulator.from_dict(p.sums))
        return acc.fit(datasets)
    ranked = sorted(parts, key=lambda p: p.n_energy)  # the largest folder last: it wins each element
    base = ranked[-1]
    e0 = {z: v for p in ranked for z, v in p.e0.items()}
    return LevelStats(e0=e0, n_energy=sum(p.n_energy for p in parts), n_forces=sum(p.n_forces for p in parts),
                      residual_per_atom_mean=base.residual_per_atom_mean,
                      residual_per_atom_std=base.residual_per_atom_std, force_rms=base.force_rms,
                      datasets=datasets, e0_rank=None)  # fmt: skip


def accumulate(records: list[Record]) -> dict[str, LevelAccumulator]:
    """Statistics per level over some (train-split) records."""
    out: dict[str, LevelAccumulator] = {}
    for rec in records:
        for level, lab in rec.labels.items():
            out.setdefault(level, LevelAccumulator()).add(rec.numbers, lab.energy, lab.forces)
    return out
