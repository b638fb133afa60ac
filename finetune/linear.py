"""The linear baseline (arXiv:2211.11680): per-element reference energies by least squares on element counts, then
ridge regression of the residual on frozen per-atom features of a (pretrained) model summed over each structure,
the regularisation chosen by k-fold cross-validation. Closed form throughout (one SVD per fold)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from polyfid.core.errors import ConfigError
from polyfid.data_shards.reference_energies import fit_e0
from polyfid.data_shards.stream import Batch
from polyfid.models import PolyfidModel
from polyfid.models.heads import EnergyHead

ALPHAS = tuple(10.0**k for k in range(-8, 5))  # ridge strengths tried (relative to the mean feature variance)


def structure_features(model: PolyfidModel, batch: Batch) -> np.ndarray:
    """(S, F) float64: per structure, the sum over atoms of the features the energy heads are linear in
    (`PolyfidModel.features`). The trunk is frozen."""
    with torch.no_grad():
        per_atom = model.features(batch)
        sums = per_atom.new_zeros(batch.n_structures, per_atom.shape[1]).index_add(0, batch.batch, per_atom)
    return sums.double().numpy()


def element_counts(batch: Batch, elements: Sequence[int]) -> np.ndarray:
    """(S, n_elements) atom counts per structure."""
    index = {z: k for k, z in enumerate(elements)}
    counts = np.zeros((batch.n_structures, len(elements)))
    for s, z in zip(batch.batch.tolist(), batch.numbers.tolist(), strict=True):
        counts[s, index[z]] += 1
    return counts


@dataclass
class LinearBaseline:
    """E = counts . e0 + features . w (w = 0 for the counts-only model)."""

    elements: list[int]
    e0: np.ndarray
    mean: np.ndarray  # feature centring/scaling, fitted on the training set
    scale: np.ndarray
    w: np.ndarray
    alpha: float | None  # None: counts only
    cv_rmse: float | None

    def predict(self, counts: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        energy = counts @ self.e0
        if self.alpha is not None and features is not None:
            energy = energy + ((features - self.mean) / self.scale) @ self.w
        return energy


def fit_counts(
    counts: np.ndarray, energy: np.ndarray, elements: Sequence[int], prior: np.ndarray | None = None
) -> LinearBaseline:
    """Per-element energies by least squares, kept at `prior` along the composition directions the data leaves
    undetermined (`fit_e0`)."""
    e0 = fit_e0(counts, energy, prior).e0
    zeros = np.zeros(0)
    return LinearBaseline(list(elements), e0, zeros, zeros, zeros, None, None)


def _ridge_path(x: np.ndarray, y: np.ndarray, alphas: Iterable[float]) -> list[np.ndarray]:
    """Ridge solutions for every alpha from one SVD: w = V diag(s / (s^2 + alpha n)) U^T y."""
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    uty = u.T @ y
    n = x.shape[0]
    return [vt.T @ (s / (s**2 + a * n) * uty) for a in alphas]


def fit_linear(
    counts: np.ndarray,
    features: np.ndarray,
    energy: np.ndarray,
    elements: Sequence[int],
    folds: int = 5,
    seed: int = 0,
    alphas: Sequence[float] = ALPHAS,
    prior: np.ndarray | None = None,
) -> LinearBaseline:
    """E0 on counts (a correction to `prior`), then ridge of the residual on standardised features; alpha by
    k-fold CV RMSE."""
    if len(energy) < 4:
        raise ConfigError(f"the linear baseline needs at least 4 structures with energies, got {len(energy)}")
    base = fit_counts(counts, energy, elements, prior)
    residual = energy - counts @ base.e0
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-12
    x = (features - mean) / scale
    n = len(energy)
    k = max(2, min(folds, n // 2))
    fold_of = np.random.default_rng(seed).permutation(n) % k
    sq_err = np.zeros(len(alphas))
    for f in range(k):
        train, test = fold_of != f, fold_of == f
        # E0 refitted inside the fold too, so the CV error is that of the whole procedure
        e0 = fit_e0(counts[train], energy[train], prior).e0
        r_train = energy[train] - counts[train] @ e0
        r_test = energy[test] - counts[test] @ e0
        for a, w in enumerate(_ridge_path(x[train], r_train, alphas)):
            sq_err[a] += ((x[test] @ w - r_test) ** 2).sum()
    best = int(np.argmin(sq_err))
    w = _ridge_path(x, residual, [alphas[best]])[0]
    cv_rmse = float(np.sqrt(sq_err[best] / n))
    return LinearBaseline(list(elements), base.e0, mean, scale, w, float(alphas[best]), cv_rmse)


def fit_structures(
    model: PolyfidModel, batch: Batch, level_index: int, seed: int = 0, prior: np.ndarray | None = None
) -> LinearBaseline:
    """`fit_linear` on a batch's energies at one level, with the model's frozen summed features."""
    elements = model.backbone.elements
    counts, features = element_counts(batch, elements), structure_features(model, batch)
    return fit_linear(counts, features, batch.energy[:, level_index].numpy(), elements, seed=seed, prior=prior)


def load_into_head(fit: LinearBaseline, head: EnergyHead) -> None:
    """Give a head the ridge weights of `fit` (linear probing before fine-tuning): the head is linear in the same
    summed features, so only the centring constant is left, and it goes into E0 when E0 is refitted next."""
    if fit.alpha is None:
        raise ValueError("a counts-only baseline has no feature weights to load")
    w = torch.from_numpy(fit.w / fit.scale) / head.scale
    sizes = [layer.in_features for layer in head.layers]
    if sum(sizes) != len(w):
        raise ValueError(f"the fit has {len(w)} feature weights, the head's layers take {sizes}")
    with torch.no_grad():
        for layer, part in zip(head.layers, torch.split(w, sizes), strict=True):
            layer.weight.copy_(part.reshape(1, -1))
