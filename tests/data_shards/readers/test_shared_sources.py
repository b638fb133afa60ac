"""tests/data_shards/shared_sources.yaml: every shared file as a source; plan and read all of it cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from polyfid.data_shards.readers import get_reader
from polyfid.data_shards.record import Record
from polyfid.data_shards.sources import SourceConfig, load_build_config
from tests.shared_data import SHARED_DATA, shared_path

pytestmark = pytest.mark.shared

YAML = Path(__file__).resolve().parents[1] / "shared_sources.yaml"
RAW = yaml.safe_load(YAML.read_text())["sources"]
EXPECTED = {
    "ani1x_n5": 8,
    "ani2x_diatomics": 5706,
    "comp6_s66x8": 528,
    "spice_n2": 55,
    "sgdml_ethanol_ccsdt": 1000,
    "md17_ethanol": 2000,
    "md17_aspirin": 15,
    "qm9_db": 20,
    "qm9_modelforge": 10,
    "ethanol_mf": 50,
    "ethanol_ccsdt_xtb": 1000,
}


def _param(entry: dict) -> object:
    return pytest.param(entry, id=entry["name"])


def _shared_file(entry: dict) -> Path:
    """The source's file under ../shared/data (skips the test when absent)."""
    return shared_path(str((YAML.parent / entry["path"]).resolve().relative_to(SHARED_DATA.resolve())))


def test_yaml_covers_every_shared_file():
    assert [e["name"] for e in RAW] == list(EXPECTED)
    covered = {(YAML.parent / e["path"]).resolve() for e in RAW}
    if SHARED_DATA.exists():
        data_files = {p.resolve() for p in SHARED_DATA.glob("*/*") if p.is_file() and p.suffix != ".md"}
        assert data_files == covered


def test_load_and_plan_every_source():
    shared_path("public")
    config = load_build_config(YAML)
    assert [s.name for s in config.sources] == list(EXPECTED)
    for source in config.sources:
        chunks = get_reader(source.format).plan(source, config.base_dir)
        assert sum(c.n_structures for c in chunks) == EXPECTED[source.name], source.name


@pytest.mark.parametrize("entry", [_param(e) for e in RAW])
def test_read_every_record(entry):
    _shared_file(entry)
    source = SourceConfig(**entry)
    reader = get_reader(source.format)
    chunks = reader.plan(source, YAML.parent)
    n = 0
    for chunk in chunks:
        for item in reader.read(chunk):
            assert isinstance(item, Record), str(item)
            assert item.labels and set(item.labels) <= set(source.levels)
            n += 1
    assert n == EXPECTED[source.name] == sum(c.n_structures for c in chunks)
