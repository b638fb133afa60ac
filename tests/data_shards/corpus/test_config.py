"""Corpus configs: the packaged ones load, nesting and levels are checked, errors are one line with exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyfid.cli import main
from polyfid.core.errors import ConfigError
from polyfid.data_shards.corpus.config import load_corpus_config


@pytest.mark.parametrize("names", [["tiny"], ["full"], ["full", "medium"]])
def test_packaged_configs_load(names: list[str]) -> None:
    config = load_corpus_config(names)
    assert len({p.level for p in config.levels} | {"gfn2-xtb"}) >= 5
    assert all(h.levels for h in config.heldout)


def test_medium_overlays_full() -> None:
    full, medium = load_corpus_config(["full"]), load_corpus_config(["full", "medium"])
    assert medium.md == full.md.model_copy(update={"frames": 72}) and medium.conformers == full.conformers
    assert medium.max_molecules == 60


@pytest.mark.parametrize(
    ("levels", "match"),
    [
        ([{"level": "hf/def2-svp", "per_molecule": 2}, {"level": "mp2/cc-pvdz", "per_molecule": 3}], "nest"),
        ([{"level": "hf/def2-svp", "max_heavy_atoms": 3}, {"level": "mp2/cc-pvdz"}], "nest"),
        ([{"level": "dft/unknown"}], "unknown level"),
        ([{"level": "ccsd(t)/cc-pvdz"}], "no forces"),
        ([{"level": "hf/def2-svp"}, {"level": "hf/def2-svp"}], "twice"),
    ],
)
def test_bad_level_plans_are_refused(tmp_path: Path, levels: list, match: str) -> None:
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"levels": levels}))
    with pytest.raises(ConfigError, match=match):
        load_corpus_config([path])


def test_the_command_reports_a_bad_config_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("levels: [{level: gfn1-xtb}]\nmd: {frames: -1}\n")
    assert main(["shards", "generate-corpus", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "c.yaml" in err and "md.frames" in err
    assert not (tmp_path / "out").exists()


def test_every_corpus_key_is_listed(capsys: pytest.CaptureFixture) -> None:
    assert main(["config", "show", "corpus"]) == 0
    out = capsys.readouterr().out
    for key in ("md.frames", "normal_modes.stiffness_floor_ev_a2", "levels", "heldout", "chunk_size"):
        assert key in out


def _heldout(name: str, smarts: str, scan: dict | None = None) -> dict:
    """An overlay with one held-out target."""
    target = {"name": name, "forbidden_smarts": smarts, "levels": [{"level": "gfn1-xtb"}]}
    return {"heldout": [{**target, "scan": scan} if scan else target]}


ESTER = "[CX3](=O)[OX2][#6]"


@pytest.mark.parametrize(
    ("overlay", "match"),
    [
        ({"molecules": "missing.smi"}, "missing.smi: cannot read"),
        (_heldout("methanol", "[OH]"), "not a 'heldout' molecule"),
        (_heldout("methyl_formate", ESTER, {"kind": "dihedral", "smarts": "C=O"}), "needs more atoms"),
        (_heldout("methyl_formate", ESTER, {"kind": "bond", "smarts": "[Cl]"}), "matches no atoms"),
    ],
)
def test_bad_molecules_and_heldout_targets_stop_before_any_work(tmp_path: Path, overlay: dict, match: str) -> None:
    import yaml

    pytest.importorskip("rdkit")
    from polyfid.data_shards.corpus.run import structure_sets

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"levels": [{"level": "gfn1-xtb"}], **overlay}))
    with pytest.raises(ConfigError, match=match):
        structure_sets(load_corpus_config([path]), tmp_path / "out")
    assert not (tmp_path / "out").exists()
