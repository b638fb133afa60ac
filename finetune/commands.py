"""`polyfid finetune CONFIG.yaml`, `polyfid evaluate --model M --data SHARDS --level L [...]`, and the other
commands that use or publish a model package (report, predict, export, register)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from polyfid.core.tracking import report_registration
from polyfid.data_shards.record import normalize_level
from polyfid.finetune.evaluate import SPLITS

VERDICT = {"linear": "linear wins", "nonlinear": "nonlinear wins",
           "tie": "tie (the difference is within noise: 2 standard errors of the paired test errors)"}  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    f = subparsers.add_parser("finetune", help="fine-tune a pretrained model to a small set at one level of theory")
    f.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML config; later files are merged over earlier")
    f.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    f.add_argument("--json", action="store_true", help="also print the full result (as result.json holds it)")
    f.set_defaults(func=_finetune)
    r = subparsers.add_parser("report", help="table of test errors of fine-tuning runs (and their linear baselines)")
    r.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="fine-tuning run directories")
    r.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    r.set_defaults(func=_report)
    p = subparsers.add_parser("evaluate", help="energy/force errors of one head against one level of theory")
    p.add_argument("--model", required=True, help="model package (.pt), a run directory, or models:/NAME/VERSION")
    p.add_argument("--registry-uri", help="MLflow store of a models:/ --model (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--data", required=True, nargs="+", type=Path, help="shard folder(s)")
    p.add_argument("--level", required=True, type=normalize_level,
                   help="level of theory: the head and the reference labels")  # fmt: skip
    p.add_argument("--split", nargs="+", default=["test"], choices=SPLITS, help="splits scored (default: test)")
    p.add_argument("--datasets", nargs="+", help="datasets scored (default: all)")
    p.add_argument("--scan", metavar="DATASET", help="also score the smoothness of this dataset read as a scan")
    p.add_argument("--plots", type=Path, help="folder for the parity (and scan) plots")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_evaluate)
    q = subparsers.add_parser("predict", help="energies and forces (stress, committee spread) for any ase.io file")
    q.add_argument("model", help="model package or committee (.pt), a run directory, or models:/NAME/VERSION")
    q.add_argument("input", type=Path, help="structures: any file ase.io reads (extxyz, xyz, db, traj, ...)")
    q.add_argument("output", type=Path, help="extxyz written with energy, forces (stress) per frame")
    q.add_argument("--level", required=True, type=normalize_level, help="the head (level of theory): always named")
    q.add_argument("--committee", nargs="+", default=[], metavar="MODEL",
                   help="more members (packages): report the committee's mean and std")  # fmt: skip
    q.add_argument("--index", default=":", help="frames read, as ase.io.read's index (default: all)")
    q.add_argument("--format", dest="fmt", help="ase.io format of the input (default: from its name)")
    q.add_argument("--max-atoms", type=int, default=4096, help="atom budget of one batch (default 4096)")
    q.add_argument("--device", default="cpu", help="torch device (default cpu)")
    q.add_argument("--dtype", choices=("float32", "float64"), help="cast the model (default: as packaged)")
    q.add_argument("--registry-uri", help="MLflow store of a models:/ MODEL (default: $MLFLOW_TRACKING_URI)")
    q.set_defaults(func=_predict)
    x = subparsers.add_parser("export", help="export a head (energy + forces) beside its package for fast inference")
    x.add_argument("model", type=Path, help="model package (.pt), or a run directory")
    x.add_argument("--level", required=True, type=normalize_level, help="the head exported")
    x.add_argument("--dtype", choices=("float32", "float64"), default="float64", help="precision (default float64)")
    x.set_defaults(func=_export)
    g = subparsers.add_parser("register", help="register a model package (e.g. the shipped foundation model) in MLflow")
    g.add_argument("package", type=Path, help="model package (.pt)")
    g.add_argument("--name", required=True, help="registered model name, e.g. polyfid-foundation")
    g.add_argument("--mlflow-uri", required=True, help="MLflow store, e.g. sqlite:///runs/demo/mlflow.db")
    g.add_argument("--experiment", default="polyfid-register", help="MLflow experiment of the registering run")
    g.set_defaults(func=_register)


def _finetune(args: argparse.Namespace) -> int:
    from polyfid.finetune.config import load_finetune_config
    from polyfid.finetune.run import run_finetune

    result = run_finetune(load_finetune_config(args.configs, args.overrides))
    lin, non = result["test"]["linear"], result["test"]["nonlinear"]
    print(
        f"fine-tuned {result['level']} on {result['n_train']} energies ({result['head_init']} head, "
        f"{result['epochs']} epochs); test energy RMSE on {result['n_test']} structures:"
    )
    print(
        f"  nonlinear fine-tune {non['energy_rmse']:.4f} eV   linear baseline {lin['energy_rmse']:.4f} eV"
        f"   -> {VERDICT[result['winner']]}"
    )
    for name, m in result["test"]["trivial"].items():
        forces = f", forces MAE {m['forces_mae']:.4f} eV/A" if "forces_mae" in m else ""
        energy = f"energy RMSE {m['energy_rmse']:.4f} eV" if "energy_rmse" in m else "no energies"
        print(f"  trivial baseline {name}: {energy}{forces}")
    if result["committee"]:
        c = result["committee"]
        forces = f", forces std-error Spearman {_fmt(c.get('forces_spearman'))}" if "forces_spearman" in c else ""
        print(f"  committee of {c['members']:.0f}: energy RMSE {c['energy_rmse']:.4f} eV, std-error Spearman "
              f"{_fmt(c['energy_spearman'])}{forces}  ({c['package']})")  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=1))
    print(f"  result: {Path(result['package']).parents[1] / 'result.json'}")
    report_registration(result)
    return 0


def _register(args: argparse.Namespace) -> int:
    from polyfid.finetune.publish import register_package

    result = register_package(args.package, args.name, args.mlflow_uri, args.experiment)
    if result["registration"] != "registered":
        report_registration(result)
        return 1
    print(f"registered {args.package} as models:/{result['registered_model']}/{result['version']} in {args.mlflow_uri}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from polyfid.finetune.report import COLUMNS, markdown_table, rows

    table = rows(args.runs)
    widths = {c: max(len(c), *(len(row[c]) for row in table)) for c in COLUMNS}
    for line in [dict(zip(COLUMNS, COLUMNS, strict=True)), *table]:
        print("  ".join(line[c].ljust(widths[c]) for c in COLUMNS))
    if args.markdown:
        from polyfid.core.atomic import atomic_write_bytes

        atomic_write_bytes(args.markdown, (markdown_table(table) + "\n").encode())
        print(f"table: {args.markdown}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import tempfile

    from polyfid.finetune.evaluate import parity_plot, predict, score, score_scan
    from polyfid.finetune.source import load_source

    with tempfile.TemporaryDirectory(prefix="polyfid-registry-") as download:
        model = load_source(args.model, args.registry_uri, Path(download))[0].model
    pred = predict(model, args.data, args.level, tuple(args.split), args.datasets)
    evaluation = score(pred, args.level)
    result = evaluation.as_dict()
    title = Path(args.model).name if not args.model.startswith("models:/") else args.model
    if args.plots:  # the names a fine-tune run gives the same plots: one file per plot, never two
        parity = args.plots / f"parity_{'+'.join(args.split)}.png"
        result["parity_plot"] = str(parity_plot(pred, evaluation, parity, title))
    if args.scan:
        plot = args.plots / "scan.png" if args.plots else None
        result["scan"] = score_scan(model, args.data, args.level, args.scan, plot, title)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print("\n".join(evaluation.lines()))
    if args.scan:
        s = result["scan"]
        print(f"scan {s['dataset']}: {s['points']} points, energy RMSE {1e3 * s['energy_rmse']:.1f} meV, roughness "
              f"{s['roughness_ratio']:.2f}x the reference's")  # fmt: skip
    if "parity_plot" in result:
        print(f"plot: {result['parity_plot']}")
    if args.scan and "plot" in result["scan"]:
        print(f"plot: {result['scan']['plot']}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import tempfile

    from polyfid.finetune.infer import predict_frames, read_frames, write_extxyz
    from polyfid.finetune.source import source_path
    from polyfid.models.package import load_members

    frames = read_frames(args.input, args.index, args.fmt)
    with tempfile.TemporaryDirectory(prefix="polyfid-registry-") as download:
        members = []
        for source in (args.model, *args.committee):
            members += load_members(source_path(source, args.registry_uri, Path(download))[0], args.device)
    labelled = predict_frames(members, args.level, frames, max_atoms=args.max_atoms, device=args.device,
                              dtype=args.dtype)  # fmt: skip
    write_extxyz(args.output, labelled)
    spread = f", committee of {len(members)} (energy_std, forces_std)" if len(members) > 1 else ""
    print(f"{len(labelled)} frames -> {args.output} ({args.level}{spread})")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _export(args: argparse.Namespace) -> int:
    from polyfid.finetune.source import local_package
    from polyfid.models.compiled import save_exported

    path, error = save_exported(local_package(str(args.model)), args.level, args.dtype)
    print(f"exported {args.level} ({args.dtype}) -> {path}; max deviation from eager on check structures: "
          f"{error['energy']:.1e} eV, {error['forces']:.1e} eV/A")  # fmt: skip
    return 0
