from __future__ import annotations

from collections import Counter

import pytest

from polyfid.data_shards.stream.config import StreamConfig
from polyfid.data_shards.stream.pipeline import StreamPlan
from polyfid.data_shards.stream.ray_loader import ray_batches
from polyfid.data_shards.stream.torch_loader import make_dataloader
from tests.data_shards.stream.helpers import batch_ids, check_batch

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_local")]


def config(shards, **kw) -> StreamConfig:
    return StreamConfig(**{"shard_dirs": shards.dirs, "max_atoms": 64, "shuffle_buffer": 50, "seed": 11, **kw})


def test_eval_round_trip(shards, world=2):
    plan = StreamPlan.from_config(config(shards, split="val"))
    seen = Counter()
    for rank in range(world):
        for batch in ray_batches(plan, "eval", rank, world):
            check_batch(batch, shards.records["val"], plan.level_names, plan.dataset_names)
            seen.update(batch.ids)
    assert seen.keys() == shards.records["val"].keys() and set(seen.values()) == {1}


def test_train_matches_torch_path_and_resumes(shards):
    # 4 consumers: ethanol_ccsdt's 8 shards are split between them; molecules' 3 shards are read by every rank
    # (keeping every 4th sample), cycling many times per epoch
    ratios = {"molecules": 1, "ethanol_ccsdt": 1}
    cfg = config(shards, batches_per_epoch=8, datasets=["molecules", "ethanol_ccsdt"], ratios=ratios)
    plan = StreamPlan.from_config(cfg)
    via_ray = batch_ids(ray_batches(plan, "train", rank=3, world_size=4, epoch=1))
    assert len(via_ray) == 8
    assert via_ray == batch_ids(make_dataloader(plan, "train", rank=3, world_size=4, num_workers=0, epoch=1))
    assert batch_ids(ray_batches(plan, "train", rank=3, world_size=4, epoch=1, start_step=5)) == via_ray[5:]
