"""Fine-tuning a pretrained model to a small set at one level of theory (one process: the sets are small).

Order of work: load the source package; add (or reuse) the target level's head, initialised fresh or from a named
head; refit its E0 by least squares on the target's train energies BEFORE any gradient step (levels differ by
hundreds of eV in absolute energy, so step-0 errors are already sane); freeze per strategy; Adam on energy
(RMSE + MAE, eV) and optionally force errors; keep the weights of the best validation energy RMSE; stop after
`patience` epochs without improvement. Every random choice derives from the seed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from polyfid.core.errors import ConfigError
from polyfid.data_shards.record import LevelLabels, Record
from polyfid.data_shards.reference_energies import E0Fit, fit_e0
from polyfid.data_shards.stream import Batch, StreamConfig, StreamPlan
from polyfid.data_shards.stream.packing import pack
from polyfid.data_shards.stream.pipeline import record_streams
from polyfid.data_shards.stream.seeding import derive_rng
from polyfid.data_shards.stream.sources import Consumer
from polyfid.data_shards.stream.torch_loader import read_webdataset
from polyfid.finetune.config import LINEAR_INIT, FinetuneConfig
from polyfid.finetune.distill import teacher_labels, with_distilled
from polyfid.finetune.linear import LinearBaseline, element_counts, fit_structures, load_into_head
from polyfid.finetune.source import load_source
from polyfid.models import PolyfidModel
from polyfid.pretrain.config import LevelWeights, OptimSection
from polyfid.pretrain.losses import (
    STAT_FIELDS,
    HeadTargets,
    force_heads,
    head_stats,
    metrics_from_stats,
    multifidelity_loss,
)
from polyfid.pretrain.schedule import LRSchedule


@dataclass
class TargetData:
    """The target set's train (seeded `n_train` subset), val and test records with an energy at the level; `fit`:
    the records gradient steps see (the train subset plus the auxiliary levels' records, each record keeping only
    the labels it is allowed to fit); the batch axes to collate them on."""

    plan: StreamPlan
    train: list[Record]
    val: list[Record]
    test: list[Record]
    fit: list[Record]
    level_index: int

    def batches(self, records: list[Record], max_atoms: int) -> list[Batch]:
        return [self.plan.collate(group) for group in pack(records, max_atoms)]


def _records(
    cfg: FinetuneConfig, split: str, level: str | None, datasets: list[str] | None
) -> tuple[StreamPlan, list[Record]]:
    """Records of the split (datasets: None = all) with an energy or forces at `level` (None: every record), by
    (dataset, id): seeded subsets then depend on the data, not on how the build laid records out in shards."""
    t = cfg.target
    plan = StreamPlan.from_config(
        StreamConfig(shard_dirs=t.shard_dirs, split=split, datasets=datasets, max_atoms=t.max_atoms)
    )
    if level is not None and level not in plan.level_names:
        raise ConfigError(
            f"target.level {level!r} is not in {[str(d) for d in t.shard_dirs]} (levels: {plan.level_names})"
        )
    streams = record_streams(plan, "eval", read_webdataset, Consumer(), epoch=0)
    records = sorted((r for name in sorted(streams) for r in streams[name]), key=lambda r: (r.dataset, r.id))
    if level is not None:
        records = [r for r in records if _has_label(r, level, energy_only=False)]
    return plan, records


def _has_label(record: Record, level: str, energy_only: bool = True) -> bool:
    labels = record.labels.get(level)
    return labels is not None and (labels.energy is not None or (not energy_only and labels.forces is not None))


def subset(records: list[Record], n: int | None, seed: int, what: str) -> list[Record]:
    """The first `n` of a seeded shuffle (all, shuffled, when `n` is None)."""
    order = derive_rng(seed, what).permutation(len(records))
    if n is not None:
        if n > len(records):
            raise ConfigError(f"{what}: asked for {n} structures but the train split has {len(records)}")
        order = order[:n]
    return [records[k] for k in order]


def minus_baseline(records: list[Record], level: str, baseline: str, split: str) -> list[Record]:
    """Delta-learning labels: `level` minus `baseline` (energies; forces where both have them). A structure
    without a baseline energy cannot be predicted at inference, so none may be missing."""
    out = []
    for r in records:
        base, target = r.labels.get(baseline), r.labels.get(level)
        if target is None:
            out.append(r)
            continue
        if base is None or base.energy is None:
            raise ConfigError(f"baseline_level {baseline!r}: {r.id} ({split} split) has no {baseline} energy")
        forces = None if target.forces is None or base.forces is None else target.forces - base.forces
        energy = None if target.energy is None else target.energy - base.energy
        out.append(replace(r, labels={**r.labels, level: LevelLabels(energy, forces)}))
    return out


def load_target(cfg: FinetuneConfig) -> TargetData:
    t = cfg.target
    _, pool = _records(cfg, "train", t.level, t.datasets)
    if cfg.baseline_level:
        pool = minus_baseline(pool, t.level, cfg.baseline_level, "train")
    seed = cfg.seed if t.subset_seed is None else t.subset_seed
    train = subset([r for r in pool if _has_label(r, t.level)], t.n_train, seed, "finetune-subset")
    allowed = {(r.dataset, r.id): {t.level} for r in train}
    by_key = {(r.dataset, r.id): r for r in train}
    for aux in cfg.auxiliary:
        _, records = _records(cfg, "train", aux.level, aux.datasets or t.datasets)
        for r in subset(records, aux.n, seed, f"finetune-auxiliary-{aux.level}"):
            allowed.setdefault((r.dataset, r.id), set()).add(aux.level)
            by_key.setdefault((r.dataset, r.id), r)
    fit = [
        replace(r, labels={lv: lab for lv, lab in r.labels.items() if lv in allowed[key]}) for key, r in by_key.items()
    ]
    if cfg.distill:
        fit = _distilled(cfg, fit, seed)
    plan, val = _records(cfg, "val", t.level, t.datasets)
    _, test = _records(cfg, "test", t.level, t.datasets)
    val, test = [r for r in val if _has_label(r, t.level)], [r for r in test if _has_label(r, t.level)]
    if cfg.baseline_level:
        val, test = (minus_baseline(rs, t.level, cfg.baseline_level, sp) for rs, sp in ((val, "val"), (test, "test")))
    return TargetData(plan, train, val, test, fit, plan.level_names.index(t.level))


def _distilled(cfg: FinetuneConfig, fit: list[Record], seed: int) -> list[Record]:
    """`fit` plus the `distill` teacher's target-level labels on the structures it names (those carrying the labels
    a Delta-learning teacher adds its predictions to)."""
    d, t = cfg.distill, cfg.target
    teacher = load_source(d.teacher, cfg.registry_uri or cfg.tracking.mlflow_uri, cfg.run_dir / "teacher")[0].model
    method = teacher.heads.baselines.get(t.level)
    plan, records = _records(cfg, "train", method, d.datasets or t.datasets)
    if method is not None:
        records = [r for r in records if r.labels[method].energy is not None and r.labels[method].forces is not None]
    records = subset(records, d.n, seed, "finetune-distill")
    return with_distilled(fit, records, teacher_labels(teacher, plan, records, t.level, t.max_atoms), t.level)


def e0_prior_head(model: PolyfidModel, cfg: FinetuneConfig) -> str | None:
    """The head whose E0 the target level's refit corrects, named on the source model: `cfg.e0_prior`, else the
    target's own head, else the head `head_init` copies or `delta_from` names; None: zero (a fresh head)."""
    if cfg.e0_prior is not None:
        return cfg.e0_prior
    if cfg.target.level in model.head_names:
        return cfg.target.level
    return cfg.head_init if cfg.head_init not in (None, LINEAR_INIT) else cfg.delta_from


