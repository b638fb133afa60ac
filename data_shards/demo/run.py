"""The run: how much to compute (scales), the MD settings, and the options and statistics shared by the stages."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyfid.data_shards.demo import molecules
from polyfid.data_shards.qm import Label

XTB, DFT, MP2, CCSDT = "gfn2-xtb", "b3lyp/def2-svp", "mp2/cc-pvdz", "ccsd(t)/cc-pvdz"
DEMO_LEVELS: tuple[str, ...] = (XTB, DFT, MP2, CCSDT)


@dataclass(frozen=True)
class Scale:
    """How much to compute."""

    pretrain: tuple[str, ...]
    md_frames: int  # MD frames per pretraining molecule (all get xTB E+F)
    md_stride: int  # MD steps between frames
    dft_per_mol: int  # frames per pretraining molecule labelled with B3LYP
    target_frames: int  # ethanol MD frames (all get xTB E+F)
    target_stride: int
    n_mp2: int  # ethanol frames (a prefix) with MP2 E+F
    n_ccsdt: int  # ethanol frames (a prefix) with CCSD(T) E
    scan_points: int  # torsion-scan points over 360 degrees


SCALES: dict[str, Scale] = {
    "tiny": Scale(("H2O", "H2CO"), 6, 5, 2, 4, 5, 2, 1, 4),
    "full": Scale(molecules.PRETRAIN, 300, 20, 20, 400, 40, 300, 40, 36),
}

MD_PARAMS: dict[str, Any] = {
    "temperature_k": 500.0,
    "timestep_fs": 0.5,
    "friction_per_fs": 0.01,
    "equil_steps": 400,
    "thermostat": "Langevin (ASE)",
    "potential": "GFN2-xTB",
}


@dataclass
class LevelStats:
    """Per dataset and level: counts, failures and wall time."""

    requested: int = 0
    ok: int = 0
    wall_s: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def add(self, index: int, lab: Label) -> None:
        self.requested += 1
        self.wall_s += lab.wall
        if lab.ok:
            self.ok += 1
        else:
            self.failures.append({"index": index, "error": lab.error})


@dataclass
class Run:
    """State shared by the stages: options, statistics, progress bar, timings."""

    out: Path
    scale: Scale
    scale_name: str
    timeout: float
    levels: tuple[str, ...]
    seed: int
    deadline: float  # time.time() after which no new high-level target calculation starts
    program: str  # how the generator was invoked, e.g. "python -m polyfid.data_shards.demo.generate"
    arguments: str  # its command-line arguments, shell-quoted
    bar: Any = None
    stats: dict[str, dict[str, LevelStats]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    t0: float = field(default_factory=time.time)

    def stat(self, dataset: str, level: str) -> LevelStats:
        return self.stats.setdefault(dataset, {}).setdefault(level, LevelStats())
