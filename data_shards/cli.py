"""The `polyfid` console script: one subcommand group per package, imported lazily to keep start-up fast."""

from __future__ import annotations

import argparse
import importlib
import sys

from data_shards.errors import PolyfidDataError

# Modules exposing `register(subparsers)`; each registered subcommand sets `func(args) -> int`.
COMMAND_MODULES = ("data_shards.commands", "pretrain.commands", "finetune.commands")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polyfid", description="Multi-fidelity MLIP pretraining and fine-tuning.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PolyfidDataError as exc:
        print(f"polyfid: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
