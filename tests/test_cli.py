"""The CLI: every user error is one line naming the file, record or key, with exit status 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from polyfid.cli import main

PACKAGE = Path(__file__).resolve().parent / "models" / "data" / "package_v1.0_hipnn.pt"


def _fails_with_one_line(capsys: pytest.CaptureFixture, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("polyfid: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_empty_extxyz_names_the_file(tmp_path, capsys):
    (tmp_path / "empty.extxyz").write_text("")
    source = {"name": "empty", "path": "empty.extxyz", "format": "ase", "levels": {"pbe": {"energy": "e"}},
              "units": {"energy": "ev", "length": "angstrom"}}  # fmt: skip
    sources = {"sources": [source]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(sources))
    _fails_with_one_line(capsys, ["shards", "build", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o")],
                         "empty.extxyz")  # fmt: skip


def test_truncated_package_names_the_file(tmp_path, capsys, demo_shards):
    bad = tmp_path / "truncated.pt"
    data = PACKAGE.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    argv = ["evaluate", "--model", str(bad), "--data", str(demo_shards), "--level", "gfn2-xtb"]
    _fails_with_one_line(capsys, argv, "truncated.pt")


def test_evaluate_with_an_unknown_head_names_it(capsys, demo_shards):
    argv = ["evaluate", "--model", str(PACKAGE), "--data", str(demo_shards), "--level", "mp2/cc-pvdz"]
    _fails_with_one_line(capsys, argv, "mp2/cc-pvdz", "gfn2-xtb")


def test_finetune_to_a_level_absent_from_the_shards_names_it(tmp_path, capsys, demo_shards):
    config = {"run_dir": str(tmp_path / "run"), "source": str(PACKAGE),
              "target": {"shard_dirs": [str(demo_shards)], "level": "CCSD(T)/CBS"}}  # fmt: skip
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(config))
    _fails_with_one_line(capsys, ["finetune", str(tmp_path / "f.yaml")], "ccsd(t)/cbs", "target.level")


def test_bad_config_key_is_one_line(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"run_dir": "r", "data": {"shard_dirs": ["s"]}}))
    argv = ["pretrain", str(tmp_path / "p.yaml"), "--set", "model.settings.n_featurs=8", "--set", "optim.lr=-1"]
    _fails_with_one_line(capsys, argv, "p.yaml", "n_featurs", "optim.lr")


def test_config_show_lists_every_key_with_default_and_meaning(capsys):
    for schema, keys in (("pretrain", ["model.settings.n_features", "strategy.reptile.inner_steps", "data.levels",
                                       "tracking.registered_model"]),
                         ("finetune", ["target.level", "auxiliary.forces_weight", "head_init"])):  # fmt: skip
        assert main(["config", "show", schema]) == 0
        out = capsys.readouterr().out
        for key in keys:
            assert any(line.startswith(key + " ") for line in out.splitlines()), (schema, key)
