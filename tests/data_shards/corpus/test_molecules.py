"""The packaged molecule list and its checks; RDKit conformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from polyfid.core.errors import ConfigError
from polyfid.data_shards.corpus.config import MOLECULES, load_corpus_config

pytest.importorskip("rdkit")

from polyfid.data_shards.corpus.molecules import (
    ELEMENTS,
    MAX_HEAVY_ATOMS,
    check_heldout_groups,
    conformers,
    read_molecules,
)


def test_the_packaged_list_is_a_few_hundred_valid_molecules() -> None:
    mols = read_molecules(MOLECULES)
    pretrain = [m for m in mols if m.role == "pretrain"]
    assert len(pretrain) >= 250
    assert {z for m in mols for z in m.numbers} == ELEMENTS
    assert max(m.heavy_atoms for m in mols) <= MAX_HEAVY_ATOMS
    assert sum(m.charge != 0 for m in pretrain) >= 10
    assert sum(m.multiplicity > 1 for m in pretrain) >= 10
    assert {m.multiplicity for m in pretrain} == {1, 2, 3}
    assert len({m.key for m in mols}) == len(mols)


def test_heldout_groups_of_the_full_config_appear_in_no_pretraining_molecule() -> None:
    config = load_corpus_config(["full"])
    assert len(config.heldout) == 3
    check_heldout_groups(read_molecules(MOLECULES), {h.name: h.forbidden_smarts for h in config.heldout})


def test_a_heldout_group_found_in_pretraining_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.smi"
    path.write_text("CC(=O)OC methyl_acetate pretrain\nCOC=O methyl_formate heldout\n")
    with pytest.raises(ConfigError, match="methyl_acetate"):
        check_heldout_groups(read_molecules(path), {"methyl_formate": "[CX3](=O)[OX2][#6]"})


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("C1CC methane pretrain", "cannot parse"),
        ("[Na+] sodium pretrain", "elements"),
        ("CCCCCCCCCC decane pretrain", "heavy atoms"),
        ("C methane train", "expected"),
        ("C#C acetylene pretrain\nC#C ethyne pretrain", "repeats"),
    ],
)
def test_a_bad_line_names_the_file_and_line(tmp_path: Path, line: str, why: str) -> None:
    path = tmp_path / "m.smi"
    path.write_text("# comment\n" + line + "\n")
    with pytest.raises(ConfigError, match=f"m.smi:[23]: .*{why}"):
        read_molecules(path)


def test_charge_and_multiplicity_come_from_the_smiles(tmp_path: Path) -> None:
    path = tmp_path / "m.smi"
    path.write_text("C[NH3+] a pretrain\n[O][O] b pretrain\n[CH3] c pretrain\nCC([O-])=O d pretrain\n")
    assert [(m.charge, m.multiplicity) for m in read_molecules(path)] == [(1, 1), (0, 3), (0, 2), (-1, 1)]


def test_conformers_are_distinct_relaxed_and_seeded() -> None:
    (butanol,) = [m for m in read_molecules(MOLECULES) if m.name == "1-butanol"]
    a, b = conformers(butanol, 3, 5), conformers(butanol, 3, 5)
    assert a.shape == (3, len(butanol.numbers), 3)
    np.testing.assert_array_equal(a, b)
    heavy = np.array(butanol.numbers) > 1
    for i in range(3):
        for j in range(i):
            assert np.abs(a[i, heavy] - a[j, heavy]).max() > 0.1
