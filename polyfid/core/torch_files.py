"""Reading torch files without executing code: every `torch.load` in polyfid is `weights_only=True`, and a refusal
is reported in one line that names what was refused."""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch


class RefusedLoad(Exception):
    """`torch.load` failed or refused; `reason` is one line (e.g. the Python object a weights-only load refused)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def load_weights_only(path: str | Path, map_location: Any = None, allowed: Sequence[Any] = ()) -> Any:
    """`torch.load(weights_only=True)` with the `allowed` classes; any failure is a `RefusedLoad`."""
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:
            raise RefusedLoad(
                f"it holds the Python object {found.group(1)} (only tensors and plain data are read)"
            ) from None
        raise RefusedLoad(f"UnpicklingError: {_first_line(exc)}") from None
    except Exception as exc:  # zip/EOF errors of truncated or foreign files
        raise RefusedLoad(f"{type(exc).__name__}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    return text.strip().splitlines()[0] if text.strip() else "no details"
