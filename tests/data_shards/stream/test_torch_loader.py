from __future__ import annotations

from collections import Counter

import pytest

from polyfid.data_shards.stream.config import StreamConfig
from polyfid.data_shards.stream.pipeline import StreamPlan
from polyfid.data_shards.stream.torch_loader import make_dataloader
from tests.data_shards.stream.helpers import batch_ids, check_batch

# 3 workers on this 2-core machine is deliberate (odd worker counts exercise the round-robin dealing)
pytestmark = [pytest.mark.filterwarnings("ignore:This DataLoader will create")]


def config(shards, **kw) -> StreamConfig:
    return StreamConfig(**{"shard_dirs": shards.dirs, "max_atoms": 64, "shuffle_buffer": 50, "seed": 5, **kw})


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("world, workers", [(1, 0), (2, 2)])
def test_eval_round_trip(shards, split, world, workers):
    plan = StreamPlan.from_config(config(shards, split=split, max_structures=6))
    seen = Counter()
    for rank in range(world):
        for batch in make_dataloader(plan, "eval", rank, world, workers):
            assert batch.n_atoms_total <= 64 and batch.n_structures <= 6
            check_batch(batch, shards.records[split], plan.level_names, plan.dataset_names)
            seen.update(batch.ids)
    assert seen.keys() == shards.records[split].keys() and set(seen.values()) == {1}


@pytest.mark.parametrize("world, workers", [(1, 0), (2, 2), (3, 3)])
def test_train_epoch_length(shards, world, workers):
    cfg = config(shards, batches_per_epoch=8)
    for rank in range(world):
        assert len(list(make_dataloader(cfg, "train", rank, world, workers, epoch=1))) == 8


@pytest.mark.parametrize("start_step", [0, 3, 4])
def test_resume_through_workers(shards, start_step):
    plan = StreamPlan.from_config(config(shards, batches_per_epoch=9))
    full = batch_ids(make_dataloader(plan, "train", rank=1, world_size=2, num_workers=3, epoch=2))
    single = batch_ids(
        make_dataloader(plan, "train", rank=1, world_size=2, num_workers=3, epoch=2, start_step=start_step)
    )
    assert len(full) == 9 and single == full[start_step:]


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
@pytest.mark.parametrize("reader", ["webdataset", "ray"])
def test_unreadable_shard_names_the_file(tmp_path, damage, reader):
    from polyfid.data_shards.errors import ShardCorruptedError
    from polyfid.data_shards.shard_writer import write_shard
    from polyfid.data_shards.stream.catalog import ShardRef
    from polyfid.data_shards.stream.ray_loader import read_ray
    from polyfid.data_shards.stream.torch_loader import read_webdataset
    from tests.data_shards.test_shard_writer import _records

    path = tmp_path / "s.tar"
    info = write_shard(path, tmp_path, _records(20))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100] if damage == "truncate" else b"\x00garbage" * 200)
    read = {"webdataset": read_webdataset, "ray": read_ray}[reader]
    with pytest.raises(ShardCorruptedError, match=str(path)):
        read(ShardRef(str(path), 20, 60, info.sha256))
