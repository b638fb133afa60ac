"""The bad-input suite: every user error ends as ONE line `polyfid: error: ...` naming the file, record or key,
exit status 2, no traceback, and nothing written that a later run would trust. One case per row; add rows as new
bad inputs are found (issue 10 listed the first ones; the checkpoint payload case is in
tests/pretrain/test_checkpoint_engine.py, Ray's wrappers in tests/pretrain/test_launch.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from polyfid.cli import main
from tests.corpus import write_flat_ethanol
from tests.finetune.packages import small_package

pytestmark = pytest.mark.usefixtures("ray_local")  # builds use the session's Ray instead of starting their own

DEMO_PRETRAIN = Path(__file__).resolve().parents[1] / "pretrain" / "configs" / "demo.yaml"
LEVELS = {"gfn2-xtb": {"energy": "xtb_gfn2/energy", "forces": "xtb_gfn2/forces", "valid": "xtb_gfn2/ok"}}


def _sources(tmp: Path, path: Path, fmt: str = "generic_h5", **extra) -> Path:
    options = {"numbers": "atomic_numbers", "positions": "positions"} if fmt == "generic_h5" else {}
    levels = LEVELS if fmt == "generic_h5" else {"pbe": {"energy": "energy"}}
    src = {"name": "d", "path": str(path), "format": fmt, "levels": levels, "options": options, **extra}
    out = tmp / "sources.yaml"
    out.write_text(yaml.safe_dump({"sources": [src]}))
    return out


def _ethanol(tmp: Path, edit: Callable[[h5py.File], None] | None = None) -> Path:
    path = write_flat_ethanol(tmp / "ethanol.h5")
    if edit:
        with h5py.File(path, "r+") as f:
            edit(f)
    return path


def _per_row_numbers_with_a_zero(f: h5py.File) -> None:
    numbers = np.tile(f["atomic_numbers"][()], (len(f["positions"]), 1))
    numbers[4, 0] = 0
    del f["atomic_numbers"]
    f["atomic_numbers"] = numbers


def _empty_extxyz(tmp: Path) -> list[str]:
    (tmp / "empty.extxyz").write_text("")
    return ["shards", "build", str(_sources(tmp, tmp / "empty.extxyz", "ase")), "--out", str(tmp / "o")]


def _z0_without_padding(tmp: Path) -> list[str]:
    path = _ethanol(tmp, _per_row_numbers_with_a_zero)
    return ["shards", "build", str(_sources(tmp, path)), "--out", str(tmp / "o"), "--no-progress"]


def _absurd_energy(tmp: Path) -> list[str]:
    path = _ethanol(tmp, lambda f: f["xtb_gfn2/energy"].__setitem__(3, 1e30))
    return ["shards", "build", str(_sources(tmp, path)), "--out", str(tmp / "o"), "--no-progress"]


def _garbage_package(tmp: Path) -> list[str]:
    (tmp / "model.pt").write_bytes(b"not a package")
    return ["evaluate", "--model", str(tmp / "model.pt"), "--data", str(tmp), "--level", "pbe"]


def _settings_typo(tmp: Path) -> list[str]:
    return ["pretrain", str(DEMO_PRETRAIN), "--set", "model.settings.n_featurs=8", "--set", f"run_dir={tmp}"]


def _unparseable_override(tmp: Path) -> list[str]:
    return ["pretrain", str(DEMO_PRETRAIN), "--set", "optim.lr=[", "--set", f"run_dir={tmp}"]


def _binary_config(tmp: Path) -> list[str]:
    (tmp / "c.yaml").write_bytes(b"\x80\x81")
    return ["pretrain", str(tmp / "c.yaml")]


CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "empty extxyz": (_empty_extxyz, "empty.extxyz"),
    "Z=0 without declared padding": (_z0_without_padding, "positions[4]: bad_atomic_number"),
    "energy of 1e30 eV": (_absurd_energy, "positions[3]: implausible_energy"),
    "garbage model package": (_garbage_package, "model.pt: not a readable polyfid model package"),
    "model.settings typo": (_settings_typo, "model.hipnn.settings.n_featurs: Extra inputs are not permitted"),
    "unparseable --set value": (_unparseable_override, "optim.lr: Input should be a valid number"),
    "non-UTF-8 config file": (_binary_config, "c.yaml: not valid YAML"),
}


def _one_error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("polyfid: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_offline_bad_input(case, tmp_path, capsys):
    make, expected = CASES[case]
    line = _one_error_line(capsys, make(tmp_path))
    assert expected in line, line
    assert not (tmp_path / "o" / "manifest.json").exists()  # a failed build never leaves a manifest


@pytest.fixture(scope="module")
def package(demo_shards, tmp_path_factory) -> Path:
    return small_package(demo_shards, ("gfn2-xtb",), tmp_path_factory.mktemp("pkg") / "source.pt")[0]


@pytest.mark.parametrize(
    ("target", "expected"),
    [({"level": "ccsd"}, "target.level 'ccsd' is not in"),
     ({"n_train": 100_000}, "asked for 100000 structures but the train split has")],
)  # fmt: skip
def test_finetune_bad_target(target, expected, package, demo_shards, tmp_path, capsys):
    raw = {"run_dir": str(tmp_path / "run"), "source": str(package), "max_epochs": 1,
           "target": {"shard_dirs": [str(demo_shards)], "level": "mp2/cc-pvdz", "datasets": ["demo_target_ethanol"],
                      "n_train": 40, **target}}  # fmt: skip
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(raw))
    line = _one_error_line(capsys, ["finetune", str(tmp_path / "ft.yaml")])
    assert expected in line, line
    assert not (tmp_path / "run" / "result.json").exists()


def test_edited_manifest(demo_shards, tmp_path, capsys):
    copy = tmp_path / "shards"
    copy.mkdir()
    raw = json.loads((demo_shards / "manifest.json").read_text())
    raw["levels"]["gfn2-xtb"]["e0"]["1"] += 1.0
    (copy / "manifest.json").write_text(json.dumps(raw))
    for argv in (["shards", "inspect", str(copy)], ["shards", "verify", str(copy), "--no-progress"]):
        assert "content_sha256 does not match" in _one_error_line(capsys, argv)
