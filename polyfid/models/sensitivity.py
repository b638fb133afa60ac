"""HIP-NN inverse-distance Gaussian sensitivities with a cos^2 cutoff."""

from __future__ import annotations

import math

import torch
from torch import nn


def cos2_cutoff(dist: torch.Tensor, cutoff: float) -> torch.Tensor:
    """cos^2(pi r / (2 r_c)) for r < r_c, else 0: value and first derivative vanish at r_c."""
    return torch.where(dist < cutoff, torch.cos(dist * (math.pi / (2.0 * cutoff))) ** 2, torch.zeros_like(dist))


class InverseGaussianSensitivity(nn.Module):
    """s_nu(r) = exp(-0.5 sigma_nu^2 (1/r - 1/mu_nu)^2) * cos^2(pi r / (2 r_c)); mu, sigma learnable.

    Init as in HIP-NN: 1/mu evenly spaced between 1/r_soft_max and 1/r_soft_min; sigma = 2 n_sens r_soft_min.
    """

    def __init__(self, n_sensitivities: int, r_soft_min: float, r_soft_max: float, cutoff: float):
        super().__init__()
        if not 0 < r_soft_min < r_soft_max:
            raise ValueError(f"need 0 < r_soft_min < r_soft_max, got {r_soft_min}, {r_soft_max}")
        self.cutoff = float(cutoff)
        inv_mu = torch.linspace(1.0 / r_soft_max, 1.0 / r_soft_min, n_sensitivities, dtype=torch.float64)
        self.mu = nn.Parameter((1.0 / inv_mu).to(torch.get_default_dtype()))
        self.sigma = nn.Parameter(torch.full((n_sensitivities,), 2.0 * n_sensitivities * r_soft_min))

    @property
    def n_sensitivities(self) -> int:
        return int(self.mu.shape[0])

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        """(P,) distances -> (P, n_sensitivities)."""
        x = (1.0 / dist)[:, None] - 1.0 / self.mu
        return torch.exp(-0.5 * (self.sigma * x) ** 2) * cos2_cutoff(dist, self.cutoff)[:, None]
