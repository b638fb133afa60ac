"""`polyfid shards build | inspect | verify`."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    shards = subparsers.add_parser("shards", help="build, inspect and verify WebDataset shards of QM datasets")
    sub = shards.add_subparsers(dest="shards_command", required=True, metavar="ACTION")

    build = sub.add_parser("build", help="read the sources of SOURCES.yaml into shards (resumable, idempotent)")
    build.add_argument("sources", help="SOURCES.yaml listing datasets, formats, units and level keys")
    build.add_argument("--out", required=True, help="shard folder to create or resume")
    build.add_argument("--on-error", choices=("fail", "skip"), default="fail", help="bad records: stop, or drop+report")
    build.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.set_defaults(func=_build)

    inspect = sub.add_parser("inspect", help="print datasets x levels counts and per-level E0")
    inspect.add_argument("folder")
    inspect.set_defaults(func=_inspect)

    verify = sub.add_parser(
        "verify", help="check the manifest against the folder; exit 1 naming any missing, extra or corrupted shard"
    )
    verify.add_argument("folder")
    verify.add_argument(
        "--deep", action="store_true", help="also decode every sample and recount the manifest's counts"
    )
    verify.add_argument("--no-progress", action="store_true")
    verify.set_defaults(func=_verify)

    demo = sub.add_parser(
        "generate-demo",
        help="regenerate the demo corpus with tblite (GFN2-xTB) and PySCF (needs the 'generate' extra)",
        description="xTB MD of real molecules labelled at four levels of theory (--scale full: ~40 min, 2 cores).",
    )
    _add_generator_arguments(demo)
    demo.set_defaults(func=_generate_demo)

    corpus = sub.add_parser(
        "generate-corpus",
        help="generate the multi-level foundation corpus on Ray (resumable; needs the 'generate' extra)",
        description="RDKit conformers, GFN2-xTB MD and normal-mode samples of a few hundred molecules, labelled at "
        "GFN1/GFN2-xTB, HF, B3LYP, MP2 and CCSD(T) on nested subsets; a rerun computes only unfinished chunks.",
    )
    corpus.add_argument("config", nargs="+", help="corpus YAML (later files overlay earlier ones) or tiny | full")
    corpus.add_argument("--out", required=True, help="corpus folder to create or resume")
    corpus.add_argument("--set", dest="overrides", action="append", default=[], help="override a key: md.frames=50")
    corpus.add_argument("--sample", default=None, help="also write a small committed-size sample to this folder")
    corpus.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    corpus.add_argument("--no-progress", action="store_true", help="no progress bar")
    corpus.set_defaults(func=_generate_corpus)


def _add_generator_arguments(parser: argparse.ArgumentParser) -> None:
    from polyfid.data_shards.demo.generate import add_arguments

    add_arguments(parser)


def _generate_demo(args: argparse.Namespace) -> int:
    from polyfid.data_shards.demo.generate import generate

    return generate(args)


def _generate_corpus(args: argparse.Namespace) -> int:
    from polyfid.data_shards.corpus.config import load_corpus_config
    from polyfid.data_shards.corpus.run import generate_corpus
    from polyfid.data_shards.corpus.sample import write_sample

    config = load_corpus_config(args.config, args.overrides)
    run = generate_corpus(config, args.out, address=args.address, progress=not args.no_progress)
    done = sum(run.computed.values())
    print(
        f"corpus {args.out}: {done} chunks computed, {sum(run.reused.values())} reused in {run.seconds:.0f} s; "
        f"see {args.out}/PROVENANCE.md"
    )
    if run.failed_tasks:
        print(f"{len(run.failed_tasks)} tasks failed (rerun to retry): {run.failed_tasks[0]}", file=sys.stderr)
    if args.sample:
        write_sample(args.out, args.sample)
        print(f"sample written to {args.sample}")
    return 1 if run.failed_tasks else 0


def _build(args: argparse.Namespace) -> int:
    from polyfid.data_shards.build import build_shards
    from polyfid.data_shards.sources import load_build_config

    summary = build_shards(
        load_build_config(args.sources),
        args.out,
        on_error=args.on_error,
        address=args.address,
        progress=not args.no_progress,
    )
    print(
        f"built {args.out}: {summary.n_written} structures written from {summary.n_read} read, "
        f"{summary.n_dropped} dropped; {summary.n_chunks} chunks in {summary.n_mixes} build tasks "
        f"({summary.n_mixes_reused} reused) in {summary.seconds:.1f} s"
    )
    if summary.n_dropped:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(summary.dropped_by_reason.items()))
        print(f"dropped records by reason: {reasons}; details in {summary.report_path}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from polyfid.data_shards.inspect_table import render

    render(args.folder)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from polyfid.data_shards.verify import verify_shards

    problems = verify_shards(args.folder, progress=not args.no_progress, deep=args.deep)
    for problem in problems:
        print(f"CORRUPTED {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} bad shard(s) in {args.folder}", file=sys.stderr)
        return 1
    print(f"{args.folder}: all shards match the manifest")
    return 0
