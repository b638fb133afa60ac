"""README's "Use the model" snippets run as written (ASE, predict/export, committee, LAMMPS, TorchSim, pyfunc), in a
folder where the demo's output paths hold stand-ins: the committed tiny package with an mp2/cc-pvdz head (its
gfn2-xtb head copied), a committee of it, and an MLflow store with it registered."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from polyfid.core.tracking import Tracker, TrackingSection
from polyfid.models.package import PYFUNC_CODE, load_package, save_committee, save_package
from tests.models.test_package import PACKAGE_V1_0

README = Path(__file__).resolve().parents[1] / "README.md"
MODEL = Path("runs/demo/finetune/joint-pretrained-distilled/model/polyfid-finetuned.pt")
LEVEL = "mp2/cc-pvdz"


def snippets() -> list[tuple[str, str]]:
    """(language, code) of every fenced block in README's "## Use the model" section, in order."""
    text = README.read_text()
    section = text.split("## Use the model", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(python|bash)\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def demo_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    model = load_package(PACKAGE_V1_0).model
    head = model.add_head(LEVEL, None)
    head.load_state_dict(model.heads.heads[model.head_names.index("gfn2-xtb")].state_dict())
    package = save_package(root / MODEL, model, provenance={"readme": "stand-in"})
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.01)
    save_committee(root / "runs/committee/committee/polyfid-committee.pt", [model, other], provenance={})
    store = f"sqlite:///{root / 'runs/demo/mlflow.db'}"
    tracker = Tracker(TrackingSection(mlflow_uri=store, system_metrics=False), root / "runs/demo/registry-run")
    tracker.start("readme", {}, {})
    assert tracker.register("polyfid-mp2-cc-pvdz", package, {}, PYFUNC_CODE, LEVEL, "stand-in")["version"] == "1"
    tracker.end()
    return root


def test_the_section_has_every_route():
    code = "\n".join(c for _, c in snippets())
    for needle in ("PolyfidCalculator(", "polyfid predict", "polyfid export", "energy_std", "LammpsCoupling(",
                   "PolyfidTorchSimModel(", "mlflow.set_tracking_uri", "pyfunc.load_model"):  # fmt: skip
        assert needle in code, needle


@pytest.mark.parametrize("index", range(len(snippets())))
def test_snippet_runs_as_written(demo_like, index):
    language, code = snippets()[index]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    command = [sys.executable, "-c", code] if language == "python" else ["bash", "-euo", "pipefail", "-c", code]
    proc = subprocess.run(command, cwd=demo_like, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"README snippet {index} ({language}) failed:\n{code}\n{proc.stdout}\n{proc.stderr}"
    if "polyfid predict" in code:
        assert (demo_like / "ethanol-mp2.xyz").exists()
    if "polyfid export" in code:
        assert any(p.name.endswith(".pt") and ".export-" in p.name for p in (demo_like / MODEL.parent).iterdir())
