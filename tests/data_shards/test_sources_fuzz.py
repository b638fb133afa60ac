"""Fuzzing SOURCES.yaml: a mutated file gives a build config or one named error (`ConfigError` / `SourceError`)."""

from __future__ import annotations

import tempfile
from importlib.resources import files
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from polyfid.core.errors import PolyfidError
from polyfid.data_shards.sources import BuildConfig, load_build_config

TEXT = (files("polyfid.data_shards") / "demo_corpus" / "sources.yaml").read_text()


@given(st.lists(st.tuples(st.integers(0, len(TEXT) - 1), st.sampled_from(list(" :-[]{}\n'\"0xa,*&!"))), max_size=5))
def test_mutated_sources_yaml(edits):
    chars = list(TEXT)
    for pos, ch in edits:
        chars[pos] = ch
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sources.yaml"
        path.write_text("".join(chars))
        try:
            cfg = load_build_config(path)
        except PolyfidError as exc:
            assert str(path) in str(exc) or "source" in str(exc)
            return
    assert isinstance(cfg, BuildConfig)
