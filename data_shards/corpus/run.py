"""The corpus driver: plan every chunk, skip the finished ones, run the rest as Ray tasks (sampling first, then
the labels of each molecule as soon as its structures exist), write each result as a checksummed chunk, then
assemble the corpus files. Killed at any point, a rerun recomputes only unfinished chunks."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from polyfid.core.errors import ConfigError
from polyfid.data_shards.build import ray_session
from polyfid.data_shards.corpus.chunks import chunk_digest, content_key, load_chunk, save_chunk
from polyfid.data_shards.corpus.config import CorpusConfig, LevelPlan
from polyfid.data_shards.corpus.molecules import Molecule, check_heldout_groups, match_atoms, read_molecules
from polyfid.data_shards.corpus.plan import LabelChunk, label_chunks
from polyfid.data_shards.corpus.tasks import label_task, sample_task, scan_task
from polyfid.data_shards.qm import LEVELS

SAMPLED_LEVEL = "gfn2-xtb"  # the level the geometries are sampled with: its labels come with them


@dataclass
class StructureSet:
    """One molecule's structures (sampled, or a held-out scan) and the chunk files of their labels."""

    molecule: Molecule
    kind: str  # "sampled" or "scan"
    plans: tuple[LevelPlan, ...]
    geometry: Path
    arrays: dict[str, np.ndarray] | None = None
    labels: dict[str, list[tuple[LabelChunk, Path]]] = field(default_factory=dict)


@dataclass
class CorpusRun:
    """What a run did: counts of chunks computed and reused, and the wall time."""

    out: Path
    sets: list[StructureSet]
    computed: Counter = field(default_factory=Counter)
    reused: Counter = field(default_factory=Counter)
    failed_tasks: list[str] = field(default_factory=list)
    seconds: float = 0.0


def structure_sets(config: CorpusConfig, out: Path) -> list[StructureSet]:
    """Every structure set the config asks for, with the path of its geometry chunk."""
    molecules = read_molecules(config.molecules)
    check_heldout_groups(molecules, {h.name: h.forbidden_smarts for h in config.heldout})
    pretrain = [m for m in molecules if m.role == "pretrain"]
    if config.max_molecules is not None and config.max_molecules < len(pretrain):  # evenly spread over the list
        keep = np.unique(np.linspace(0, len(pretrain) - 1, config.max_molecules).round().astype(int))
        pretrain = [pretrain[i] for i in keep]
    by_name = {m.name: m for m in molecules}
    sampling = content_key(config.seed, config.conformers, config.md.model_dump(), config.normal_modes.model_dump())
    sets = [_sampled(m, config.levels, sampling, out) for m in pretrain]
    for h in config.heldout:
        m = by_name[h.name]
        sets.append(_sampled(m, h.levels, sampling, out))
        if h.scan is not None:
            atoms = match_atoms(m, h.scan.smarts)  # a bad SMARTS stops the run here, not in a task
            if len(atoms) < (4 if h.scan.kind == "dihedral" else 2):
                raise ConfigError(f"held-out {h.name}: a {h.scan.kind} scan needs more atoms than {h.scan.smarts!r}")
            plans = tuple(LevelPlan(level=lv, forces=LEVELS[lv].forces) for lv in h.scan_levels)
            key = content_key(config.seed, h.scan.model_dump())
            sets.append(StructureSet(m, "scan", plans, out / "chunks" / "scan" / m.key / f"geometry-{key}.npz"))
    return sets


def _sampled(m: Molecule, plans: tuple[LevelPlan, ...], key: str, out: Path) -> StructureSet:
    plans = tuple(p for p in plans if p.level != SAMPLED_LEVEL)  # the sampling computes it on every structure
    return StructureSet(m, "sampled", plans, out / "chunks" / "sampled" / m.key / f"geometry-{key}.npz")


def _label_path(s: StructureSet, chunk: LabelChunk, geometry_digest: str) -> Path:
    key = content_key(geometry_digest, chunk.level, chunk.forces, list(chunk.indices))
    return s.geometry.parent / f"{LEVELS[chunk.level].key}-{chunk.block:04d}-{key}.npz"


def generate_corpus(config: CorpusConfig, out: Path, address: str | None = None, progress: bool = True) -> CorpusRun:
    """Compute every missing chunk of the corpus into out/chunks and assemble the corpus files in `out`."""
    import ray

    from polyfid.data_shards.corpus.assemble import assemble

    t0 = time.time()
    out = Path(out)
    sets = structure_sets(config, out)
    run = CorpusRun(out=out, sets=sets)
    held = {h.name: h for h in config.heldout}
    with ray_session(address):
        sample = ray.remote(num_cpus=1, max_retries=1)(sample_task)
        scan = ray.remote(num_cpus=1, max_retries=1)(scan_task)
        labels = ray.remote(num_cpus=1, max_retries=1)(label_task)
        pending: dict[Any, tuple[str, StructureSet, Any]] = {}
        bar = tqdm(desc="corpus chunks", unit="chunk", disable=not progress, mininterval=5)

        def submit_labels(s: StructureSet) -> None:
            n = len(s.arrays["positions"])
            digest = chunk_digest(s.geometry)  # once per set: every label chunk's name depends on it
            for chunk in label_chunks(s.molecule, s.kind, n, s.plans, config.seed, config.chunk_size):
                path = _label_path(s, chunk, digest)
                s.labels.setdefault(chunk.level, []).append((chunk, path))
                if load_chunk(path) is not None:
                    run.reused["labels"] += 1
                    continue
                positions = s.arrays["positions"][list(chunk.indices)]
                ref = labels.remote(chunk.level, s.molecule, positions, chunk.forces, config.timeout_s)
                pending[ref] = ("labels", s, (chunk, path))
                bar.total = (bar.total or 0) + 1

        for s in sets:
            s.arrays = load_chunk(s.geometry)
            if s.arrays is not None:
                run.reused[s.kind] += 1
                submit_labels(s)
                continue
            ref = (
                sample.remote(s.molecule, config)
                if s.kind == "sampled"
                else scan.remote(s.molecule, held[s.molecule.name].scan, config)
            )
            pending[ref] = (s.kind, s, None)
            bar.total = (bar.total or 0) + 1
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            kind, s, extra = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # the task itself died (out of memory, node lost): the chunk stays unfinished
                run.failed_tasks.append(f"{kind} {s.molecule.name}: {type(exc).__name__}: {exc}"[:300])
                bar.update(1)
                continue
            bar.update(1)
            run.computed[kind] += 1
            if kind == "labels":
                save_chunk(extra[1], result)
            elif "error" in result:
                run.failed_tasks.append(f"{kind} {s.molecule.name}: {result['error']}")
            else:
                save_chunk(s.geometry, result)
                s.arrays = load_chunk(s.geometry)
                submit_labels(s)
        bar.close()
    run.seconds = time.time() - t0
    assemble(run, config)
    return run
