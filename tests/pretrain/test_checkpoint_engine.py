"""Resume never unpickles arbitrary objects: a planted `__reduce__` payload is refused (exit 2, the file named) and
does not run, even when the attacker also rewrote the checksums; a flipped byte is caught by the checksums."""

from __future__ import annotations

import os
import subprocess

import pytest
import torch

from polyfid.pretrain.checkpoint_engine import CheckpointError, safe_load
from polyfid.pretrain.checkpoints import write_checksums
from tests.pretrain.runs import ENV, pretrain_cmd, run, write_config


class Payload:
    """Creates `marker` when unpickled: stands for any code an attacker would run."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_safe_load_refuses_a_payload_and_reads_tensors(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"w": torch.ones(2), "evil": Payload(str(marker))}, tmp_path / "x.pt")
    with pytest.raises(
        CheckpointError, match=r"x.pt: refused to load the checkpoint file: it holds the Python object posix.mkdir"
    ):
        safe_load(str(tmp_path / "x.pt"))
    assert not marker.exists()
    torch.save({"w": torch.ones(2), "n": 3, "s": "a"}, tmp_path / "y.pt")
    assert safe_load(str(tmp_path / "y.pt"))["n"] == 3


def _one_line_exit_2(cmd) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("polyfid: error")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return errors[0]


def test_resume_refuses_planted_payload_and_corruption(demo_shards, tmp_path):
    run_dir = tmp_path / "run"
    config = write_config(run_dir, demo_shards, optim={"max_steps": 10}, schedule={"checkpoint_every": 10})
    run(pretrain_cmd(config))
    folder = run_dir / "checkpoints" / "step-000000010"
    optim = next(folder.rglob("*optim_states.pt"))
    original = optim.read_bytes()
    resume = pretrain_cmd(config, "--set", "optim.max_steps=20")

    marker = tmp_path / "pwned"
    state = torch.load(optim, weights_only=False)  # the test's own file: trusted here
    state["evil"] = Payload(str(marker))
    torch.save(state, optim)
    write_checksums(folder)  # an attacker who can write the run directory can rewrite the checksums too
    line = _one_line_exit_2(resume)
    assert optim.name in line and "refused to load" in line and "posix.mkdir" in line
    assert not marker.exists()

    optim.write_bytes(original)
    write_checksums(folder)
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    optim.write_bytes(bytes(flipped))
    line = _one_line_exit_2(resume)
    assert optim.name in line and "sha256 differs" in line
