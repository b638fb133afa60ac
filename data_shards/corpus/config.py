"""What the corpus generator computes: molecules, geometry sampling, and the nested level plans (pydantic + YAML)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from polyfid.core.config import load_yaml_config
from polyfid.data_shards.qm import LEVELS

CONFIGS = Path(__file__).resolve().parent / "configs"
MOLECULES = Path(__file__).resolve().parent / "molecules.smi"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MDSettings(_Strict):
    """GFN2-xTB Langevin MD from each relaxed conformer, once per temperature."""

    temperatures_k: tuple[float, ...] = (300.0, 600.0, 1000.0)
    frames: int = Field(20, ge=0, description="frames kept per conformer and temperature")
    stride: int = Field(10, ge=1, description="MD steps between kept frames")
    equil_steps: int = Field(100, ge=0)
    timestep_fs: float = Field(0.5, gt=0)
    friction_per_fs: float = Field(0.02, gt=0)


class NormalModeSettings(_Strict):
    """Classical harmonic (Boltzmann) displacements along the GFN2-xTB normal modes of each relaxed conformer."""

    temperatures_k: tuple[float, ...] = (300.0, 1000.0)
    samples: int = Field(10, ge=0, description="samples per conformer and temperature")
    stiffness_floor_ev_a2: float = Field(
        2.0, gt=0, description="smallest Hessian eigenvalue used for amplitudes: soft torsions do not fly apart"
    )


class LevelPlan(_Strict):
    """One level on a subset: the first `per_molecule` structures of each molecule's seeded permutation, for
    molecules of at most `max_heavy_atoms` heavy atoms. Plans listed later must be no larger, so subsets nest."""

    level: str
    per_molecule: int | None = Field(None, ge=0, description="None: every structure")
    max_heavy_atoms: int | None = Field(None, ge=0, description="None: every molecule")
    forces: bool = True

    @model_validator(mode="after")
    def _known(self) -> LevelPlan:
        if self.level not in LEVELS:
            raise ValueError(f"unknown level {self.level!r}; known: {sorted(LEVELS)}")
        if self.forces and not LEVELS[self.level].forces:
            raise ValueError(f"level {self.level!r} has no forces")
        return self


class ScanSettings(_Strict):
    """A rigid scan of a held-out molecule from its GFN2-xTB minimum: a dihedral (4 atoms) turned through 360
    degrees, or a bond (2 atoms) stretched; the atoms are the first match of `smarts` (explicit hydrogens allowed)."""

    kind: Literal["dihedral", "bond"]
    smarts: str
    points: int = Field(24, ge=2)
    bond_range_a: tuple[float, float] = (-0.3, 0.6)


class HeldOut(_Strict):
    """A fine-tuning target that pretraining never sees, with its own level plans and an optional scan."""

    name: str
    forbidden_smarts: str = Field(description="a group no pretraining molecule may contain")
    levels: tuple[LevelPlan, ...]
    scan: ScanSettings | None = None
    scan_levels: tuple[str, ...] = ("gfn2-xtb", "gfn1-xtb", "mp2/cc-pvdz", "ccsd(t)/cc-pvdz")


class CorpusConfig(_Strict):
    """The whole corpus. `max_molecules` keeps N pretraining molecules evenly spread over the list (small runs)."""

    seed: int = 0
    molecules: Path = MOLECULES
    max_molecules: int | None = Field(None, ge=1)
    conformers: int = Field(2, ge=1)
    md: MDSettings = MDSettings()
    normal_modes: NormalModeSettings = NormalModeSettings()
    levels: tuple[LevelPlan, ...]
    heldout: tuple[HeldOut, ...] = ()
    timeout_s: float = Field(900.0, gt=0, description="per single-point calculation")
    chunk_size: int = Field(40, ge=1, description="structures per labelling task")

    @model_validator(mode="after")
    def _nested(self) -> CorpusConfig:
        for plans in (self.levels, *(h.levels for h in self.heldout)):
            names = [p.level for p in plans]
            if len(set(names)) != len(names):
                raise ValueError(f"a level is planned twice: {names}")
            for a, b in itertools.pairwise(plans):
                if _larger(b.per_molecule, a.per_molecule) or _larger(b.max_heavy_atoms, a.max_heavy_atoms):
                    raise ValueError(f"level plans must shrink so subsets nest: {b.level} is larger than {a.level}")
        return self


def _larger(a: int | None, b: int | None) -> bool:
    """Whether limit a (None: unlimited) allows more than limit b."""
    return b is not None and (a is None or a > b)


def load_corpus_config(paths: list[str | Path], overrides: list[str] | None = None) -> CorpusConfig:
    """A config from YAML files (later ones overlay earlier ones) and `--set` overrides; a bare name (`tiny`,
    `full`) means the packaged configs/<name>.yaml. ConfigError names the file and every bad key."""
    files = [p if Path(p).suffix or Path(p).is_file() else CONFIGS / f"{p}.yaml" for p in paths]
    return load_yaml_config(files, overrides, CorpusConfig, ("molecules",))
