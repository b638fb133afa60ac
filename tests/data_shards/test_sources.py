"""SOURCES.yaml validation: clear errors naming the file, relative paths, record-id file names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from polyfid.core.errors import ConfigError
from polyfid.data_shards.errors import SourceError
from polyfid.data_shards.sources import SourceConfig, load_build_config

LEVELS = {"wB97X/6-31G*": {"energy": "e"}}


def _write(tmp_path: Path, sources: list[dict]) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": sources}))
    return path


def _src(**kw) -> dict:
    return {"name": "a", "path": "x.h5", "format": "generic_h5", "levels": LEVELS, **kw}


def test_relative_paths_resolve_against_the_yaml_folder_and_levels_are_normalised(tmp_path: Path):
    cfg = load_build_config(_write(tmp_path, [_src()]))
    assert cfg.sources[0].path == str(tmp_path / "x.h5")
    assert list(cfg.sources[0].levels) == ["wb97x/6-31g*"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (_src(format="xyz"), "format"),
        (_src(units={"energy": "furlong"}), "furlong"),
        (_src(levels={"a": {"forces": "f", "gradient": "g"}}), "either 'forces' or 'gradient'"),
        (_src(levels={}), "at least one level"),
        (_src(levels={"A": {"energy": "e"}, "a ": {"energy": "f"}}), "collide"),
        (_src(name="a/b"), "dataset name"),
        (_src(extra_key=1), "extra_key"),
    ],
)
def test_bad_configs_name_the_file_and_field(tmp_path: Path, source: dict, message: str):
    path = _write(tmp_path, [source])
    with pytest.raises(ConfigError, match=message) as err:
        load_build_config(path)
    assert str(path) in str(err.value)


def test_duplicate_dataset_names_and_missing_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="duplicate dataset names"):
        load_build_config(_write(tmp_path, [_src(), _src()]))
    cfg = load_build_config(_write(tmp_path, [_src(path="nothing-*.h5")]))
    with pytest.raises(SourceError, match="no file matches"):
        cfg.sources[0].files(cfg.base_dir)
    with pytest.raises(SourceError, match="cannot read config"):
        load_build_config(tmp_path / "absent.yaml")


def test_record_name_is_unique_below_the_glob_prefix(tmp_path: Path):
    globbed = SourceConfig(name="a", path=str(tmp_path / "*" / "train.h5"), format="generic_h5", levels=LEVELS)
    assert globbed.record_name(tmp_path / "run1" / "train.h5") == "run1/train.h5"
    plain = SourceConfig(name="a", path=str(tmp_path / "train.h5"), format="generic_h5", levels=LEVELS)
    assert plain.record_name(tmp_path / "train.h5") == "train.h5"