def head_e0(model: PolyfidModel, name: str | None) -> np.ndarray | None:
    """A copy of the head's E0, None for no head; an explicit prior must be a head of the model."""
    if name is None:
        return None
    if name not in model.head_names:
        raise ConfigError(f"e0_prior {name!r} is not a head of the model (heads: {model.head_names})")
    return model.heads[name].e0.detach().double().numpy().copy()


def refit_e0(model: PolyfidModel, level: str, batch: Batch, level_index: int, prior: np.ndarray | None = None) -> E0Fit:
    """E0 of the head by least squares on the batch's energies minus the head's network energy, as a correction to
    `prior` along the composition directions the batch determines (`fit_e0`); returns the fit."""
    with torch.no_grad():
        head = model.heads[level]
        head.e0.zero_()
        net = model(batch, [level], compute_forces=False).energy[:, 0].double().numpy()
    counts = element_counts(batch, model.backbone.elements)
    fit = fit_e0(counts, batch.energy[:, level_index].numpy() - net, prior)
    head.e0.copy_(torch.from_numpy(fit.e0))
    return fit


def fitted_levels(cfg: FinetuneConfig, plan: StreamPlan) -> list[HeadTargets]:
    """The target level (energies, + forces if asked) and the auxiliary levels, with their loss weights."""
    index = plan.level_names.index
    targets = [
        HeadTargets(cfg.target.level, index(cfg.target.level), LevelWeights(energy=1.0, forces=cfg.forces_weight))
    ]
    for aux in cfg.auxiliary:
        if aux.level not in plan.level_names:
            raise ConfigError(f"auxiliary level {aux.level!r} is not in the target shards (levels: {plan.level_names})")
        targets.append(
            HeadTargets(aux.level, index(aux.level), LevelWeights(energy=aux.energy_weight, forces=aux.forces_weight))
        )
    return targets


