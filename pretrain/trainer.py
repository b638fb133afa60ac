"""The training loop every launcher runs (Ray Train worker, torchrun rank, lone process): one `Trainer.run()`.

The configured strategy (pretrain/strategies/) plans the heads and tasks and says which task each step trains on
and what happens around steps; the loop itself has no strategy branches. Every position (step, each task's epoch
and batch, schedule state, optimiser and masters) is in the checkpoint, and all randomness is a function of
(seed, counters), so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from polyfid.core.atomic import atomic_path, atomic_write_bytes
from polyfid.core.config import save_resolved
from polyfid.core.torch_files import load_weights_only
from polyfid.core.tracking import Tracker, plot_learning_curves
from polyfid.data_shards.stream import StreamPlan
from polyfid.data_shards.stream.catalog import ShardCatalog
from polyfid.models.package import PACKAGE_NAME, PYFUNC_CODE, git_commit, save_package
from polyfid.pretrain.checkpoint_engine import CheckpointError
from polyfid.pretrain.config import PretrainConfig
from polyfid.pretrain.data import TaskStream, epoch_batches, stream_config
from polyfid.pretrain.engine import TrainingObjective, build_polyfid_model, initialize_engine, master_weights
from polyfid.pretrain.losses import STAT_FIELDS, HeadTargets, metrics_from_stats
from polyfid.pretrain.runtime import RunContext, read_owner
from polyfid.pretrain.schedule import LRSchedule
from polyfid.pretrain.strategies import build_strategy

STOP_FILE = "STOP"  # created in the run directory (e.g. by the driver on SIGTERM): save and exit at the next step
CHECKPOINT_TAG = "state"
STREAMS_FILE = "polyfid_streams-rank-{rank}.json"  # each rank's stream states: a resume seeks there
BEST_WEIGHTS = "best_val_weights.pt"  # fp32 masters of the best validation so far (exported on early stop)


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses: the run is aborted (the message names the batches)."""


