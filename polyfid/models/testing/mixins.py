"""Reusable model tests (NequIP's habit). Subclass `ModelTestMixin` with a registered backbone `kind` and its
`settings` (elements H, C, N, O are added); set `packaged = True` to run every test on the model after a package
save/load round trip. Any backbone following `polyfid.models.Backbone` can override `make_backbone(dtype)`.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from polyfid.data_shards.stream.batch import UnsupportedStateError
from polyfid.models import PolyfidModel, UnknownElementError, UnknownHeadError, build_model
from polyfid.models.compiled import ExportedHead, ExportError, export_head
from polyfid.models.package import LoadedPackage, load_package, save_package
from polyfid.models.registry import build_backbone
from polyfid.models.testing.structures import (
    ELEMENTS,
    demo_records,
    diamond_record,
    level_stats,
    make_batch,
    record,
    supercell,
    water_box_record,
)

HEADS = ["gfn2-xtb", "b3lyp/def2-svp"]


def random_rotation(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def round_trip(model: PolyfidModel) -> PolyfidModel:
    """The model as a user gets it back from a package file (saved, then loaded; same weights and heads)."""
    with tempfile.TemporaryDirectory(prefix="polyfid-mixin-") as folder:
        path = save_package(Path(folder) / "model.pt", model, provenance={"test": "ModelTestMixin"})
        return load_package(path).model


class ModelTestMixin:
    """Invariance, equivariance, force/stress consistency, batching, smoothness and error tests for any backbone."""

    kind: ClassVar[str]  # the backbone registry kind
    settings: ClassVar[dict[str, Any]] = {}
    packaged: ClassVar[bool] = False  # run on the model reloaded from a saved package
    conditioned: ClassVar[bool] = False  # fidelity embeddings, charge and spin condition the trunk; a delta head

    def make_backbone(self, dtype: torch.dtype) -> torch.nn.Module:
        config = {"elements": ELEMENTS, **self.settings, "dtype": str(dtype).removeprefix("torch.")}
        return build_backbone(self.kind, config)

    def make_model(self, dtype: torch.dtype) -> PolyfidModel:
        torch.manual_seed(0)
        flags = {"fidelity_embedding": self.conditioned, "charge_spin": self.conditioned}
        model = build_model(self.make_backbone(dtype), level_stats(), **flags)
        if self.conditioned:  # non-zero embeddings (they start at zero) and a delta head on the first level
            delta = model.add_head("delta/level", None, base=model.head_names[0])
            with torch.no_grad():
                model.state.charge.normal_(0.0, 0.5)
                model.state.spin.normal_(0.0, 0.5)
                for head in model.heads.heads:
                    head.embedding.normal_(0.0, 0.5)
                for layer in delta.layers:
                    layer.weight.normal_(0.0, 0.1)
        return round_trip(model) if self.packaged else model

    # -- helpers --------------------------------------------------------------------------------------------------
    def _model(self, dtype: torch.dtype = torch.float64, train: bool = False) -> PolyfidModel:
        model = self.make_model(dtype)
        return model.train(train)

    def _molecules(self, n: int = 3):
        """Demo molecules; for a conditioned model, a cation doublet, an anion doublet and a neutral singlet."""
        records = list(demo_records((0,)))[:n]
        if not self.conditioned:
            return records
        states = [(1, 2), (-1, 2), (0, 1)]
        return [replace(r, charge=q, multiplicity=m) for r, (q, m) in zip(records, states * n, strict=False)]

    def test_charge_and_spin_condition_the_energy_or_are_refused(self):
        model = self._model()
        neutral = replace(self._molecules(3)[2 if self.conditioned else 0], charge=0, multiplicity=1)
        states = [replace(neutral, charge=1, multiplicity=2), replace(neutral, multiplicity=3)]
        if not model.charge_spin:
            with pytest.raises(UnsupportedStateError, match=f"{neutral.id}.*charge \\+1, multiplicity 2"):
                model(make_batch(states[:1]), HEADS)
            return
        out = model(make_batch([neutral, *states]), HEADS)
        assert (out.energy[1:] - out.energy[0]).abs().min() > 1e-6

    def test_exported_head_matches_eager(self):
        """The exported (energy, forces) program, traced on two molecules, gives eager's numbers on other sizes,
        periodic cells included; a charge/spin model is refused."""
        model = self._model()
        package = LoadedPackage(model=model, metadata={})
        if model.charge_spin:
            with pytest.raises(ExportError, match="charge/spin"):
                export_head(package, HEADS[0], torch.float64, make_batch(self._molecules(2)))
            return
        program = export_head(package, HEADS[-1], torch.float64, make_batch(self._molecules(2)))
        run = ExportedHead(program.module(), Path("in-memory"), HEADS[-1], "float64")
        for batch in (make_batch(list(demo_records((1, 2)))[:5]), make_batch([diamond_record(), water_box_record()])):
            energy, forces = run(model, batch)
            ref = model(batch, [HEADS[-1]])
            torch.testing.assert_close(energy, ref.energy[:, 0], rtol=0, atol=1e-9)
            torch.testing.assert_close(forces, ref.forces[:, 0], rtol=0, atol=1e-9)

    # -- shapes and errors ----------------------------------------------------------------------------------------
    def test_output_shapes_and_dtypes(self):
        model = self._model(torch.float32)
        batch = make_batch(self._molecules(3))
        out = model(batch, HEADS)
        assert out.heads == HEADS
        assert out.energy.shape == (3, 2) and out.energy.dtype == torch.float64
        assert out.forces.shape == (batch.n_atoms_total, 2, 3) and out.forces.dtype == torch.float32
        assert out.per_layer_energy.shape[:2] == (3, 2)
        torch.testing.assert_close(out.per_layer_energy.sum(-1), out.energy, rtol=0, atol=1e-3)
        assert torch.isfinite(out.energy).all() and torch.isfinite(out.forces).all()

    def test_head_order_follows_request(self):
        model = self._model()
        batch = make_batch(self._molecules(2))
        a = model(batch, HEADS)
        b = model(batch, HEADS[::-1])
        torch.testing.assert_close(a.energy, b.energy.flip(1))
        torch.testing.assert_close(a.forces, b.forces.flip(1))

    def test_unknown_head_is_a_clear_error(self):
        model = self._model()
        batch = make_batch(self._molecules(1))
        with pytest.raises(UnknownHeadError, match=r"ccsd\(t\).*available"):
            model(batch, ["ccsd(t)/cbs"])
        with pytest.raises(ValueError, match="at least one head"):
            model(batch, [])

    def test_unknown_element_is_a_clear_error(self):
        model = self._model()
        rec = record([6, 79], [[0, 0, 0], [0, 0, 2.0]])
        with pytest.raises(UnknownElementError, match=r"\[79\].*\[1, 6, 7, 8\]"):
            model(make_batch([rec]), HEADS)

    # -- symmetries ---------------------------------------------------------------------------------------------
    def test_rotation_translation_invariance(self):
        model = self._model()
        batch = make_batch(self._molecules(3))
        ref = model(batch, HEADS)
        rot = random_rotation(1)
        moved = make_batch(self._molecules(3))
        moved.positions = batch.positions @ rot.T + torch.tensor([1.5, -20.0, 3.0], dtype=torch.float64)
        out = model(moved, HEADS)
        torch.testing.assert_close(out.energy, ref.energy, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(out.forces, ref.forces @ rot.T, rtol=1e-9, atol=1e-9)

    def test_permutation_invariance(self):
        model = self._model()
        recs = self._molecules(3)
        batch = make_batch(recs)
        ref = model(batch, HEADS)
        perm = []
        g = torch.Generator().manual_seed(2)
        start = 0
        for n in batch.n_atoms.tolist():
            perm.append(start + torch.randperm(n, generator=g))
            start += n
        perm = torch.cat(perm)
        permuted = make_batch(recs)
        permuted.numbers, permuted.positions = batch.numbers[perm], batch.positions[perm]
        out = model(permuted, HEADS)
        torch.testing.assert_close(out.energy, ref.energy, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(out.forces, ref.forces[perm], rtol=1e-9, atol=1e-9)

    # -- forces -------------------------------------------------------------------------------------------------
    def test_forces_match_finite_differences(self):
        model = self._model(torch.float64)
        batch = make_batch(self._molecules(1))
        out = model(batch, HEADS)
        h = 1e-5
        fd = torch.zeros_like(out.forces)
        for a in range(batch.n_atoms_total):
            for x in range(3):
                es = []
                for sign in (1, -1):
                    b = make_batch(self._molecules(1))
                    b.positions = batch.positions.clone()
                    b.positions[a, x] += sign * h
                    es.append(model(b, HEADS, compute_forces=False).energy[0])
                fd[a, :, x] = -(es[0] - es[1]) / (2 * h)
        err = (fd - out.forces).norm() / out.forces.norm()
        assert out.forces.norm() > 1e-3
        assert err < 1e-6, float(err)

    def test_batch_equals_single_structures(self):
        model = self._model()
        recs = [*self._molecules(3), diamond_record()]
        out = model(make_batch(recs), HEADS)
        start = 0
        for k, rec in enumerate(recs):
            one = model(make_batch([rec]), HEADS)
            torch.testing.assert_close(out.energy[k], one.energy[0], rtol=1e-12, atol=1e-9)
            torch.testing.assert_close(out.forces[start : start + rec.n_atoms], one.forces, rtol=1e-9, atol=1e-9)
            start += rec.n_atoms

    def test_smooth_at_cutoff(self):
        """An extra H atom crossing the cutoff of the molecule's outermost atom: E and F continuous."""
        model = self._model()
        rc = model.backbone.cutoff
        mol = self._molecules(1)[0]
        k = int(np.argmax(mol.positions[:, 0]))
        results = []
        for d in (rc - 1e-6, rc + 1e-6):
            extra = mol.positions[k] + [d, 0.0, 0.0]
            rec = record([*mol.numbers, 1], np.vstack([mol.positions, extra]))
            out = model(make_batch([rec]), HEADS)
            results.append(out)
        assert results[0].graph.n_pairs == results[1].graph.n_pairs + 2
        torch.testing.assert_close(results[0].energy, results[1].energy, rtol=0, atol=1e-6)
        torch.testing.assert_close(results[0].forces, results[1].forces, rtol=0, atol=1e-6)

    def test_isolated_atom_energy_is_e0(self):
        model = self._model()
        stats = level_stats()
        recs = [record([z], [[0.0, 0.0, 0.0]], rid=str(z)) for z in (1, 6, 7, 8)]
        recs.append(record([1, 8], [[0, 0, 0], [0, 0, model.backbone.cutoff + 0.5]], rid="far"))
        out = model(make_batch(recs), HEADS)
        for h, name in enumerate(HEADS):
            e0 = stats[name].e0
            want = [e0[str(z)] for z in (1, 6, 7, 8)] + [e0["1"] + e0["8"]]
            torch.testing.assert_close(out.energy[:, h], torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-9)
        assert out.forces.abs().max() == 0

    # -- periodic -----------------------------------------------------------------------------------------------
    @pytest.mark.parametrize("make_cell", [diamond_record, water_box_record])
    def test_periodic_supercell_is_extensive(self, make_cell):
        model = self._model()
        cell = make_cell()
        reps = (2, 1, 3)
        big = supercell(cell, reps)
        small_out = model(make_batch([cell]), HEADS)
        big_out = model(make_batch([big]), HEADS)
        torch.testing.assert_close(big_out.energy, small_out.energy * math.prod(reps), rtol=1e-10, atol=1e-8)
        # ase.repeat puts the image index outermost: forces tile
        torch.testing.assert_close(big_out.forces, small_out.forces.repeat(math.prod(reps), 1, 1), rtol=1e-8, atol=1e-8)

    def test_stress_matches_strain_finite_differences(self):
        model = self._model()
        cell = diamond_record()
        out = model(make_batch([cell]), HEADS, compute_stress=True)
        volume = abs(np.linalg.det(cell.cell))
        h = 1e-5
        fd = torch.zeros(len(HEADS), 3, 3, dtype=torch.float64)
        for x in range(3):
            for y in range(3):
                es = []
                for sign in (1, -1):
                    eps = np.zeros((3, 3))
                    eps[x, y] += 0.5 * sign * h
                    eps[y, x] += 0.5 * sign * h
                    deform = np.eye(3) + eps
                    rec = record(cell.numbers, cell.positions @ deform, cell.cell @ deform)
                    es.append(model(make_batch([rec]), HEADS, compute_forces=False).energy[0])
                fd[:, x, y] = (es[0] - es[1]) / (2 * h) / volume
        assert out.stress.abs().max() > 1e-6
        torch.testing.assert_close(out.stress[0], fd, rtol=1e-6, atol=1e-9)
        mol = model(make_batch(self._molecules(1)), HEADS, compute_stress=True)
        assert mol.stress.abs().max() == 0

    # -- training plumbing --------------------------------------------------------------------------------------
    def test_force_loss_reaches_every_parameter(self):
        """Double backward: a loss on forces alone gives a nonzero gradient on every trainable parameter."""
        model = self._model(torch.float32, train=True)
        out = model(make_batch([*self._molecules(3), water_box_record()]), model.head_names)
        assert out.forces.requires_grad
        out.forces.pow(2).mean().backward()
        dead = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
        assert not dead, dead

    def test_eval_under_no_grad_returns_detached_outputs(self):
        model = self._model(torch.float32)
        batch = make_batch(self._molecules(2))
        with torch.no_grad():
            out = model(batch, HEADS)
        assert not out.energy.requires_grad and not out.forces.requires_grad
        assert not batch.positions.requires_grad
