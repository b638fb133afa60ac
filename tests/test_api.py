"""One import namespace: `import polyfid` gives the public API from anywhere, and nothing else is importable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import polyfid

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tests" / "models" / "data" / "package_v1.0_hipnn.pt"
LAYERS = ("data_shards", "pretrain", "finetune")


def _python(code: str, cwd: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | env
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=clean, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_public_api_names_resolve():
    assert sorted(polyfid.__all__) == sorted(polyfid._API)
    for name in polyfid.__all__:
        assert getattr(polyfid, name) is not None, name
    with pytest.raises(AttributeError):
        polyfid.not_a_name  # noqa: B018


def test_outside_the_repo_only_polyfid_imports(tmp_path):
    code = (
        "import importlib.util, polyfid\n"
        "from polyfid import PolyfidCalculator, load_package\n"
        f"assert [importlib.util.find_spec(n) for n in {LAYERS!r}] == [None] * 3\n"
        f"print(load_package({str(PACKAGE)!r}).heads)\n"
    )
    assert "gfn2-xtb" in _python(code, tmp_path)


@pytest.mark.slow
def test_built_wheel_installs_the_namespace_only(tmp_path):
    """The wheel holds polyfid/ with the layer folders inside (the symlinks resolved) and the demo corpus; installed
    alone it runs the calculator and the CLI."""
    source = tmp_path / "source"  # a clean copy: no build/ leftovers of earlier builds in the checkout
    shutil.copytree(ROOT / "polyfid", source / "polyfid", symlinks=True)
    for name in LAYERS:
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run([*build, str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("polyfid-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("polyfid-")}
    assert tops == {"polyfid"}, tops
    needed = ["polyfid/finetune/run.py", "polyfid/models/testing/mixins.py", "polyfid/pretrain/strategies/reptile.py"]
    for name in [*needed, "polyfid/data_shards/demo_corpus/md_xtb.h5"]:
        assert name in names, name
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    code = (
        "import polyfid, ase.build\n"
        f"assert polyfid.__file__.startswith({str(target)!r}), polyfid.__file__\n"
        f"calc = polyfid.PolyfidCalculator(polyfid.load_package({str(PACKAGE)!r}), level='GFN2-xTB')\n"
        "atoms = ase.build.molecule('CH4'); atoms.calc = calc; print(atoms.get_potential_energy())\n"
        "from polyfid.cli import main; main(['config', 'show', 'finetune'])\n"
    )
    out = _python(code, tmp_path, PYTHONPATH=str(target))
    assert "target.level" in out
