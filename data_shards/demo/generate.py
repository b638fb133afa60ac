"""Generate the demo corpus: xTB MD of real molecules, labelled at four levels of theory.

    python -m polyfid.data_shards.demo.generate --out data_shards/demo_corpus --scale full
    polyfid shards generate-demo --out data_shards/demo_corpus --scale full  (same options)

Writes (atomically, each as soon as it is complete): md_xtb.h5 (GFN2-xTB E+F on MD frames of the
pretraining molecules), scan_ethanol.h5 (rigid H-O-C-C torsion scan, xTB + MP2 E+F),
dft_subset.extxyz (B3LYP/def2-SVP + xTB E+F on a subset of the MD frames), target_ethanol.h5
(ethanol MD: xTB E+F on all, MP2/cc-pVDZ E+F on a prefix, CCSD(T)/cc-pVDZ E on a shorter prefix),
sources.yaml and PROVENANCE.md. Units written: eV, eV/Angstrom, Angstrom. Failed or skipped
calculations are NaN with `ok` False and a reason in the provenance.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from polyfid.data_shards.demo.run import DEMO_LEVELS, SCALES, XTB, Run, Scale
from polyfid.data_shards.demo.stages import run_pipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the generator's options to `parser` (this module's own, or `polyfid shards generate-demo`)."""
    options = [
        parser.add_argument("--out", type=Path, required=True, help="output folder"),
        parser.add_argument("--scale", choices=sorted(SCALES), default="tiny"),
        parser.add_argument("--timeout", type=float, default=600.0, help="seconds per calculation"),
        parser.add_argument(
            "--levels",
            nargs="+",
            choices=list(DEMO_LEVELS),
            default=list(DEMO_LEVELS),
            help="levels to compute (gfn2-xtb is always computed)",
        ),
        parser.add_argument("--n-mp2", type=int, default=None, help="override the number of ethanol MP2 frames"),
        parser.add_argument("--n-ccsdt", type=int, default=None, help="override the number of ethanol CCSD(T) frames"),
        parser.add_argument(
            "--budget-min",
            type=float,
            default=None,
            help="start no new ethanol MP2/CCSD(T) calculation after this many minutes",
        ),
        parser.add_argument("--seed", type=int, default=0),
    ]
    # What the provenance needs to record the reproducible command (demo_argv: the arguments as given, if known).
    parser.set_defaults(
        demo_program=parser.prog,
        demo_options=tuple((o.option_strings[0], o.dest) for o in options),
        demo_argv=None,
    )


def command_arguments(args: argparse.Namespace) -> list[str]:
    """The arguments reproducing `args`: as given to `main`, else rebuilt from every option that has a value."""
    if args.demo_argv is not None:
        return list(args.demo_argv)
    words: list[str] = []
    for flag, dest in args.demo_options:
        value = getattr(args, dest)
        if value is not None:
            words += [flag, *map(str, value if isinstance(value, list) else [value])]
    return words


def make_run(args: argparse.Namespace) -> Run:
    """The run described by the parsed options."""
    scale = SCALES[args.scale]
    over = {k: v for k, v in (("n_mp2", args.n_mp2), ("n_ccsdt", args.n_ccsdt)) if v is not None}
    if over:
        scale = Scale(**{**asdict(scale), **over})
    levels = tuple(dict.fromkeys([XTB, *args.levels]))
    deadline = time.time() + 60 * args.budget_min if args.budget_min else float("inf")
    return Run(
        out=args.out,
        scale=scale,
        scale_name=args.scale,
        timeout=args.timeout,
        levels=levels,
        seed=args.seed,
        deadline=deadline,
        program=args.demo_program,
        arguments=shlex.join(command_arguments(args)),
    )


def generate(args: argparse.Namespace) -> int:
    """Generate the corpus into args.out (options of `add_arguments`); returns 0 (failures are recorded, not raised)."""
    run = make_run(args)
    run_pipeline(run)
    print(f"done in {time.time() - run.t0:.0f} s -> {run.out}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m polyfid.data_shards.demo.generate [options]`: parse `argv` (default: sys.argv[1:]) and generate."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m polyfid.data_shards.demo.generate", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    parser.set_defaults(demo_argv=argv)
    return generate(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
