"""The committed sample of the measured corpus run: checksums hold, the run was complete, the files read."""

from __future__ import annotations

import json
from pathlib import Path

from polyfid.core.digest import sha256_file
from polyfid.data_shards.sources import load_build_config

SAMPLE = Path(__file__).resolve().parents[3] / "data_shards" / "foundation_corpus"


def test_the_sample_matches_its_checksums_and_the_full_run_was_complete() -> None:
    listing = json.loads((SAMPLE / "sample_manifest.json").read_text())["files"]
    assert {"corpus.h5", "sources.yaml", "targets.yaml", "full_manifest.json", "PROVENANCE.md"} <= set(listing)
    for name, entry in listing.items():
        assert sha256_file(SAMPLE / name) == entry["sha256"], name
    full = json.loads((SAMPLE / "full_manifest.json").read_text())
    assert full["complete"] and not full["this_run"]["failed_tasks"]
    assert full["datasets"]["corpus"]["structures"] > 20_000
    assert sorted(full["datasets"]["corpus"]["levels"]) == sorted(
        ["gfn2-xtb", "gfn1-xtb", "hf/def2-svp", "b3lyp/def2-svp", "mp2/cc-pvdz", "ccsd(t)/cc-pvdz"]
    )


def test_the_sample_sources_read_and_keep_targets_apart() -> None:
    pretrain = load_build_config(SAMPLE / "sources.yaml")
    targets = load_build_config(SAMPLE / "targets.yaml")
    assert sorted(s.name for s in pretrain.sources) == sorted(
        json.loads((SAMPLE / "full_manifest.json").read_text())["tiers"]
    )
    assert all(s.name.startswith("corpus_") and s.options["groups"].endswith("/*") for s in pretrain.sources)
    assert {s.name.split("_", 1)[0] for s in targets.sources} == {"heldout", "scan"}
    assert all((SAMPLE / Path(s.path).name).is_file() for s in [*pretrain.sources, *targets.sources])
