"""Atomic number -> species index lookup shared by backbones and heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from polyfid.core.errors import PolyfidError


class UnknownElementError(PolyfidError, ValueError):
    """An atomic number the model was not built for."""


class SpeciesIndex(nn.Module):
    """Maps atomic numbers to 0..n_species-1 in the order of `elements` (sorted, unique)."""

    def __init__(self, elements: Sequence[int]):
        super().__init__()
        elements = [int(z) for z in elements]
        if not elements or sorted(set(elements)) != elements or elements[0] < 1:
            raise ValueError(f"elements must be sorted, unique, positive atomic numbers, got {elements}")
        self.elements = elements
        table = torch.full((max(elements) + 1,), -1, dtype=torch.long)
        table[torch.tensor(elements)] = torch.arange(len(elements))
        self.register_buffer("table", table, persistent=False)

    @property
    def n_species(self) -> int:
        return len(self.elements)

    def forward(self, numbers: torch.Tensor) -> torch.Tensor:
        """(A,) atomic numbers -> (A,) long species indices; raises UnknownElementError naming the culprit."""
        numbers = numbers.to(device=self.table.device, dtype=torch.long)
        inside = (numbers >= 0) & (numbers < self.table.shape[0])
        species = torch.where(inside, self.table[numbers.clamp(0, self.table.shape[0] - 1)], -1)
        if bool((species < 0).any()):
            bad = sorted(set(numbers[species < 0].tolist()))
            raise UnknownElementError(f"atomic number(s) {bad} not among the model's elements {self.elements}")
        return species