def prepare_model(model: PolyfidModel, cfg: FinetuneConfig) -> str:
    """Add/reuse the target head (initialised as configured) and the auxiliary levels' heads, and set which
    parameters train. Returns how the target head was initialised (reported)."""
    level = cfg.target.level
    fitted = [level, *(aux.level for aux in cfg.auxiliary)]
    if cfg.delta_from in fitted[1:] and cfg.delta_from not in model.head_names:
        model.add_head(cfg.delta_from, None, normalize=False)  # a delta head's base exists before it
    if level in model.head_names and model.heads.baselines.get(level) != cfg.baseline_level:
        raise ConfigError(
            f"the source's head {level!r} corrects {model.heads.baselines.get(level)!r}, not baseline_level "
            f"{cfg.baseline_level!r}: fit another level name"
        )
    if level in model.head_names:
        if cfg.delta_from is not None:
            raise ConfigError(f"delta_from: the source already has a head {level!r}; a delta head must be new")
        how = f"existing head {level!r}"
    elif cfg.delta_from is not None:
        if cfg.delta_from not in model.head_names:
            raise ConfigError(f"delta_from {cfg.delta_from!r} is neither an auxiliary level nor a source head")
        model.add_head(level, None, normalize=False, base=cfg.delta_from)
        how = f"delta head on {cfg.delta_from!r}"
    else:
        head = model.add_head(level, None, normalize=False)
        if cfg.head_init == LINEAR_INIT:
            how = "linear baseline's ridge weights"
        elif cfg.head_init is not None:
            head.load_state_dict(model.heads[cfg.head_init].state_dict())
            how = f"copied from head {cfg.head_init!r}"
        else:
            how = "fresh"
    if cfg.baseline_level is not None:
        model.heads.baselines[level] = cfg.baseline_level
    for name in fitted[1:]:
        if name not in model.head_names:
            model.add_head(name, None, normalize=False)
    for p in model.parameters():
        p.requires_grad_(cfg.strategy == "full")
    if cfg.strategy == "freeze":
        for k, block in enumerate(model.backbone.blocks):
            for p in block.parameters():
                p.requires_grad_(k >= cfg.freeze_blocks)
    if cfg.strategy in ("head", "freeze"):
        for name in fitted:
            for p in model.heads[name].parameters():
                p.requires_grad_(True)
    return how


def energy_errors(model: PolyfidModel, batches: list[Batch], level: str, level_index: int) -> dict[str, float]:
    """Energy MAE/RMSE (eV) and, where the data has forces at the level, force MAE/RMSE (eV/A): the training
    loop's per-head error sums (`head_stats`) over the batches."""
    model.eval()
    target = [HeadTargets(level, level_index, LevelWeights())]
    stats = torch.zeros(1, len(STAT_FIELDS), dtype=torch.float64)
    for b in batches:
        with torch.no_grad():
            out = model(b, [level], compute_forces=bool(b.forces_mask[:, level_index].any()))
        stats += head_stats(out, b, target)
    return {key.rsplit("/", 1)[1]: value for key, value in metrics_from_stats(stats, [level], "").items()}


