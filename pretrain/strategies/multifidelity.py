"""`multifidelity`: one task over every dataset, every level its own head; loss terms only where labels exist."""

from __future__ import annotations

from polyfid.pretrain.strategies import Strategy


class MultiFidelity(Strategy):
    kind = "multifidelity"
