"""Exported inference of one head: energy and forces as a single torch.export program, stored beside the package.

`torch.export` cannot trace `autograd.grad`, so the head's energy and its position gradient are first traced into
one flat graph of aten ops (make_fx, symbolic shapes: any number of atoms, pairs and structures), which is then
exported. Pair finding stays in eager code (it is data-dependent); the program maps (positions, species, pairs,
cell offsets) to (energies, forces). Loaded, it runs as is or through `torch.compile` (inductor), a several-fold
speed-up on CPU.

File (`<package stem>.export-<level>-<dtype>.pt` beside the package): a plain ``torch.save`` of tensors and plain
data, read with ``weights_only=True``; the program is torch.export's JSON graph (operators by name, no pickle), and it
records the package's sha256 and the torch version, so a stale or foreign file is never used.
"""

from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polyfid.core.atomic import atomic_path
from polyfid.core.digest import sha256_file
from polyfid.core.errors import PolyfidError
from polyfid.core.torch_files import RefusedLoad, load_weights_only
from polyfid.data_shards.record import Record, normalize_level
from polyfid.data_shards.stream.batch import Batch, collate
from polyfid.models.graph import Graph, build_graph
from polyfid.models.hipnn import DTYPES
from polyfid.models.model import PolyfidModel
from polyfid.models.package import LoadedPackage, load_package

FORMAT = "polyfid-exported-head"
VERSION = "1.0"


class ExportError(PolyfidError, ValueError):
    """A head that cannot be exported (charge/spin conditioning), or an unusable exported file."""


def exported_path(package: Path, level: str, dtype: str) -> Path:
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in normalize_level(level))
    return package.with_name(f"{package.stem}.export-{slug}-{dtype}.pt")


def _inputs(model: PolyfidModel, batch: Batch) -> tuple[torch.Tensor, ...]:
    """The program's inputs for `batch`: positions, species, structure index, pairs, cell offsets, neighbour slots
    (their width K is data-dependent, so it comes in as a shape), an (S,) marker (the number of structures)."""
    dtype = model.dtype
    pos = batch.positions.to(dtype)
    cell = batch.cell.to(dtype)
    graph = build_graph(pos, batch.batch, batch.n_atoms, model.backbone.cutoff, cell, batch.pbc)
    offsets = torch.einsum("pk,pkx->px", graph.shifts.to(dtype), cell[batch.batch[graph.pair_i]])
    marker = torch.zeros(batch.n_atoms.shape[0], dtype=dtype, device=pos.device)
    slots = graph.neighbour_slots(pos.shape[0])
    return pos, model.species(batch.numbers), batch.batch, graph.pair_i, graph.pair_j, offsets, slots, marker


def _energy_forces(model: PolyfidModel, index: int):
    """f(inputs) -> (energy (S,) float64, forces (A, 3)) of head `index`, by autograd."""

    def run(pos, species, structure, pair_i, pair_j, offsets, slots, marker):
        with torch.enable_grad():
            pos = pos.detach().requires_grad_(True)
            vec = pos[pair_j] - pos[pair_i] + offsets
            shifts = torch.zeros_like(offsets, dtype=torch.long)  # folded into offsets already
            graph = Graph(pair_i, pair_j, vec, torch.sqrt((vec * vec).sum(-1)), shifts, slots)
            e0, net, _ = model.graph_energies(species, graph, structure, marker.shape[0], [index])
            (grad,) = torch.autograd.grad(net[:, 0].sum(), pos)
        return e0[:, 0] + net[:, 0].to(torch.float64), -grad

    return run


class _Program(nn.Module):
    """A traced graph as a module with named inputs (torch.export matches dynamic shapes by argument)."""

    def __init__(self, graph_module: nn.Module):
        super().__init__()
        self.graph_module = graph_module

    def forward(self, pos, species, structure, pair_i, pair_j, offsets, slots, marker):
        return self.graph_module(pos, species, structure, pair_i, pair_j, offsets, slots, marker)


