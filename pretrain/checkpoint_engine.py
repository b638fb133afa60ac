"""How DeepSpeed's checkpoint files are read: `torch.load(weights_only=True)` with an explicit allowlist.

DeepSpeed's own engine loads with `weights_only=False`, so a `__reduce__` payload planted in a run directory (often
on a shared filesystem) would run on resume. Here only tensors, plain containers and the few DeepSpeed value
classes its optimiser state holds can be rebuilt; anything else is refused with the file and the global named.
"""

from __future__ import annotations

from typing import Any

from polyfid.core.errors import PolyfidError
from polyfid.core.torch_files import RefusedLoad, load_weights_only


class CheckpointError(PolyfidError):
    """A checkpoint that cannot be trusted or read: corrupted, incomplete, or holding non-data objects."""


def _allowed_globals() -> list[Any]:
    """DeepSpeed classes found in ZeRO 0-2 optimiser state (fp32 and bf16): value objects with no code on load."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def safe_load(path: str, map_location: Any = None) -> Any:
    """`torch.load` that never unpickles arbitrary objects; a refusal is a `CheckpointError` naming the file."""
    try:
        return load_weights_only(path, map_location, _allowed_globals())
    except RefusedLoad as exc:
        raise CheckpointError(f"{path}: refused to load the checkpoint file: {exc.reason}") from None


def install_safe_loading(engine: Any) -> None:
    """Make `engine.load_checkpoint` read every file through :func:`safe_load`."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class SafeTorchCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location: Any = None) -> Any:
            return safe_load(path, map_location)

    if type(engine.checkpoint_engine) is not TorchCheckpointEngine:
        raise CheckpointError(
            f"deepspeed checkpoint engine {type(engine.checkpoint_engine).__name__}: polyfid can only guard "
            "DeepSpeed's torch checkpoint engine (remove the checkpoint engine setting from deepspeed.extra)"
        )
    engine.checkpoint_engine = SafeTorchCheckpointEngine(engine._config)
