"""Pair finding: all (i, j) with |r_j - r_i + shift| < cutoff, in CSR order (sorted by i).

Pair selection runs without gradients; the pair vectors are then recomputed in torch from the positions (and
from the cell for periodic structures), so autograd flows through positions and cell. Never uses torch.cdist
(no double backward).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Candidate (i, j) pairs materialised at once for molecules; bigger structures are processed in chunks of atoms.
MAX_CANDIDATES = 1 << 22


@dataclass
class Graph:
    """P directed pairs (both i->j and j->i present), sorted by `pair_i`."""

    pair_i: torch.Tensor  # (P,) long
    pair_j: torch.Tensor  # (P,) long
    vec: torch.Tensor  # (P, 3) r_j - r_i + shift
    dist: torch.Tensor  # (P,) |vec|
    shifts: torch.Tensor  # (P, 3) long, integer cell shifts (0 for molecules)
    slots: torch.Tensor | None = None  # (A, K) each atom's pairs padded to K = max neighbours (neighbour_slots)

    @property
    def n_pairs(self) -> int:
        return int(self.pair_i.shape[0])

    def neighbour_slots(self, n_atoms: int) -> torch.Tensor:
        """`slots`, built on first use: every interaction layer of a forward pass shares them."""
        if self.slots is None:
            self.slots = neighbour_slots(self.pair_i, n_atoms)
        return self.slots

    @classmethod
    def empty(cls, like: torch.Tensor) -> Graph:
        """No pairs (isolated atoms); `like` gives dtype and device."""
        idx = torch.zeros(0, dtype=torch.long, device=like.device)
        vec = like.new_zeros(0, 3)
        return cls(idx, idx, vec, like.new_zeros(0), torch.zeros(0, 3, dtype=torch.long, device=like.device))


def neighbour_slots(pair_i: torch.Tensor, n_atoms: int) -> torch.Tensor:
    """(A, K) pair index of each centre atom's k-th pair (pairs need not be sorted); `n_pairs` where empty. K is the
    largest neighbour count (1 with no pairs): data-dependent, so an exported program takes it as an input."""
    with torch.no_grad():
        n_pairs = pair_i.shape[0]
        counts = torch.bincount(pair_i, minlength=n_atoms)
        width = int(counts.max()) if n_pairs else 1
        order = torch.argsort(pair_i, stable=True)
        start = torch.cumsum(counts, 0) - counts
        slot = torch.arange(n_pairs, device=pair_i.device) - start[pair_i[order]]
        idx = torch.full((n_atoms, width), n_pairs, dtype=torch.long, device=pair_i.device)
        idx[pair_i[order], slot] = order
        return idx


def _molecule_pairs(
    positions: torch.Tensor, atoms: torch.Tensor, counts: torch.Tensor, starts: torch.Tensor, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """In-structure pairs within the cutoff for atoms i (each paired with `counts` atoms from `starts`)."""
    out_i, out_j = [], []
    cum = torch.cumsum(counts, 0).cpu()
    lo, n = 0, atoms.shape[0]
    while lo < n:
        base = int(cum[lo - 1]) if lo else 0
        hi = max(int(torch.searchsorted(cum, base + MAX_CANDIDATES, right=True)), lo + 1)
        c = counts[lo:hi]
        i = atoms[lo:hi].repeat_interleave(c)
        first = (torch.cumsum(c, 0) - c).repeat_interleave(c)
        j = starts[lo:hi].repeat_interleave(c) + torch.arange(i.shape[0], device=i.device) - first
        d = positions[j] - positions[i]
        keep = (i != j) & ((d * d).sum(-1) < cutoff * cutoff)
        out_i.append(i[keep])
        out_j.append(j[keep])
        lo = hi
    return torch.cat(out_i), torch.cat(out_j)


def _periodic_pairs(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from vesin import NeighborList

    nl = NeighborList(cutoff=cutoff, full_list=True, sorted=True)
    i, j, s = nl.compute(points=positions, box=cell, periodic=[bool(p) for p in pbc], quantities="ijS")
    return i.astype(np.int64), j.astype(np.int64), s.astype(np.int64)


def build_graph(
    positions: torch.Tensor,
    batch: torch.Tensor,
    n_atoms: torch.Tensor,
    cutoff: float,
    cell: torch.Tensor | None = None,
    pbc: torch.Tensor | None = None,
) -> Graph:
    """Pairs within `cutoff` for a flat batch of structures.

    positions (A, 3); batch (A,) structure index per atom (atoms of a structure contiguous, structures in order);
    n_atoms (S,); cell (S, 3, 3) rows are lattice vectors; pbc (S, 3) bool. Structures with no periodic direction
    are handled on the positions' device with torch; periodic ones with vesin on CPU, one structure at a time.
    """
    with torch.no_grad():
        device = positions.device
        n_atoms = n_atoms.to(device)
        batch = batch.to(device)
        starts_s = torch.cumsum(n_atoms, 0) - n_atoms
        periodic_s = pbc.to(device).any(dim=1) if pbc is not None else torch.zeros_like(n_atoms, dtype=torch.bool)
        mol_atoms = torch.nonzero(~periodic_s[batch]).flatten()
        pos_d = positions.detach()
        parts_i, parts_j, parts_s = [], [], []
        if mol_atoms.numel():
            s_of = batch[mol_atoms]
            i, j = _molecule_pairs(pos_d, mol_atoms, n_atoms[s_of], starts_s[s_of], cutoff)
            parts_i.append(i)
            parts_j.append(j)
            parts_s.append(torch.zeros(i.shape[0], 3, dtype=torch.long, device=device))
        periodic_idx = torch.nonzero(periodic_s).flatten().tolist()
        if periodic_idx:
            if cell is None:
                raise ValueError("periodic structures need a cell")
            starts_l, counts_l = starts_s.tolist(), n_atoms.tolist()
            for s in periodic_idx:
                a, n = starts_l[s], counts_l[s]
                i, j, sh = _periodic_pairs(
                    pos_d[a : a + n].cpu().double().numpy(),
                    cell[s].detach().cpu().double().numpy(),
                    pbc[s].cpu().numpy(),
                    cutoff,
                )
                parts_i.append(torch.from_numpy(i).to(device) + a)
                parts_j.append(torch.from_numpy(j).to(device) + a)
                parts_s.append(torch.from_numpy(sh).to(device))
        if not parts_i:
            return Graph.empty(positions)
        pair_i, pair_j, shifts = torch.cat(parts_i), torch.cat(parts_j), torch.cat(parts_s)
        if periodic_idx:  # restore global CSR order (each part is sorted by i, parts are not interleaved-sorted)
            order = torch.argsort(pair_i, stable=True)
            pair_i, pair_j, shifts = pair_i[order], pair_j[order], shifts[order]
    vec = positions[pair_j] - positions[pair_i]
    if periodic_idx:
        has_shift = shifts.any(dim=1)
        if bool(has_shift.any()):
            cell_of_pair = cell.to(positions.dtype)[batch[pair_i]]  # (P, 3, 3)
            offset = torch.einsum("pk,pkx->px", shifts.to(positions.dtype), cell_of_pair)
            vec = vec + offset
    dist = torch.sqrt((vec * vec).sum(-1))
    return Graph(pair_i, pair_j, vec, dist, shifts)