def export_head(package: LoadedPackage, level: str, dtype: torch.dtype, example: Batch) -> torch.export.ExportedProgram:
    """The exported (energy, forces) program of head `level` at `dtype`, traced on `example` (any structures)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    if package.model.charge_spin:
        raise ExportError("a charge/spin-conditioned model is not exported (its state input is not in the program)")
    model = copy.deepcopy(package.model).to(dtype).eval()
    index = model.heads.indices([normalize_level(level)])[0]
    for p in model.parameters():
        p.requires_grad_(False)
    model(example, [model.head_names[index]], compute_forces=False)  # fill cached constants with real tensors
    inputs = _inputs(model, example)
    traced = make_fx(_energy_forces(model, index), tracing_mode="symbolic", _allow_non_fake_inputs=True)(*inputs)
    atoms, pairs, width = (torch.export.Dim(name, min=1) for name in ("atoms", "pairs", "width"))
    structures = torch.export.Dim("structures", min=1)
    shapes = ({0: atoms}, {0: atoms}, {0: atoms}, {0: pairs}, {0: pairs}, {0: pairs}, {0: atoms, 1: width},
              {0: structures})  # fmt: skip
    return torch.export.export(_Program(traced), inputs, dynamic_shapes=shapes, strict=False)


def example_batch(elements: list[int], sizes: tuple[int, ...] = (3, 4)) -> Batch:
    """Small zig-zag chains of the model's elements (every atom within 1.5 A of the next): tracing inputs and
    the check structures of an export."""
    records = []
    for s, n in enumerate(sizes):
        numbers = np.array([elements[(s + i) % len(elements)] for i in range(n)])
        positions = np.array([[1.2 * i, 0.35 * (i % 2) + 0.05 * s, 0.1 * ((i * 7 + s) % 3)] for i in range(n)])
        records.append(Record(f"chain/{s}", "export", numbers, positions))
    return collate(records, [], ["export"])


def save_exported(package_path: str | Path, level: str, dtype: str) -> tuple[Path, dict[str, float]]:
    """Export head `level` of the package file at `dtype` ("float32"/"float64"), check it against eager on
    structures it was not traced on, and write it beside the package. Returns (path, max |dE| and |dF|)."""
    from torch._export.serde.serialize import serialize

    package_path = Path(package_path)
    package = load_package(package_path)
    program = export_head(package, level, DTYPES[dtype], example_batch(package.elements))
    model = package.model.to(DTYPES[dtype])
    check = example_batch(package.elements, (5, 2, 6))
    energy, forces = ExportedHead(program.module(), package_path, level, dtype)(model, check)
    ref = model(check, [normalize_level(level)])
    error = {"energy": float((energy - ref.energy[:, 0]).abs().max().detach()),
             "forces": float((forces - ref.forces[:, 0]).abs().max().detach())}  # fmt: skip
    tol = 1e-8 if dtype == "float64" else 1e-3
    if max(error.values()) > tol:
        raise ExportError(f"{package_path}: the exported head differs from eager by {error} (tolerance {tol})")
    art = serialize(program)

    def plain(blob: bytes) -> Any:
        return torch.load(io.BytesIO(blob), weights_only=True) if blob else None

    content = {"format": FORMAT, "format_version": VERSION, "level": normalize_level(level), "dtype": dtype,
               "package_sha256": sha256_file(package_path), "torch_version": str(torch.__version__),
               "program": torch.frombuffer(bytearray(art.exported_program), dtype=torch.uint8),
               "state_dict": plain(art.state_dict), "constants": plain(art.constants),
               "example_inputs": plain(art.example_inputs)}  # fmt: skip
    path = exported_path(package_path, level, dtype)
    with atomic_path(path) as tmp:
        torch.save(content, tmp)
    return path, error


@dataclass
class ExportedHead:
    """A loaded exported head: `__call__(model, batch)` -> (energy (S,) float64, forces (A, 3)). With `uncompiled`
    set, `module` is its torch.compile wrapper; a compilation that fails falls back to it with one warning."""

    module: nn.Module
    path: Path
    level: str
    dtype: str
    uncompiled: nn.Module | None = None

    def __call__(self, model: PolyfidModel, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = _inputs(model, batch)
        if inputs[3].shape[0] == 0:  # no pairs at all (lone atoms): below the program's shape range, eager is exact
            out = model(batch, [self.level])
            return out.energy[:, 0], out.forces[:, 0]
        if self.uncompiled is not None:
            try:
                return self.module(*inputs)
            except Exception as exc:  # inductor codegen bugs surface at the first call
                warnings.warn(f"{self.path}: torch.compile failed ({type(exc).__name__}); running the exported "
                              "program uncompiled", stacklevel=2)  # fmt: skip
                self.module, self.uncompiled = self.uncompiled, None
        return self.module(*inputs)


def load_exported(
    package_path: Path, level: str, dtype: str, compile: bool = False, device: str | torch.device = "cpu"
) -> ExportedHead | None:
    """The exported head beside the package for (level, dtype), or None (no file; a stale, foreign or damaged one
    is skipped with a warning naming it). `compile`: run it through torch.compile (inductor; the first call
    compiles, about a minute on a 2-core CPU)."""
    from torch._export.serde.serialize import SerializedArtifact, deserialize

    path = exported_path(package_path, level, dtype)
    if not path.is_file():
        return None
    try:
        raw = load_weights_only(path)
    except RefusedLoad as exc:
        warnings.warn(f"{path}: unreadable exported head, running eager: {exc.reason}", stacklevel=2)
        return None
    expected = {"format": FORMAT, "level": normalize_level(level), "dtype": dtype,
                "package_sha256": sha256_file(package_path), "torch_version": str(torch.__version__)}  # fmt: skip
    stale = [k for k, v in expected.items() if not isinstance(raw, dict) or raw.get(k) != v]
    if stale:
        warnings.warn(f"{path}: exported for another {stale} than this package and torch, running eager", stacklevel=2)
        return None
    program = bytes(raw["program"].numpy().tobytes())  # torch.export's JSON graph: operators by name
    try:
        loaded = deserialize(SerializedArtifact(program, raw["state_dict"], raw["constants"], raw["example_inputs"]))
    except Exception as exc:  # a damaged graph: never fatal, eager is always there
        warnings.warn(f"{path}: cannot rebuild the exported head, running eager: {exc}", stacklevel=2)
        return None
    if torch.device(device).type != "cpu":  # traced on CPU: constants and device arguments move with the pass
        from torch.export.passes import move_to_device_pass

        loaded = move_to_device_pass(loaded, torch.device(device))
    module = loaded.module()
    if compile:
        return ExportedHead(torch.compile(module, dynamic=True), path, expected["level"], dtype, module)
    return ExportedHead(module, path, expected["level"], dtype)
