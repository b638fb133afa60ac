"""Fuzzing the config loader: any YAML file and any `--set KEY=VALUE` give a validated config or one `ConfigError`
line naming the file or the override, never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from polyfid.core.errors import ConfigError
from polyfid.pretrain.config import PretrainConfig, load_config

DEMO = Path(__file__).resolve().parents[2] / "pretrain" / "configs" / "demo.yaml"
KEYS = ["optim.lr", "optim.max_steps", "model.backbone", "model.settings.n_features", "data.max_atoms",
        "seed", "strategy.kind", "deepspeed.zero_stage", "scaling.num_workers", "run_dir", "data", "model", "a..b",
        ".", ""]  # fmt: skip
RAW = st.text(alphabet=st.sampled_from(list("ab01-.e[]{}:,'\" \n\t!&*#|>%@`~=")), max_size=20)


def _loads_or_names(paths: list[Path], overrides: list[str]) -> None:
    try:
        cfg = load_config(paths, overrides)
    except ConfigError as exc:
        assert "\n" not in str(exc).strip() or "invalid config" in str(exc)
        return
    assert isinstance(cfg, PretrainConfig)


@given(st.lists(st.tuples(st.sampled_from(KEYS), RAW | st.sampled_from(["1e-3", "null", "[1, 2]", "-5", "hipnn"])),
                max_size=3))  # fmt: skip
def test_overrides(pairs):
    _loads_or_names([DEMO], [f"{key}={value}" for key, value in pairs])


@given(st.binary(max_size=200) | RAW.map(str.encode))
def test_config_files(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_bytes(data)
        _loads_or_names([DEMO, path], [])