def finetune(
    model: PolyfidModel,
    cfg: FinetuneConfig,
    data: TargetData,
    log=None,
    linear: LinearBaseline | None = None,
    show_progress: bool = False,
) -> dict[str, object]:
    """Train in place; returns step-0 and best metrics. `log(metrics, epoch)` is called with the starting point
    (epoch 0: the model a fine-tune that never improves returns) and after each epoch. `linear`: the linear
    baseline already fitted on this model and train set (head_init=linear fits it when not given).
    `show_progress`: a bar over the step budget with epochs, val RMSE and ETA on stderr."""
    level, h = cfg.target.level, data.level_index
    if not data.val:
        raise ConfigError(
            f"the target has no val-split energies at {level!r} in {[str(d) for d in cfg.target.shard_dirs]}: "
            "fine-tuning keeps the best epoch on val (build the shards with split.val > 0)"
        )
    torch.manual_seed(cfg.seed)
    prior_name = e0_prior_head(model, cfg)
    existed = set(model.head_names)
    init = prepare_model(model, cfg)
    targets = fitted_levels(cfg, data.plan)
    if cfg.head_init == LINEAR_INIT:  # linear probing, then fine-tuning: step 0 is the linear baseline
        prior = head_e0(model, prior_name)
        linear = linear or fit_structures(model, data.plan.collate(data.train), h, cfg.seed, prior)
        load_into_head(linear, model.heads[level])
    e0_fits = {}  # E0 by least squares before any step, on the energies each level is allowed to fit
    for t in [*targets[1:], targets[0]]:  # auxiliary levels first: a delta head's prior is its base's refit
        with_energy = [r for r in data.fit if _has_label(r, t.name)]
        if with_energy:
            source = prior_name if t.name == level else (t.name if t.name in existed else None)
            fit = refit_e0(model, t.name, data.plan.collate(with_energy), t.level_index, head_e0(model, source))
            e0_fits[t.name] = {"rank": fit.rank, "prior": source or "zero",
                               "kept_from_prior": fit.undetermined(model.backbone.elements)}  # fmt: skip
    val = data.batches(data.val, cfg.target.max_atoms)
    step0 = energy_errors(model, val, level, h)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    per_epoch = sum(1 for _ in pack(data.fit, cfg.target.max_atoms))
    budget = cfg.steps or cfg.max_epochs * per_epoch
    schedule = LRSchedule(OptimSection(lr=cfg.lr, max_steps=budget, decay=cfg.lr_decay,
                                       plateau_patience=cfg.plateau_patience, plateau_factor=cfg.plateau_factor,
                                       early_stopping_patience=cfg.patience))  # fmt: skip
    names = [t.name for t in targets]
    # the starting point (refitted E0) is a candidate too: a fine-tune that never beats it returns it
    best, best_state, epochs, step = step0["energy_rmse"], copy.deepcopy(model.state_dict()), 0, 0
    schedule.observe(best)
    if log is not None:
        log({f"val/{k}": v for k, v in step0.items()}, 0)
    bar = tqdm(
        total=budget, desc=f"finetune {level}", unit="step", disable=None if show_progress else True, leave=False
    )  # fmt: skip  (None: shown on a terminal only, never flooding a log file)
    bar.set_postfix_str(f"epoch 0, val E RMSE {best:.4f} eV")
    while step < budget and not schedule.state.stop:
        order = derive_rng(cfg.seed, epochs, "finetune-epoch").permutation(len(data.fit))
        epochs += 1
        model.train()
        for batch in data.batches([data.fit[k] for k in order], cfg.target.max_atoms):
            for group in opt.param_groups:
                group["lr"] = schedule.lr(step)
            wanted = force_heads(batch, targets)
            out = model(batch, names, compute_forces=bool(wanted), force_heads=wanted)
            loss = multifidelity_loss(out, batch, targets, cfg.hierarchicality_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            bar.update()
            if step >= budget:
                break
        metrics = energy_errors(model, val, level, h)
        if log is not None:
            log({**{f"val/{k}": v for k, v in metrics.items()}, "lr": schedule.lr(step)}, epochs)
        schedule.observe(metrics["energy_rmse"])
        if metrics["energy_rmse"] < best:
            best, best_state = metrics["energy_rmse"], copy.deepcopy(model.state_dict())
        bar.set_postfix_str(f"epoch {epochs}, val E RMSE {metrics['energy_rmse']:.4f} eV (best {best:.4f})")
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return {"head_init": init, "e0_fit": e0_fits, "step0_val": step0, "best_val_energy_rmse": best, "epochs": epochs,
            "steps": step}  # fmt: skip
