"""`polyfid pretrain CONFIG.yaml [OVERLAY.yaml ...] [--set key=value ...]`."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="pretrain one model with a head per level of theory (single, multifidelity or reptile)",
        description="Re-running the same command resumes from the run directory's latest checkpoint.",
    )
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML config; later files are merged over earlier")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=3e-4 (repeatable)")  # fmt: skip
    p.add_argument("--address", help="Ray cluster address (sets scaling.address; default: a local Ray)")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default: sqlite store in the run directory)")
    p.add_argument("--launcher", choices=("ray", "torchrun"), default="ray",
                   help="ray: this process drives Ray Train workers; torchrun: this process is one rank")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the full result (as result.json holds it)")
    p.set_defaults(func=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    from polyfid.core.tracking import report_registration
    from polyfid.pretrain.config import load_config
    from polyfid.pretrain.launch import TrainingAborted, launch

    overrides = list(args.overrides)
    if args.address:
        overrides.append(f"scaling.address={args.address}")
    if args.mlflow_uri:
        overrides.append(f"tracking.mlflow_uri={args.mlflow_uri}")
    cfg = load_config(args.configs, overrides)
    try:
        result = launch(cfg, args.launcher, show_progress=not args.no_progress)
    except TrainingAborted as exc:
        print(f"polyfid: training aborted: {exc}", file=sys.stderr)
        return 1
    if result:
        if args.json:
            print(json.dumps(result, indent=1))
        else:
            registered = (
                f", registered as {result['registered_model']} v{result['version']}" if result.get("version") else ""
            )
            print(f"pretrain {result.get('status')} at step {result.get('step')}: {result.get('package')}{registered}")
            print(f"  result: {cfg.run_dir / 'result.json'}")
        report_registration(result)
    return 0