class Trainer:
    def __init__(self, cfg: PretrainConfig, ctx: RunContext, show_progress: bool = False):
        self.cfg, self.ctx = cfg, ctx
        self.run_dir = cfg.run_dir
        self.catalog = ShardCatalog.open(cfg.data.shard_dirs)
        self.strategy = build_strategy(cfg, self.catalog)
        self.levels = self.strategy.levels
        self.targets = [HeadTargets(lv, self.catalog.level_names.index(lv), cfg.loss.weights(lv)) for lv in self.levels]
        self.streams = {
            name: TaskStream(
                StreamPlan.from_config(stream_config(cfg.data, cfg.seed, "train", datasets), self.catalog),
                cfg.data,
                ctx.rank,
                ctx.world_size,
            )
            for name, datasets in self.strategy.tasks.items()
        }
        self.val_plan = self._val_plan()
        model = build_polyfid_model(cfg, self.catalog, self.levels)
        self.engine = initialize_engine(TrainingObjective(model, cfg.loss), cfg, ctx.device)
        self.schedule = LRSchedule(cfg.optim)
        self.tracker = Tracker(cfg.tracking, self.run_dir, enabled=ctx.is_main)
        self.show_progress = show_progress and ctx.is_main
        self.step = 0
        self.nonfinite = 0
        self.last_checkpoint = -1
        self.last_validation = -1
        self.resumed_from: int | None = None
        self.stop_requested = False
        self._window = self._new_window()

    def _val_plan(self) -> StreamPlan | None:
        trained = {d for ds in self.strategy.tasks.values() for d in ds}
        val = [d for d in self.catalog.datasets("val") if d in trained]
        if not val:
            warnings.warn("no val split for the trained datasets: validation is skipped", RuntimeWarning, stacklevel=2)
            return None
        return StreamPlan.from_config(stream_config(self.cfg.data, self.cfg.seed, "val", val), self.catalog)

    # ----- the loop -----
    def run(self) -> dict[str, Any]:
        """Train to optim.max_steps (or early stop / preemption); returns the run's result (also result.json)."""
        cfg = self.cfg
        if self.ctx.is_main:
            save_resolved(cfg, self.run_dir / "config.resolved.yaml")
        where = {"pid": os.getpid(), "node": self.ctx.node, "launcher": self.ctx.launcher}  # for operators
        atomic_write_bytes(self.run_dir / "workers" / f"rank-{self.ctx.rank}.json", json.dumps(where).encode())
        self._restore()
        self.tracker.start(self.run_dir.name, cfg.model_dump(mode="json"), self._lineage())
        for folder, manifest in self.catalog.folders.items():  # the training data, as MLflow dataset inputs
            counts = {f"{ds}/{split}": n for (ds, split), n in self.catalog.samples.items() if ds in manifest.datasets}
            self.tracker.log_dataset(folder.name, folder, manifest.build_fingerprint, "training", counts)
        if self.step == 0:
            self._validate()  # the untrained model: the learning curve's first point
        previous = self._install_sigterm()
        status, reason = "finished", ""
        bar = tqdm(total=cfg.optim.max_steps, initial=self.step, desc="pretrain", disable=not self.show_progress)
        try:
            while self.step < cfg.optim.max_steps:
                if self._at_boundary():
                    stop, superseded = self.ctx.any(self._stop_wanted(), self._superseded())
                    if stop or superseded:
                        status = "superseded" if superseded else "preempted"
                        break
                self._train_step()
                bar.update(1)
                if self.step % cfg.schedule.log_every == 0:
                    bar.set_postfix_str(self._log())
                if self._at_boundary() and self.step % cfg.schedule.val_every == 0:
                    self._validate()
                    if self.schedule.state.stop:
                        status = "early_stopped"
                        break
                if self._at_boundary() and self.step % cfg.schedule.checkpoint_every == 0:
                    self._checkpoint()
        except NonFiniteLossError as exc:
            status, reason = "aborted", str(exc)
        finally:
            bar.close()
            self._restore_sigterm(previous)
        return self._finish(status, reason)

    def _at_boundary(self) -> bool:
        return self.strategy.at_boundary(self.step)

    def _stop_wanted(self) -> bool:
        return self.stop_requested or (self.run_dir / STOP_FILE).exists()

    def _superseded(self) -> bool:
        """A later launch claimed the run directory (rank 0 reads its owner token; `claim_run`)."""
        return bool(self.ctx.owner) and self.ctx.is_main and read_owner(self.run_dir).get("token") != self.ctx.owner

    def _train_step(self) -> None:
        """One optimiser step (grad_accum micro-batches) on the task the strategy gives, which acts around it."""
        task = self.strategy.begin_step(self.step, self.engine)
        for name, stream in self.streams.items():  # only the running task holds a loader, threads and shards
            if name != task:
                stream.close()
        targets = self.strategy.targets(task, self.targets)
        lr = self.schedule.lr(self.step)
        for group in self.engine.optimizer.param_groups:
            group["lr"] = lr
        done = 0
        while done < self.cfg.optim.grad_accum:
            t0 = time.perf_counter()
            batch = next(self.streams[task]).to(self.ctx.device)
            t1 = time.perf_counter()
            self.engine.train()
            loss, stats = self.engine(batch, targets)
            finite = bool(torch.isfinite(loss))
            if self.ctx.any(not finite)[0]:
                self._skip(batch.ids if not finite else None)
                continue
            self.engine.backward(loss)
            self.engine.step()
            done += 1
            w = self._window
            w["wait"] += t1 - t0
            w["atoms"] += batch.n_atoms_total
            w["loss"] += float(loss.detach())
            w["n"] += 1
            w["stats"] += stats.detach().cpu()
        self.step += 1
        self.strategy.end_step(self.step, self.engine)

    def _skip(self, ids: list[str] | None) -> None:
        """A non-finite loss on some rank (`ids`: this rank's batch, if it is the one): no update, counted."""
        self.nonfinite += 1
        where = "a batch on another rank" if ids is None else f"batch {ids[:4]}{'...' if len(ids) > 4 else ''}"
        msg = f"step {self.step}: non-finite loss on {where}; skipped ({self.nonfinite} so far)"
        if self.ctx.is_main:
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        if self.nonfinite > self.cfg.optim.max_nonfinite:
            raise NonFiniteLossError(
                f"{msg}: more than optim.max_nonfinite={self.cfg.optim.max_nonfinite} non-finite losses, aborting. "
                "Check the data (polyfid shards inspect) and lower optim.lr."
            )

    def _new_window(self) -> dict[str, Any]:
        return {
            "t0": time.perf_counter(),
            "wait": 0.0,
            "atoms": 0,
            "loss": 0.0,
            "n": 0,
            "stats": torch.zeros(len(self.targets), len(STAT_FIELDS), dtype=torch.float64),
        }

    def _log(self) -> str:
        """Reduce the window's train metrics over ranks, log them (rank 0) and start a new window."""
        w, self._window = self._window, self._new_window()
        wall = max(time.perf_counter() - w["t0"], 1e-9)
        stats = self.ctx.all_reduce(w["stats"].clone())
        totals = self.ctx.all_reduce(torch.tensor([w["loss"], w["n"], w["atoms"], w["wait"] / wall]))
        loss, n, atoms, wait_frac = totals.tolist()
        metrics = {
            "train/loss": loss / max(n, 1),
            "perf/atoms_per_s": atoms / wall,
            "perf/atoms_per_s_per_worker": atoms / wall / self.ctx.world_size,
            "perf/data_wait_fraction": wait_frac / self.ctx.world_size,
            "lr": self.schedule.lr(self.step - 1),
            "nonfinite_skipped": float(self.nonfinite),
            **metrics_from_stats(stats, [t.name for t in self.targets], "train"),
            **self.strategy.metrics(self.step),
        }
        self.tracker.log_metrics(metrics, self.step)
        self._write_progress(metrics)
        return f"loss {metrics['train/loss']:.4g}, {metrics['perf/atoms_per_s']:.0f} atoms/s"

    def _write_progress(self, metrics: dict[str, float], status: str = "running") -> None:
        if self.ctx.is_main:
            info = {"step": self.step, "max_steps": self.cfg.optim.max_steps, "status": status,
                    "resumed_from": self.resumed_from, **metrics}  # fmt: skip
            atomic_write_bytes(self.run_dir / "progress.json", json.dumps(info).encode())

    def _validate(self) -> dict[str, float]:
        """Every val structure once across ranks; per-head energy/force MAE and RMSE; feeds plateau/early stop."""
        self.last_validation = self.step
        if self.val_plan is None:
            return {}
        module = self.engine.module
        module.eval()
        stats = torch.zeros(len(self.targets), len(STAT_FIELDS), dtype=torch.float64)
        batches = epoch_batches(self.val_plan, self.cfg.data, "eval", self.ctx.rank, self.ctx.world_size, 0)
        with torch.no_grad():
            for batch in batches:
                _, s = module(batch.to(self.ctx.device), self.targets)
                stats += s.cpu()
        module.train()
        self.ctx.all_reduce(stats)  # once, after the loop: ranks may hold different batch counts
        names = [t.name for t in self.targets]
        metrics = metrics_from_stats(stats, names, "val")
        metrics["val/loss"] = self._val_loss(metrics)
        self.schedule.observe(metrics["val/loss"])
        if self.schedule.state.bad_validations == 0 and self.schedule.state.best == metrics["val/loss"]:
            self._keep_best()
        metrics["lr_plateau_factor"] = self.schedule.state.factor
        self.tracker.log_metrics(metrics, self.step)
        return metrics

    def _val_loss(self, metrics: dict[str, float]) -> float:
        """The monitored value: the training loss' weighted (RMSE + MAE) terms on the val split."""
        total = 0.0
        for t in self.targets:
            for kind, weight in (("energy", t.weights.energy), ("forces", t.weights.forces)):
                if weight > 0 and f"val/{t.name}/{kind}_mae" in metrics:
                    total += weight * (metrics[f"val/{t.name}/{kind}_mae"] + metrics[f"val/{t.name}/{kind}_rmse"])
        return total

    def _keep_best(self) -> None:
        """The fp32 masters of the best validation so far, written atomically (rank 0): an early-stopped run
        exports them instead of the weights that stopped improving `early_stopping_patience` validations ago."""
        values = master_weights(self.engine.module)  # collective: every rank validates together
        if self.ctx.is_main:
            with atomic_path(self.run_dir / BEST_WEIGHTS) as tmp:
                torch.save({"step": self.step, "values": values}, tmp)

    def _best_values(self) -> tuple[int, list[torch.Tensor]] | None:
        path = self.run_dir / BEST_WEIGHTS
        if not path.exists():
            return None
        saved = load_weights_only(path, "cpu")
        if int(saved["step"]) > self.step:  # from a timeline a resume abandoned
            return None
        return int(saved["step"]), list(saved["values"])

    # ----- checkpoints -----
    def _client_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "positions": {name: [s.epoch, s.step] for name, s in self.streams.items()},
            "schedule": self.schedule.state_dict(),
            "nonfinite": self.nonfinite,
            "last_validation": self.last_validation,
            "torch_rng": torch.get_rng_state(),
        }

    def _checkpoint(self) -> None:
        state = self._client_state()

        streams = {"layout": self._stream_layout(), "tasks": {name: s.position for name, s in self.streams.items()}}

        def write(folder: Path) -> None:
            self.engine.save_checkpoint(str(folder), tag=CHECKPOINT_TAG, client_state={"polyfid": state})
            atomic_write_bytes(folder / STREAMS_FILE.format(rank=self.ctx.rank), json.dumps(streams).encode())

        self.ctx.store.save(self.step, write, {"train_step": float(self.step)})
        self.last_checkpoint = self.step

    def _restore(self) -> None:
        with self.ctx.store.latest() as folder:
            if folder is None:
                return
            _, client = self.engine.load_checkpoint(
                str(folder), tag=CHECKPOINT_TAG, load_optimizer_states=True, load_lr_scheduler_states=False
            )
        if not client or "polyfid" not in client:
            raise CheckpointError(f"{folder}: not a polyfid training checkpoint (no polyfid client state)")
        state = client["polyfid"]
        self.step = self.last_checkpoint = self.resumed_from = int(state["step"])
        for name, pos in self._saved_positions(folder, state["positions"]).items():
            if name not in self.streams:
                raise CheckpointError(f"{folder}: checkpoint task {name!r} is not a task of this config")
            self.streams[name].restore(pos)
        self.schedule.load_state_dict(state["schedule"])
        self.nonfinite = int(state["nonfinite"])
        self.last_validation = int(state["last_validation"])
        torch.set_rng_state(state["torch_rng"])
        if self.ctx.is_main:
            print(f"polyfid: resumed from {folder} at step {self.step}", flush=True)

    def _stream_layout(self) -> list:
        """What a saved stream state is valid for: the same ranks, seed and data settings (loader workers, mixing,
        batching, shuffling); a resume with other ones replays instead."""
        return [self.ctx.world_size, self.cfg.seed, self.cfg.data.model_dump_json()]

    def _saved_positions(self, folder: Path, replay: dict[str, Any]) -> dict[str, Any]:
        """This rank's stream states (each rank reads its own shards), or the (epoch, step) positions every rank
        shares when they are missing (older checkpoints) or the ranks or data settings changed: those replay."""
        path = folder / STREAMS_FILE.format(rank=self.ctx.rank)
        if not path.is_file():
            return replay
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable stream positions ({exc})") from None
        return saved["tasks"] if saved.get("layout") == self._stream_layout() else replay

    # ----- the end -----
    def _finish(self, status: str, reason: str) -> dict[str, Any]:
        if status == "superseded":  # the run directory belongs to a later launch now: write nothing
            if self.ctx.is_main:
                print(f"polyfid: {self.run_dir} was taken over by a later launch; this one stops", flush=True)
            return {"status": status, "step": self.step}
        result: dict[str, Any] = {
            "status": status,
            "step": self.step,
            "reason": reason,
            "resumed_from": self.resumed_from,
        }
        if status != "aborted":
            if self.last_validation != self.step and status != "preempted":
                self._validate()
            if self.last_checkpoint != self.step:
                self._checkpoint()
        if status in ("finished", "early_stopped"):
            result.update(self._export(status))
        if self.ctx.is_main:
            curves = plot_learning_curves(self.tracker.metrics_path, self.run_dir / "plots" / "learning_curves.png")
            if curves:
                self.tracker.log_artifact(curves, "plots")
            self.tracker.end("FAILED" if status == "aborted" else "FINISHED")
            self._write_progress({}, status)
            atomic_write_bytes(self.run_dir / "result.json", json.dumps(result, indent=1).encode())
        return result

    def _lineage(self) -> dict[str, str]:

        git = git_commit() or {}
        return {
            "polyfid.strategy": self.cfg.strategy.kind,
            "polyfid.data_manifest_sha256": self.catalog.fingerprint,
            "polyfid.git_commit": str(git.get("git_commit", "unknown")),
            "polyfid.git_dirty": str(git.get("git_dirty", "unknown")),
            "polyfid.levels": ",".join(self.levels),
        }

    def _export(self, status: str) -> dict[str, Any]:
        """Consolidated fp32 weights (from DeepSpeed's masters; an early-stopped run's best validation) -> model
        package -> MLflow registry."""
        values = master_weights(self.engine.module)  # collective: every rank
        if not self.ctx.is_main:
            return {}
        exported_step = self.step
        best = self._best_values() if status == "early_stopped" else None
        if best is not None:
            exported_step, values = best
        live = self.engine.module.model
        names = [n for n, p in live.named_parameters() if p.requires_grad]
        state = {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in live.state_dict().items()}
        state.update({n: v.cpu() for n, v in zip(names, values, strict=True)})
        model = build_polyfid_model(self.cfg, self.catalog, self.levels)
        model.load_state_dict(state)
        path = save_package(
            self.run_dir / "model" / PACKAGE_NAME,
            model,
            provenance={
                "data_manifest_sha256": self.catalog.fingerprint,
                "config": self.cfg.model_dump(mode="json"),
                "step": exported_step,
                "mlflow_run_id": self.tracker.run_id,
            },
        )
        self.tracker.log_artifact(path, "package")
        self.tracker.log_artifact(self.run_dir / "config.resolved.yaml", "config")
        registration: dict[str, Any] = {"registered_model": None, "version": None, "registration": "disabled"}
        if self.cfg.tracking.registered_model and self.cfg.tracking.register_model:
            description = (f"polyfid {self.cfg.strategy.kind} pretraining, heads {', '.join(self.levels)}, step "
                           f"{exported_step}, data manifests sha256 {self.catalog.fingerprint[:12]}")  # fmt: skip
            registration = self.tracker.register(self.cfg.tracking.registered_model, path, self._lineage(),
                                                 PYFUNC_CODE, self.levels[0], description)  # fmt: skip
        return {"package": str(path), "exported_step": exported_step, **registration}

    # ----- signals -----
    def _install_sigterm(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return None  # e.g. a Ray Train worker thread: preemption comes through the STOP file

        def handler(signum: int, frame: Any) -> None:
            self.stop_requested = True

        return signal.signal(signal.SIGTERM, handler)

    @staticmethod
    def _restore_sigterm(previous: Any) -> None:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def train(cfg: PretrainConfig, ctx: RunContext, show_progress: bool = False) -> dict[str, Any]:
    """Build the trainer and run it; the DeepSpeed engine is torn down afterwards."""
    trainer = Trainer(cfg, ctx, show_progress)
    try:
        return trainer.run()
    finally:
        for stream in trainer.streams.values():
            stream.close()
        trainer.engine.destroy()
