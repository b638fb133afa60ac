"""The project's own demo corpus end to end, no ../shared needed: sources -> Ray build -> shards -> both
streaming paths give back exactly the records the readers produced (forces at their float32 storage precision)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from polyfid.data_shards.build import build_shards, plan_chunks
from polyfid.data_shards.manifest import Manifest
from polyfid.data_shards.readers import get_reader
from polyfid.data_shards.record import LevelLabels, Record
from polyfid.data_shards.sources import load_build_config
from polyfid.data_shards.splits import split_of
from polyfid.data_shards.stream import StreamConfig, StreamPlan, make_dataloader
from polyfid.data_shards.stream.ray_loader import ray_batches
from tests.data_shards.stream.helpers import check_batch

DEMO_SOURCES = Path(__file__).resolve().parents[2] / "data_shards" / "demo_corpus" / "sources.yaml"
DEMO_LEVELS = {"gfn2-xtb", "b3lyp/def2-svp", "mp2/cc-pvdz", "ccsd(t)/cc-pvdz"}

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_local")]


def _stored(rec: Record) -> Record:
    """The record as shards store it: forces in float32."""
    labels = {
        lv: LevelLabels(lab.energy, None if lab.forces is None else lab.forces.astype(np.float32))
        for lv, lab in rec.labels.items()
    }
    return Record(
        rec.id, rec.dataset, rec.numbers, rec.positions, labels, rec.cell, rec.pbc, rec.charge, rec.multiplicity
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, ray_local) -> tuple[Path, dict[str, Record]]:
    config = load_build_config(DEMO_SOURCES)
    records, gaps = {}, 0
    for chunk in plan_chunks(config):
        for rec in get_reader(chunk.source.format).read(chunk):
            assert isinstance(rec, Record), str(rec)
            if split_of(rec.id, rec.numbers, chunk.source.split or config.split) is None:
                gaps += 1  # a frame at a block boundary between splits
            else:
                records[rec.id] = _stored(rec)
    out = tmp_path_factory.mktemp("demo") / "shards"
    summary = build_shards(config, out, progress=False)
    assert gaps > 0 and summary.dropped_by_reason == {"split_gap": gaps} and summary.n_written == len(records)
    return out, records


def test_demo_corpus_has_three_datasets_two_formats_four_levels(demo):
    out, records = demo
    manifest = Manifest.load(out)
    config = load_build_config(DEMO_SOURCES)
    assert len(manifest.datasets) >= 3 and len({s.format for s in config.sources}) >= 2
    assert set(manifest.level_names) >= DEMO_LEVELS
    for level in DEMO_LEVELS:
        stats = manifest.levels[level]
        assert stats.n_energy > 0 and set(stats.e0) <= {"1", "6", "7", "8"}
        assert stats.residual_per_atom_std < 1.0  # eV/atom: E0 removes the absolute energy scale
    energies = Counter(lv for r in records.values() for lv, lab in r.labels.items() if lab.energy is not None)
    counted = Counter()
    for shard in manifest.shards:
        counted.update(shard.energy_counts)
    assert counted == energies
    # the high-level target set keeps forces for held-out scoring
    assert any(lab.forces is not None for r in records.values() for lv, lab in r.labels.items() if lv == "mp2/cc-pvdz")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_both_streaming_paths_return_the_records(demo, split):
    out, records = demo
    plan = StreamPlan.from_config(StreamConfig(shard_dirs=[out], split=split, max_atoms=200))
    cfg = load_build_config(DEMO_SOURCES)
    rule = {src.name: src.split or cfg.split for src in cfg.sources}
    expected = sorted(rid for rid, rec in records.items() if split_of(rid, rec.numbers, rule[rec.dataset]) == split)
    for batches in (make_dataloader(plan, "eval"), ray_batches(plan, "eval")):
        seen = []
        for batch in batches:
            check_batch(batch, records, plan.level_names, plan.dataset_names)
            seen.extend(batch.ids)
        assert sorted(seen) == expected


def _train_loop(config: dict) -> None:
    """A Ray Train worker streaming its rank's share through Ray Data, with a collective per batch."""
    import ray.train
    import torch
    import torch.distributed as dist

    ctx = ray.train.get_context()
    plan = StreamPlan.from_config(StreamConfig(shard_dirs=[config["shards"]], max_atoms=128, seed=5))
    n_batches = atoms = 0
    for batch in ray_batches(plan, "train", ctx.get_world_rank(), ctx.get_world_size(), epoch=1):
        total = torch.tensor([batch.n_atoms_total])
        dist.all_reduce(total)  # would hang if one rank had fewer batches
        n_batches, atoms = n_batches + 1, atoms + int(total)
    expected = plan.batches_per_epoch(ctx.get_world_size())
    Path(config["out"], f"rank{ctx.get_world_rank()}.json").write_text(json.dumps([n_batches, expected, atoms]))


def test_ray_train_workers_get_equal_batch_counts(demo, tmp_path: Path, monkeypatch):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"shards": str(demo[0]), "out": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(name="stream", storage_path=str(tmp_path)),
    )
    trainer.fit()
    counts = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert counts[0] == counts[1] and counts[0][0] == counts[0][1] > 10  # same batches, same total atoms
