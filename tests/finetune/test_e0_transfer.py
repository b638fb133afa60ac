"""E0 that transfers: a head fine-tuned on one molecule keeps the source head's E0 along every composition direction
that molecule leaves undetermined, so it still scores the molecules it never saw about as well as the source head.
The demo corpus' B3LYP subset has 8 molecules; the fine-tune sees one of them (CH3CHO) under a new level name."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import yaml

from polyfid.data_shards.build import build_shards
from polyfid.data_shards.sources import load_build_config
from polyfid.data_shards.stream import StreamConfig, StreamPlan
from polyfid.data_shards.stream.pipeline import record_streams
from polyfid.data_shards.stream.sources import Consumer
from polyfid.data_shards.stream.torch_loader import read_webdataset
from polyfid.finetune.config import load_finetune_config
from polyfid.finetune.train import energy_errors, finetune, load_target
from polyfid.models.package import load_package
from tests.corpus import CORPUS
from tests.finetune.packages import small_package

DFT, NEW, SEEN = "b3lyp/def2-svp", "b3lyp-refit", "CH3CHO"


@pytest.fixture(scope="module")
def one_molecule(tmp_path_factory):
    """Shards of the 20 CH3CHO frames of the B3LYP subset, their B3LYP energies under the new level name."""
    tmp = tmp_path_factory.mktemp("one_molecule")
    frames = [a for a in ase.io.read(CORPUS / "dft_subset.extxyz", ":") if a.info["molecule"] == SEEN]
    ase.io.write(tmp / "one.extxyz", frames)
    sources = {"split": {"val": 0.2, "test": 0.2},
               "sources": [{"name": "one_molecule", "path": str(tmp / "one.extxyz"), "format": "ase",
                            "units": {"energy": "ev", "length": "angstrom"},
                            "levels": {NEW: {"energy": "b3lyp_def2svp_energy"}}}]}  # fmt: skip
    (tmp / "sources.yaml").write_text(yaml.safe_dump(sources))
    build_shards(load_build_config(tmp / "sources.yaml"), tmp / "shards", progress=False)
    return tmp / "shards"


def _unseen(demo_shards):
    """Batches of the B3LYP subset's other 7 molecules (every split) and the B3LYP column."""
    records = []
    for split in ("train", "val", "test"):
        plan = StreamPlan.from_config(StreamConfig(shard_dirs=[demo_shards], datasets=["demo_dft_subset"], split=split))
        streams = record_streams(plan, "eval", read_webdataset, Consumer(), epoch=0)
        records += [r for s in streams.values() for r in s if r.labels.get(DFT) and r.labels[DFT].energy is not None]
    unseen = [r for r in records if sorted(r.numbers.tolist()) != [1, 1, 1, 1, 6, 6, 8]]
    assert len({tuple(sorted(r.numbers.tolist())) for r in unseen}) == 7
    return [plan.collate(unseen)], plan.level_names.index(DFT)


def _finetune(tmp_path, source, shards, **extra):
    raw = {"run_dir": str(tmp_path / "run"), "source": str(source), "max_epochs": 3, "patience": 3, "lr": 1e-3,
           "target": {"shard_dirs": [str(shards)], "level": NEW, "n_train": 8}, **extra}  # fmt: skip
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_finetune_config([tmp_path / "ft.yaml"])
    model = load_package(source).model
    summary = finetune(model, cfg, load_target(cfg))
    return model, summary


def test_a_head_fine_tuned_on_one_molecule_stays_sane_on_the_molecules_it_never_saw(
    demo_shards, one_molecule, tmp_path
):
    source, pretrained = small_package(demo_shards, ("gfn2-xtb", DFT), tmp_path / "source.pt")
    batches, column = _unseen(demo_shards)
    before = energy_errors(pretrained, batches, DFT, column)["energy_mae"]

    model, summary = _finetune(tmp_path, source, one_molecule, head_init=DFT)
    fit = summary["e0_fit"][NEW]
    assert fit["prior"] == DFT and fit["rank"] == 1  # one composition fixes one direction; 2 kept from the prior
    assert len(fit["kept_from_prior"]) == len(model.backbone.elements) - 1
    after = energy_errors(model, batches, NEW, column)["energy_mae"]
    assert after < 2 * before + 1.0, (before, after)  # eV: the source head's error, not the minimum-norm one

    # the same fine-tune with no prior (a fresh head): minimum-norm E0, off by hundreds of eV elsewhere
    model, summary = _finetune(tmp_path / "zero", source, one_molecule)
    assert summary["e0_fit"][NEW]["prior"] == "zero"
    assert energy_errors(model, batches, NEW, column)["energy_mae"] > 100.0

    # a named prior gives the fresh head the same transfer
    model, summary = _finetune(tmp_path / "named", source, one_molecule, e0_prior=DFT)
    assert summary["e0_fit"][NEW]["prior"] == DFT
    assert energy_errors(model, batches, NEW, column)["energy_mae"] < 2 * before + 1.0


def test_an_e0_prior_that_is_not_a_head_is_refused(demo_shards, one_molecule, tmp_path):
    source, _ = small_package(demo_shards, ("gfn2-xtb",), tmp_path / "source.pt")
    with pytest.raises(Exception, match="e0_prior 'mp2' is not a head"):
        _finetune(tmp_path, source, one_molecule, e0_prior="mp2")


def test_the_refit_is_exact_along_the_data_and_keeps_the_prior_elsewhere():
    from polyfid.data_shards.reference_energies import fit_e0

    prior = np.array([-13.6, -1030.0, -2040.0])  # H, C, O
    counts = np.array([[6.0, 2, 1]] * 4)  # ethanol only
    energy = counts @ (prior + np.array([0.1, -0.3, 0.2])) + np.array([0.01, -0.01, 0.02, -0.02])
    fit = fit_e0(counts, energy, prior)
    assert fit.rank == 1
    np.testing.assert_allclose(counts[0] @ fit.e0, energy.mean(), atol=1e-9)  # exact along C2H6O
    for null in fit.null_space:  # untouched along the undetermined directions
        assert null @ (fit.e0 - prior) == pytest.approx(0.0, abs=1e-9)
