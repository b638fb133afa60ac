"""The `polyfid` console script: one subcommand group per layer (`shards`, `pretrain`, `finetune` / `evaluate` /
`report` / `predict` / `export`) plus `config show`. Every user error (`PolyfidError`) ends as one line on stderr
and exit status 2."""

from __future__ import annotations

import argparse
import signal
import sys

from polyfid.core.errors import PolyfidError
from polyfid.data_shards import commands as data_commands
from polyfid.finetune import commands as finetune_commands
from polyfid.pretrain import commands as pretrain_commands

CONFIG_SCHEMAS = ("pretrain", "finetune", "corpus")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polyfid", description="Multi-fidelity MLIP pretraining and fine-tuning.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data_commands, pretrain_commands, finetune_commands):
        module.register(sub)
    config = sub.add_parser("config", help="list every config key with its default and meaning")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="every key of a config: type, default, meaning")
    show.add_argument("schema", choices=CONFIG_SCHEMAS, help="which config")
    show.set_defaults(func=_config_show)
    return parser


def _config_show(args: argparse.Namespace) -> int:
    from polyfid.core.config import describe

    if args.schema == "pretrain":
        from polyfid.pretrain.config import PretrainConfig as schema
    elif args.schema == "finetune":
        from polyfid.finetune.config import FinetuneConfig as schema
    else:
        from polyfid.data_shards.corpus.config import CorpusConfig as schema
    rows = list(describe(schema))
    width = max(len(key) for key, *_ in rows)
    for key, kind, default, meaning in rows:
        print(f"{key:<{width}}  {default:<12}  {meaning}  [{kind}]")
    return 0


def main(argv: list[str] | None = None) -> int:
    if hasattr(signal, "SIGPIPE"):  # `polyfid config show pretrain | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PolyfidError as exc:
        print(f"polyfid: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
