"""The corpus molecules: the SMILES list, its checks (elements, size, held-out groups), and RDKit conformers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polyfid.core.errors import ConfigError

ELEMENTS = frozenset({1, 6, 7, 8, 9, 16, 17})
MAX_HEAVY_ATOMS = 9


@dataclass(frozen=True)
class Molecule:
    """One molecule of the list, with what its SMILES implies: atoms (explicit H), charge, spin multiplicity."""

    index: int  # position among the molecules of its role (seeds the permutation of its structures)
    name: str
    smiles: str
    role: str  # "pretrain" or "heldout"
    numbers: tuple[int, ...]
    charge: int
    multiplicity: int

    @property
    def heavy_atoms(self) -> int:
        return sum(z > 1 for z in self.numbers)

    @property
    def key(self) -> str:
        """A file-safe, unique name for chunk files and HDF5 groups."""
        return f"{self.role[0]}{self.index:03d}_" + "".join(c if c.isalnum() else "-" for c in self.name)


def _mol(smiles: str) -> Any:
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else Chem.AddHs(mol)


def read_molecules(path: Path) -> list[Molecule]:
    """The molecules of a `SMILES name role` file, in file order; ConfigError names the line of a bad one."""
    from rdkit import Chem
    from rdkit.Chem import Descriptors

    out: list[Molecule] = []
    seen: dict[str, str] = {}
    counts = {"pretrain": 0, "heldout": 0}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the molecule list ({exc})") from exc
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):  # comments are whole lines: '#' is a SMILES triple bond
            continue
        where = f"{path}:{n}"
        if len(words) != 3 or words[2] not in counts:
            raise ConfigError(f"{where}: expected 'SMILES name pretrain|heldout', got {line.strip()!r}")
        smiles, name, role = words
        mol = _mol(smiles)
        if mol is None:
            raise ConfigError(f"{where}: RDKit cannot parse SMILES {smiles!r}")
        numbers = tuple(a.GetAtomicNum() for a in mol.GetAtoms())
        bad = sorted(set(numbers) - ELEMENTS)
        heavy = sum(z > 1 for z in numbers)
        if bad or heavy > MAX_HEAVY_ATOMS or len(numbers) < 2:
            raise ConfigError(f"{where}: {smiles!r} needs elements H C N O F S Cl, 2+ atoms, <= 9 heavy atoms")
        canon = Chem.MolToSmiles(Chem.RemoveHs(mol))
        if canon in seen or name in seen.values():
            raise ConfigError(f"{where}: {name} ({smiles}) repeats an earlier molecule")
        seen[canon] = name
        out.append(
            Molecule(
                index=counts[role],
                name=name,
                smiles=smiles,
                role=role,
                numbers=numbers,
                charge=Chem.GetFormalCharge(mol),
                multiplicity=Descriptors.NumRadicalElectrons(mol) + 1,
            )
        )
        counts[role] += 1
    return out


def check_heldout_groups(molecules: list[Molecule], groups: dict[str, str]) -> None:
    """ConfigError unless every held-out molecule has its forbidden group and no pretraining molecule has any."""
    from rdkit import Chem

    by_name = {m.name: m for m in molecules}
    for name, smarts in groups.items():
        pattern = Chem.MolFromSmarts(smarts)
        if pattern is None:
            raise ConfigError(f"held-out {name}: invalid SMARTS {smarts!r}")
        if name not in by_name or by_name[name].role != "heldout":
            raise ConfigError(f"held-out {name}: not a 'heldout' molecule of the list")
        if not _mol(by_name[name].smiles).HasSubstructMatch(pattern):
            raise ConfigError(f"held-out {name}: does not contain its own group {smarts!r}")
        clash = [m.name for m in molecules if m.role == "pretrain" and _mol(m.smiles).HasSubstructMatch(pattern)]
        if clash:
            raise ConfigError(f"held-out {name}: pretraining molecules {clash} contain its group {smarts!r}")


def conformers(molecule: Molecule, n: int, seed: int, min_rmsd: float = 0.3) -> np.ndarray:
    """Up to `n` distinct RDKit ETKDG conformers (C, N, 3) in Angstrom: force-field relaxed (MMFF where it has
    parameters, else UFF), lowest energy first, each at least `min_rmsd` heavy-atom RMSD from those kept.
    Atom order is that of `molecule.numbers`."""
    from rdkit import Chem
    from rdkit.Chem import AllChem, rdMolAlign

    mol = _mol(molecule.smiles)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed + 1  # RDKit embeds every conformer alike with seed 0
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=3 * n, params=params))
    if not ids:
        params.useRandomCoords = True
        ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=3 * n, params=params))
    if not ids:
        raise RuntimeError(f"RDKit could not embed {molecule.smiles}")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        energies = [e for _, e in AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=500)]
    else:
        energies = [e for _, e in AllChem.UFFOptimizeMoleculeConfs(mol, maxIters=500)]
    heavy = Chem.RemoveHs(mol)
    kept: list[int] = []
    for i in sorted(range(len(ids)), key=lambda k: energies[k]):
        if len(kept) == n:
            break
        if all(rdMolAlign.GetBestRMS(heavy, heavy, ids[j], ids[i]) > min_rmsd for j in kept):
            kept.append(i)
    return np.array([mol.GetConformer(ids[i]).GetPositions() for i in kept])


def match_atoms(molecule: Molecule, smarts: str) -> tuple[int, ...]:
    """Atom indices of the first match of `smarts` (hydrogens explicit, as in `molecule.numbers`)."""
    from rdkit import Chem

    pattern = Chem.MolFromSmarts(smarts)
    match = () if pattern is None else _mol(molecule.smiles).GetSubstructMatch(pattern)
    if not match:
        raise ConfigError(f"{molecule.name}: SMARTS {smarts!r} matches no atoms")
    return tuple(int(i) for i in match)


def bonds(molecule: Molecule) -> list[tuple[int, int]]:
    """The bonds of the molecular graph (explicit H), for the moving fragment of a scan."""
    return [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in _mol(molecule.smiles).GetBonds()]
