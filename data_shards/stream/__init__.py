"""Streaming shard folders into training as flat-graph batches (torch DataLoader or Ray Data).

Training code: `plan = StreamPlan.from_config(StreamConfig(...))` once (its `level_names` / `dataset_names`
are the batch axes), then per epoch `make_dataloader(plan, "train", rank, world_size, num_workers, epoch,
start_step)`, or
`polyfid.data_shards.stream.ray_loader.ray_batches(plan, "train", rank, world_size, epoch, start_step)`.
"""

from polyfid.data_shards.stream.batch import Batch, collate
from polyfid.data_shards.stream.config import Mode, StreamConfig, StreamSettings
from polyfid.data_shards.stream.packing import OversizeRecordError
from polyfid.data_shards.stream.pipeline import StreamPlan
from polyfid.data_shards.stream.torch_loader import make_dataloader

__all__ = [
    "Batch",
    "Mode",
    "OversizeRecordError",
    "StreamConfig",
    "StreamPlan",
    "StreamSettings",
    "collate",
    "make_dataloader",
]
