"""`polyfid shards inspect`: datasets x levels table (structures, with forces, elements) and per-level E0s."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ase.data import chemical_symbols
from rich.console import Console
from rich.table import Table

from polyfid.data_shards.manifest import Manifest


def dataset_level_counts(manifest: Manifest) -> dict[str, dict[str, tuple[int, int]]]:
    """{dataset: {level: (structures with an energy, structures with forces)}} over all splits."""
    out: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for shard in manifest.shards:
        for level, n in shard.energy_counts.items():
            out[shard.dataset][level][0] += n
        for level, n in shard.force_counts.items():
            out[shard.dataset][level][1] += n
    return {ds: {lv: (c[0], c[1]) for lv, c in levels.items()} for ds, levels in out.items()}


def _console() -> Console:
    """Full-width tables on a terminal; wide enough not to truncate names when piped to a file or log."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def _symbols(numbers: list[int]) -> str:
    return " ".join(chemical_symbols[z] for z in sorted(numbers))


def render(folder: str | Path, console: Console | None = None) -> None:
    """Print the tables for the shard folder."""
    console = console or _console()
    manifest = Manifest.load(folder)
    counts = dataset_level_counts(manifest)
    levels = manifest.level_names

    table = Table(title=f"{folder}: structures per dataset and level (energies / forces)")
    table.add_column("dataset")
    table.add_column("structures", justify="right")
    table.add_column("train/val/test", justify="right")
    table.add_column("elements")
    for level in levels:
        table.add_column(level, justify="right")
    for ds in sorted(manifest.datasets):
        shards = manifest.select(datasets=[ds])
        per_split = [sum(s.n_samples for s in shards if s.split == sp) for sp in ("train", "val", "test")]
        elements = sorted({z for s in shards for z in s.elements})
        cells = [f"{counts[ds][lv][0]} / {counts[ds][lv][1]}" if lv in counts.get(ds, {}) else "-" for lv in levels]
        table.add_row(ds, str(sum(per_split)), "/".join(map(str, per_split)), _symbols(elements), *cells)
    console.print(table)

    e0 = Table(title="per-level reference energies E0 (eV, least squares on train) and residual statistics")
    e0.add_column("level")
    e0.add_column("n E / n F", justify="right")
    e0.add_column("E0 per element")
    e0.add_column("resid/atom mean, std (eV)", justify="right")
    e0.add_column("force RMS (eV/A)", justify="right")
    underdetermined = []
    for level in levels:
        st = manifest.levels[level]
        if not st.e0_determined:
            underdetermined.append(level)
        e0s = ", ".join(
            f"{chemical_symbols[int(z)]} {v:.3f}" for z, v in sorted(st.e0.items(), key=lambda t: int(t[0]))
        )
        rms = f"{st.force_rms:.3f}" if st.force_rms is not None else "-"
        mean_std = f"{st.residual_per_atom_mean:.4f}, {st.residual_per_atom_std:.4f}"
        name = level if st.e0_determined else f"{level} *"
        e0.add_row(name, f"{st.n_energy} / {st.n_forces}", e0s, mean_std, rms)
    console.print(e0)
    if underdetermined:
        console.print(
            "* E0 underdetermined: the element counts of this level's train set are collinear (e.g. one molecule); "
            "the minimum-norm E0 only reproduces energies of the compositions seen, not per-element references."
        )
    n = sum(s.n_samples for s in manifest.shards)
    console.print(
        f"{len(manifest.shards)} shards, {n} structures, {sum(s.n_bytes for s in manifest.shards) / 2**20:.1f} MiB"
    )
