"""Model package: round trip, weights_only loading, an older committed package, version and corruption errors.

Regenerate the committed package (only when the format changes in a new minor/major; keep the old file's test):
``.venv/bin/python -m tests.models.test_package`` writes tests/models/data/package_v1.0_hipnn.{pt,json}.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from polyfid.data_shards.record import LevelLabels, Record
from polyfid.data_shards.reference_energies import accumulate
from polyfid.data_shards.stream.batch import collate
from polyfid.models import (
    HipHop,
    HipHopConfig,
    Hipnn,
    HipnnConfig,
    HipnnTS,
    HipnnTSConfig,
    UnknownElementError,
    build_model,
)
from polyfid.models.package import (
    PACKAGE_FORMAT,
    PackageError,
    PackageVersionError,
    load_package,
    save_package,
)
from polyfid.models.registry import BACKBONES, UnknownBackboneError
from polyfid.models.testing.structures import demo_records, record

DATA = Path(__file__).resolve().parent / "data"
PACKAGE_V1_0 = DATA / "package_v1.0_hipnn.pt"
EXPECTED_V1_0 = DATA / "package_v1.0_hipnn.json"
DFT_SUBSET = Path(__file__).resolve().parents[2] / "data_shards" / "demo_corpus" / "dft_subset.extxyz"
LEVELS = ["b3lyp/def2-svp", "gfn2-xtb"]  # sorted: the batch level axis and the head order
# md_xtb frames that are not in the dft subset (which holds frames 0, 15/16, 31, ...): held out from training
EXPECTED_FRAMES = (("CH3OH", 7), ("HCOOH", 150))


@lru_cache(maxsize=1)
def dft_records() -> tuple[Record, ...]:
    """The 160 demo-corpus frames labelled at both GFN2-xTB and B3LYP/def2-SVP (energies and forces)."""
    from ase.io import read

    out = []
    for k, atoms in enumerate(read(DFT_SUBSET, index=":")):
        labels = {
            "gfn2-xtb": LevelLabels(float(atoms.info["gfn2_xtb_energy"]), atoms.arrays["gfn2_xtb_forces"].copy()),
            "b3lyp/def2-svp": LevelLabels(
                float(atoms.info["b3lyp_def2svp_energy"]), atoms.arrays["b3lyp_def2svp_forces"].copy()
            ),
        }
        rid = f"{atoms.info['molecule']}/{int(atoms.info['md_frame'])}/{k}"
        out.append(Record(rid, "dft", atoms.numbers.astype(np.int64), atoms.positions.copy(), labels))
    return tuple(out)


def train_tiny_hipnn(steps: int = 1500, seed: int = 0):
    """A tiny HIP-NN (8 features) with both demo levels as heads, trained on the dft subset (20-130 s)."""
    torch.manual_seed(seed)
    records = list(dft_records())
    stats = {name: acc.fit(["dft"]) for name, acc in sorted(accumulate(records).items())}
    config = HipnnConfig(
        elements=[1, 6, 7, 8], n_features=8, n_sensitivities=8, n_interactions=2, n_atom_layers=1, cutoff=5.0
    )
    model = build_model(Hipnn(config), {name: stats[name] for name in LEVELS})
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = collate([records[k] for k in torch.randperm(len(records), generator=g)[:32].tolist()], LEVELS, ["dft"])
        out = model(batch, LEVELS)
        e_err = (out.energy - batch.energy) / batch.n_atoms[:, None]
        loss = 10 * e_err.pow(2).mean() + (out.forces - batch.forces).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval(), stats


def expected_records() -> list[Record]:
    return [next(r for r in demo_records((frame,)) if r.id == f"{name}/{frame}") for name, frame in EXPECTED_FRAMES]


def predict_records(model, records: list[Record]) -> dict:
    batch = collate(records, LEVELS, ["md"])
    with torch.no_grad():
        out = model(batch, LEVELS)
    bounds = np.concatenate(([0], np.cumsum(batch.n_atoms.numpy())))
    return {
        "heads": out.heads,
        "structures": [
            {
                "id": rec.id,
                "numbers": rec.numbers.tolist(),
                "positions": rec.positions.tolist(),
                "energy": {h: float(out.energy[i, j]) for j, h in enumerate(out.heads)},
                "forces": {
                    h: out.forces[bounds[i] : bounds[i + 1], j].double().tolist() for j, h in enumerate(out.heads)
                },
                "label_gfn2-xtb": {
                    "energy": rec.labels["gfn2-xtb"].energy,
                    "forces": rec.labels["gfn2-xtb"].forces.tolist(),
                },
            }
            for i, rec in enumerate(records)
        ],
    }


def make_reference_package(folder: Path = DATA) -> None:
    """Train the tiny model and write the committed package plus its expected outputs (JSON)."""
    t0 = time.perf_counter()
    model, stats = train_tiny_hipnn()
    provenance = {
        "data": "data_shards/demo_corpus/dft_subset.extxyz (160 frames, gfn2-xtb + b3lyp/def2-svp E+F)",
        "training": "tests/pretrain/test_package.py::train_tiny_hipnn(steps=1500, seed=0)",
        "e0": {name: s.e0 for name, s in stats.items()},
    }
    save_package(folder / PACKAGE_V1_0.name, model, provenance=provenance)
    expected = predict_records(model, expected_records())
    expected["format_version"] = PACKAGE_FORMAT
    (folder / EXPECTED_V1_0.name).write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {folder / PACKAGE_V1_0.name} in {time.perf_counter() - t0:.1f} s")


# -- tests ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    config = HipnnConfig(elements=[1, 6, 7, 8], n_features=8, n_sensitivities=4, n_interactions=2, n_atom_layers=1)
    return build_model(Hipnn(config), {name: None for name in LEVELS}).eval()


def test_round_trip_and_weights_only(tmp_path, tiny_model):
    path = save_package(tmp_path / "m.pt", tiny_model, provenance={"manifest": "abc123", "config": {"lr": 1e-3}})
    raw = torch.load(path, weights_only=True)  # plain containers + tensors only
    assert raw["format_version"] == PACKAGE_FORMAT and raw["heads"] == LEVELS
    assert raw["backbone"]["kind"] == "hipnn" and raw["backbone"]["config"]["n_features"] == 8
    assert raw["units"]["energy"] == "eV" and raw["units"]["length"] == "Angstrom"
    assert raw["provenance"]["manifest"] == "abc123" and "git_commit" in raw["provenance"]
    assert raw["state_dict"]["heads.heads.0.e0"].dtype == torch.float64
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file
    loaded = load_package(path)
    assert loaded.heads == LEVELS and loaded.elements == [1, 6, 7, 8] and loaded.cutoff == 5.5
    assert not loaded.model.training
    batch = collate(expected_records(), LEVELS, ["md"])
    a, b = tiny_model(batch, LEVELS), loaded.model(batch, LEVELS)
    assert torch.equal(a.energy, b.energy) and torch.equal(a.forces, b.forces)


@pytest.mark.parametrize(
    ("kind", "make"),
    [
        ("hipnn_ts", lambda c: HipnnTS(HipnnTSConfig(**c, l_max=2))),
        ("hiphop", lambda c: HipHop(HipHopConfig(**c, n_max=3, l_max=2, group_norm=True))),
    ],
)
def test_tensor_backbones_round_trip(tmp_path, kind, make):
    torch.manual_seed(0)
    config = dict(elements=[1, 6, 7, 8], n_features=8, n_sensitivities=4, n_interactions=2, n_atom_layers=1)
    model = build_model(make(config), {name: None for name in LEVELS}).eval()
    loaded = load_package(save_package(tmp_path / "m.pt", model, provenance={}))
    assert loaded.metadata["backbone"]["kind"] == kind and type(loaded.model.backbone) is type(model.backbone)
    batch = collate(expected_records(), LEVELS, ["md"])
    a, b = model(batch, LEVELS), loaded.model(batch, LEVELS)
    assert torch.equal(a.energy, b.energy) and torch.equal(a.forces, b.forces)


def test_caller_git_commit_kept_and_provenance_must_be_plain(tmp_path, tiny_model):
    path = save_package(tmp_path / "m.pt", tiny_model, provenance={"git_commit": "given"})
    assert load_package(path).metadata["provenance"]["git_commit"] == "given"
    with pytest.raises(TypeError, match="provenance must be plain data"):
        save_package(tmp_path / "bad.pt", tiny_model, provenance={"obj": object()})
    assert not (tmp_path / "bad.pt").exists()


def test_committed_v1_0_package_predicts_recorded_outputs():
    """A package written by polyfid format 1.0 keeps loading and predicting the same energies and forces."""
    loaded = load_package(PACKAGE_V1_0)
    expected = json.loads(EXPECTED_V1_0.read_text())
    assert loaded.format_version == "1.0" and loaded.heads == expected["heads"] == LEVELS
    records = [record(s["numbers"], np.array(s["positions"]), rid=s["id"]) for s in expected["structures"]]
    with torch.no_grad():
        out = loaded.model(collate(records, LEVELS, ["md"]), LEVELS)
    start = 0
    for i, s in enumerate(expected["structures"]):
        n = len(s["numbers"])
        for j, h in enumerate(LEVELS):
            assert float(out.energy[i, j]) == pytest.approx(s["energy"][h], abs=1e-5)
            np.testing.assert_allclose(out.forces[start : start + n, j].double().numpy(), s["forces"][h], atol=1e-5)
        # the model is trained: its GFN2-xTB energies/forces are near the labels of these held-out frames
        label = s["label_gfn2-xtb"]
        assert abs(s["energy"]["gfn2-xtb"] - label["energy"]) / n < 0.05  # eV/atom
        f_err = np.abs(np.array(s["forces"]["gfn2-xtb"]) - np.array(label["forces"])).mean()
        assert f_err < 0.4 * np.abs(label["forces"]).mean(), f_err
        start += n


def test_unknown_element_through_loaded_package():
    loaded = load_package(PACKAGE_V1_0)
    silicon = record([14, 1], np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]]))
    with pytest.raises(UnknownElementError, match=r"\[14\].*\[1, 6, 7, 8\]"):
        loaded.model(collate([silicon], LEVELS, ["md"]), ["gfn2-xtb"])


def _rewrite(src: Path, dst: Path, **changes) -> Path:
    raw = torch.load(src, weights_only=True)
    for k, v in changes.items():
        if v is None:
            raw.pop(k)
        else:
            raw[k] = v
    torch.save(raw, dst)
    return dst


def test_version_rules(tmp_path, tiny_model):
    src = save_package(tmp_path / "m.pt", tiny_model, provenance={})
    newer_minor = _rewrite(src, tmp_path / "newer.pt", format_version="1.7", future_field={"x": 1})
    loaded = load_package(newer_minor)
    assert loaded.extra == {"future_field": {"x": 1}}
    with pytest.raises(PackageVersionError, match=r"newer.*upgrade"):
        load_package(_rewrite(src, tmp_path / "newer_missing.pt", format_version="1.9", units=None))
    other_major = _rewrite(src, tmp_path / "major.pt", format_version="2.0")
    with pytest.raises(PackageVersionError, match=r"major\.pt: package format 2\.0.*reads format 1\.x"):
        load_package(other_major)


def test_truncated_corrupted_and_foreign_files(tmp_path, tiny_model):
    data = save_package(tmp_path / "m.pt", tiny_model, provenance={}).read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(PackageError, match=r"truncated\.pt: not a readable polyfid model package"):
        load_package(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a package" * 10)
    with pytest.raises(PackageError, match=r"garbage\.pt"):
        load_package(garbage)
    foreign = tmp_path / "state_dict.pt"
    torch.save(tiny_model.state_dict(), foreign)  # a bare state_dict is not a package
    with pytest.raises(PackageError, match=r"state_dict\.pt: not a polyfid model package"):
        load_package(foreign)
    with pytest.raises(PackageError, match=r"missing\.pt"):
        load_package(tmp_path / "missing.pt")


def test_unknown_backbone_kind(tmp_path, tiny_model):
    src = save_package(tmp_path / "m.pt", tiny_model, provenance={})
    bad = _rewrite(src, tmp_path / "kind.pt", backbone={"kind": "nope", "config": {}})
    with pytest.raises(PackageError, match=r"kind\.pt.*'nope' is not known"):
        load_package(bad)
    assert "hipnn" in BACKBONES

    class Unregistered(Hipnn):
        pass

    model = build_model(Unregistered(tiny_model.backbone.config), {"gfn2-xtb": None})
    with pytest.raises(UnknownBackboneError, match="Unregistered is not registered"):
        save_package(tmp_path / "x.pt", model, provenance={})


if __name__ == "__main__":
    make_reference_package()
