"""Launchers: a Ray Train TorchTrainer (local Ray or a cluster), or one rank under torchrun / deepspeed / srun.

Both run the same `polyfid.pretrain.trainer.train`. The Ray driver shows a progress bar from the run's progress file
(rank 0 writes it), turns SIGTERM into the run's STOP file (workers save a checkpoint and return), and re-running
the same command resumes from the latest checkpoint that Ray Train kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from tqdm import tqdm

from polyfid.core.config import validate_config
from polyfid.core.errors import PolyfidError
from polyfid.data_shards.stream.catalog import ShardCatalog
from polyfid.pretrain.config import PretrainConfig
from polyfid.pretrain.runtime import (
    WARNINGS_FILE,
    RunContext,
    claim_run,
    prepare_deepspeed,
    read_owner,
    relay_warnings,
)
from polyfid.pretrain.strategies import build_strategy
from polyfid.pretrain.trainer import STOP_FILE, train

RAY_RUN_NAME = "ray"  # Ray Train's folder inside the run directory (checkpoints, restore state)


class TrainingAborted(RuntimeError):
    """The run stopped itself (e.g. too many non-finite losses); the message says why."""


def run_rank(cfg: PretrainConfig, show_progress: bool = True) -> dict[str, Any]:
    """One rank launched by torchrun / the deepspeed launcher / srun (or a lone process: rank 0 of 1)."""
    prepare_deepspeed(cfg.scaling.use_gpu)
    ctx = RunContext.from_env(cfg.scaling.use_gpu, cfg.run_dir, cfg.schedule.keep_checkpoints)
    if ctx.is_main:
        (cfg.run_dir / STOP_FILE).unlink(missing_ok=True)
        claim_run(cfg.run_dir)
    ctx.barrier()
    ctx.owner = read_owner(cfg.run_dir).get("token", "")
    result = train(cfg, ctx, show_progress)
    ctx.close()
    return _checked(result)


def ray_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker entry point: `config` holds the run's config and its owner token."""
    cfg = validate_config(config["config"], "train_loop_config", PretrainConfig)
    prepare_deepspeed(cfg.scaling.use_gpu)
    ctx = RunContext.from_ray(cfg.scaling.use_gpu, config["owner"])
    with relay_warnings(cfg.run_dir / WARNINGS_FILE) if ctx.is_main else contextlib.nullcontext():
        train(cfg, ctx)


def run_ray(cfg: PretrainConfig, show_progress: bool = True) -> dict[str, Any]:
    """Drive a TorchTrainer of `scaling.num_workers` workers; returns the run's result."""
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # report() otherwise blocks up to ~2 s
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    s = cfg.scaling
    build_strategy(cfg, ShardCatalog.open(cfg.data.shard_dirs))  # config vs shards errors here, not in every worker
    owner = claim_run(cfg.run_dir)
    (cfg.run_dir / STOP_FILE).unlink(missing_ok=True)
    for stale in ("progress.json", "result.json", WARNINGS_FILE):
        (cfg.run_dir / stale).unlink(missing_ok=True)
    started = not ray.is_initialized()
    if started:
        # worker logs stay in Ray's session logs (the driver shows progress; failures come back as exceptions)
        if s.address:
            ray.init(address=s.address, log_to_driver=False)
        else:  # logical CPUs beyond the cores: Ray Data tasks must still find a slot beside the train workers
            n_cpus = max(os.cpu_count() or 1, int(s.num_workers * s.cpus_per_worker) + 2)
            ray.init(address="local", num_cpus=n_cpus, object_store_memory=256 * 2**20, include_dashboard=False,
                     log_to_driver=False)  # fmt: skip
    trainer = TorchTrainer(
        ray_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "owner": owner},
        scaling_config=ScalingConfig(
            num_workers=s.num_workers,
            use_gpu=s.use_gpu,
            resources_per_worker={"CPU": s.cpus_per_worker, **({"GPU": 1} if s.use_gpu else {})},
            placement_strategy=s.placement_strategy,
        ),
        torch_config=TorchConfig(backend="nccl" if s.use_gpu else "gloo"),
        run_config=RunConfig(
            name=RAY_RUN_NAME,
            storage_path=str(cfg.run_dir),
            failure_config=FailureConfig(max_failures=s.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.schedule.keep_checkpoints),
        ),
    )
    errors: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # re-raised in the driver thread below
            errors.append(exc)

    thread = threading.Thread(target=fit, name="polyfid-fit", daemon=True)
    previous = _stop_on_sigterm(cfg.run_dir)
    try:
        thread.start()
        _follow(cfg.run_dir, cfg.optim.max_steps, thread, show_progress)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if started:
            ray.shutdown()
    if errors:
        raise _user_error(errors[0]) or errors[0]
    return _checked(_read_json(cfg.run_dir / "result.json"))


def _user_error(exc: BaseException) -> PolyfidError | None:
    """The `PolyfidError` a worker raised, dug out of Ray's wrappers (so the CLI prints it as one line)."""
    from ray.exceptions import RayError

    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, PolyfidError) and not isinstance(e, RayError):
            return e
        stack += [getattr(e, "cause", None), e.__cause__, e.__context__]
        stack += list(getattr(e, "worker_failures", {}).values())  # Ray Train v2's WorkerGroupError
    return None


def _stop_on_sigterm(run_dir: Path) -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        (run_dir / STOP_FILE).touch()

    return signal.signal(signal.SIGTERM, handler)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


class _WarningsTail:
    """Prints the lines rank 0 appends to its warnings file, each once, on the driver's stderr."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            tqdm.write(f"polyfid: worker warning: {line}", file=sys.stderr)


def _follow(run_dir: Path, max_steps: int, thread: threading.Thread, show: bool) -> None:
    """Progress bar (steps, atoms/s, loss, ETA) from rank 0's progress file until training ends; rank 0's
    warnings are printed as they come."""
    resumed, started, shown = None, False, None
    tail = _WarningsTail(run_dir / WARNINGS_FILE)
    bar = tqdm(total=max_steps, desc="pretrain", disable=not show, unit="step")
    while thread.is_alive():
        thread.join(timeout=1.0)
        tail.poll()
        info = _read_json(run_dir / "progress.json")
        if info.get("resumed_from") not in (None, resumed):
            resumed = info["resumed_from"]
            tqdm.write(f"polyfid: workers resumed from the checkpoint of step {resumed}")
        if "step" not in info or bar.disable:
            continue
        if not started:  # rate and ETA from the first report on, not from Ray's start-up
            bar.reset(total=max_steps)
            bar.initial = int(info["step"])
            started = True
        if int(info["step"]) != shown:  # one line per new step report, never a repeat of the same one
            shown = bar.n = int(info["step"])
            if "perf/atoms_per_s" in info:
                bar.set_postfix_str(f"loss {info['train/loss']:.4g}, {info['perf/atoms_per_s']:.0f} atoms/s")
            bar.refresh()
        if shown >= max_steps or info.get("status", "running") != "running":
            bar.close()  # training is over: export and registration follow, the bar stops here
    bar.close()
    tail.poll()


def _checked(result: dict[str, Any]) -> dict[str, Any]:
    if result.get("status") == "aborted":
        raise TrainingAborted(result.get("reason") or "training aborted")
    return result


def launch(cfg: PretrainConfig, launcher: str = "ray", show_progress: bool = True) -> dict[str, Any]:
    if launcher == "ray":
        return run_ray(cfg, show_progress)
    if launcher == "torchrun":
        return run_rank(cfg, show_progress)
    raise ValueError(f"unknown launcher {launcher!r} (ray or torchrun)")
