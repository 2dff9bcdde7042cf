"""The training loop for every stage: plain PyTorch, resumable, the same code under ``torchrun`` (DDP).

``train_stage(kind, cfg, out)`` writes ``<out>/<stage>/``: a checkpoint folder (trainable tensors + config, its
``parent`` the stage it started from) plus the trainer state (step, optimizer, RNG, data position and the precision
the run uses), replaced atomically every ``checkpoint_every`` steps and at the end. Metrics go to
``<out>/logs/<stage>/metrics.jsonl``. A ``StageKind`` names a kind's set-up, step and closing report: ``INSTRUCT``
here for stages 1-2, ``CONTRASTIVE`` in ``training/contrastive.py`` for stage 0, which builds on this module (this
module never imports it); ``training/run.py``'s ``run_stage`` picks the kind from ``cfg.kind``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pointalign.checkpoint import CONFIG, checkpoint_chain, load_state_into, read_checkpoint_meta, save_checkpoint
from pointalign.config import ModelConfig, apply_overrides, preset
from pointalign.data.colour_words import colour_spans
from pointalign.errors import CheckpointError, ConfigError
from pointalign.models.builders import build_model
from pointalign.models.pointalign import PointAlignModel
from pointalign.training.config import TrainConfig
from pointalign.training.data import MixtureData, PointStore
from pointalign.training.distributed import DistInfo, all_reduce_mean, barrier, cleanup, init_distributed
from pointalign.training.feature_cache import FeatureCache, encoder_side_frozen
from pointalign.training.optim import build_optimizer, lr_at, set_lr
from pointalign.training.precision import (
    FrozenCasts,
    PrecisionChoice,
    for_llm_dtype,
    llm_attention,
    resolve_precision,
    set_llm_attention,
)
from pointalign.training.precision import autocast as precision_autocast
from pointalign.training.stages import apply_trainable

TRAINER_STATE = "trainer_state.json"
OPTIMIZER_STATE = "optimizer.pt"


# ---------------------------------------------------------------------------------------------------------------
# Model for a stage


def resolve_init(cfg: TrainConfig, out: Path) -> Path | None:
    """The checkpoint folder a stage starts from: ``<out>/<init_from>`` or a path; None to build from scratch."""
    if cfg.init_from is None:
        return None
    for candidate in (out / cfg.init_from, Path(cfg.init_from).expanduser()):
        if (candidate / CONFIG).is_file():
            meta = read_checkpoint_meta(candidate)
            if not meta["checkpoint"].get("complete", True):
                raise CheckpointError(f"init_from {candidate}: that stage has not finished (resume it first)")
            return candidate
    raise FileNotFoundError(
        f"init_from={cfg.init_from!r}: no checkpoint at {out / cfg.init_from} (run that stage first)"
    )


def stage_model_config(cfg: TrainConfig, parent: Path | None) -> ModelConfig:
    """The parent's model config (or the preset's) with the stage's ``model_set`` and loss settings applied."""
    base = ModelConfig.from_dict(read_checkpoint_meta(parent)["model"]) if parent else preset(cfg.preset)
    data = apply_overrides(base.to_dict(), [f"{k}={json.dumps(v)}" for k, v in cfg.model_set.items()])
    model_cfg = ModelConfig.from_dict(data)
    return dataclasses.replace(model_cfg, align=cfg.align_overrides(model_cfg.align))


def build_stage_model(cfg: TrainConfig, out: Path) -> tuple[PointAlignModel, ModelConfig, Path | None]:
    parent = resolve_init(cfg, out)
    model_cfg = stage_model_config(cfg, parent)
    model = build_model(model_cfg)
    apply_trainable(model, cfg.trainable)  # first: trainable 16-bit weights become fp32 and load their saved values
    loaded: set[str] = set()
    if parent is not None:
        for ckpt in checkpoint_chain(parent):
            loaded.update(load_state_into(model, ckpt))
    if model.query_experts is not None and not any(n.startswith("query_experts.") for n in loaded):
        model.query_experts.copy_queries(model.qformer.query_tokens)  # experts this stage adds start from the queries
    return model, model_cfg, parent


# ---------------------------------------------------------------------------------------------------------------
# Metrics


class MetricsLog:
    """JSON lines (and optionally TensorBoard) on the main process."""

    def __init__(self, folder: Path, enabled: bool, tensorboard: bool, start_step: int) -> None:
        self.enabled = enabled
        self.path = folder / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # a resumed run drops the lines past its checkpoint
            keep = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln)["step"] <= start_step]
            self.path.write_text("".join(f"{ln}\n" for ln in keep))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ConfigError(
                    "log.tensorboard: true needs the tensorboard package (pip install tensorboard)"
                ) from exc
            self.tb = SummaryWriter(str(folder / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ---------------------------------------------------------------------------------------------------------------
# Run state and checkpoints


@dataclass
class StageRun:
    cfg: TrainConfig
    out: Path
    dist: DistInfo
    model: PointAlignModel
    model_cfg: ModelConfig
    parent: Path | None
    optimizer: torch.optim.Optimizer
    data: MixtureData
    store: PointStore
    cache: FeatureCache | None
    precision: PrecisionChoice  # what the forward passes run in (``auto`` resolved)
    step: int = 0
    extra_modules: dict[str, nn.Module] = field(default_factory=dict)  # e.g. stage 0's projection head
    aux: dict[str, Any] = field(default_factory=dict)  # per-kind working state (stage 0: text bank, test split)
    casts: FrozenCasts | None = None  # a bf16 stage that runs the LLM: its frozen Linear weights held in bf16

    @property
    def stage_dir(self) -> Path:
        return self.out / self.cfg.name


def read_trainer_state(stage_dir: Path) -> dict[str, Any] | None:
    path = stage_dir / TRAINER_STATE
    return json.loads(path.read_text()) if path.is_file() else None


def save_run(run: StageRun, complete: bool) -> None:
    """Write the stage folder (weights, config, trainer state) atomically; main process only."""
    if not run.dist.main:
        return

    def write_state(tmp: Path) -> None:
        state = {
            "step": run.step,
            "complete": complete,
            "data": run.data.state_dict(),
            "train_config": run.cfg.to_dict(),
            "precision": run.precision.chosen,
        }
        (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=1))
        torch.save(
            {
                "optimizer": run.optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "extra_modules": {k: m.state_dict() for k, m in run.extra_modules.items()},
            },
            tmp / OPTIMIZER_STATE,
        )

    save_checkpoint(
        run.model,
        run.stage_dir,
        run.model_cfg,
        what="full" if run.parent is None else "trainable",
        parent=run.parent,
        extra={"stage": run.cfg.name, "step": run.step, "complete": complete},
        write_extra=write_state,
    )


def restore_run(run: StageRun, state: dict[str, Any]) -> None:
    if state["train_config"] != json.loads(json.dumps(run.cfg.to_dict())):
        raise ConfigError(f"{run.stage_dir}: --resume with a different stage config than the run it continues")
    load_state_into(run.model, run.stage_dir)
    saved = torch.load(run.stage_dir / OPTIMIZER_STATE, map_location="cpu", weights_only=True)
    run.optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"])
    for k, m in run.extra_modules.items():
        m.load_state_dict(saved["extra_modules"][k])
    run.data.load_state_dict(state["data"])
    run.step = int(state["step"])


# ---------------------------------------------------------------------------------------------------------------
# Setup and fit (instruction stages 1-2)


def setup(cfg: TrainConfig, out: Path, dist: DistInfo, precision: PrecisionChoice | None = None) -> StageRun:
    """An instruction stage's run; ``precision`` None resolves ``cfg.precision`` here (``auto`` measures)."""
    precision = precision or resolve_precision(cfg.precision, dist)
    torch.manual_seed(cfg.seed + dist.rank)
    model, model_cfg, parent = build_stage_model(cfg, out)
    model.to(dist.device)
    data = MixtureData(cfg.data, cfg.seed, dist.rank, dist.world)
    store = PointStore(data.folder, model_cfg.encoder.num_points, cfg.data.resample)
    cache = None
    frozen = encoder_side_frozen(model)
    auto = cfg.cache.kind == "auto" and frozen and cfg.kind in ("instruct", "words")
    if cfg.cache.kind in ("memory", "disk") or auto:
        if not frozen:
            raise ConfigError(
                f"cache.kind={cfg.cache.kind}: the point encoder, bridge or Q-Former trains in this stage; "
                "use cache.kind=none"
            )
        points = f"{cfg.data.root}|{cfg.data.file_points}|{cfg.data.resample}|{model_cfg.encoder.num_points}"
        extra = f"{points}|{precision.chosen}"  # the resolved precision: an "auto" run keys by what it ran in
        disk = Path(cfg.cache.dir) if cfg.cache.dir else out / "feature_cache"
        cache = FeatureCache(model, "disk" if cfg.cache.kind == "disk" else "memory", extra, disk, precision.chosen)
        if cfg.cache.prefill:
            prefill_cache(cache, data, store, cfg, dist)
    optimizer = build_optimizer(model, cfg.optim)
    casts = FrozenCasts(model.llm) if precision.chosen == "bf16" and cfg.kind == "instruct" else None
    return StageRun(cfg, out, dist, model, model_cfg, parent, optimizer, data, store, cache, precision, casts=casts)


def autocast(run: StageRun) -> contextlib.AbstractContextManager:
    """The forward pass's autocast context for the run's ``precision`` (a no-op for fp32)."""
    return precision_autocast(run.precision.chosen, run.dist.device.type)


XYZ_ONLY = "#xyz"  # suffix of a cloud key whose colours are zeroed (and of its feature-cache entry)


def prefill_cache(cache: FeatureCache, data: MixtureData, store: PointStore, cfg: TrainConfig, dist: DistInfo) -> None:
    """Encode every cloud key the stage can draw (each object, and its xyz-only copy where colours are dropped) into
    ``cache`` in fixed batches, the coloured clouds and the xyz-only ones each in their own (so a stage that adds the
    xyz-only copies to a cache of the coloured clouds encodes only those); processes sharing a disk cache split the
    batches, the others each encode all."""
    from tqdm import tqdm

    ids = sorted({r.object_id for _, records in data.sources for r in records})
    groups = [] if cfg.data.colour_dropout >= 1.0 else [list(ids)]
    groups += [[f"{oid}{XYZ_ONLY}" for oid in ids]] if cfg.data.colour_dropout > 0.0 else []
    shared = cache.dir is not None
    part = (dist.rank, dist.world) if shared else (0, 1)
    total = sum(len(g) for g in groups)
    with tqdm(total=total, desc="feature cache", unit="cloud", disable=None if dist.main else True) as bar:
        for keys in groups:
            cache.prefill(keys, lambda ks: clouds_for(store, ks), cfg.cache.prefill_batch, part, bar.update)
    if shared:
        barrier(dist)


def cloud_keys(object_ids: list[str], colour_dropout: float) -> list[str]:
    """The objects' cloud keys, each marked xyz-only with probability ``colour_dropout`` (torch's RNG, so a resumed
    run draws the same; nothing is drawn when the probability is 0)."""
    if colour_dropout <= 0.0:
        return list(object_ids)
    drop = (torch.rand(len(object_ids)) < colour_dropout).tolist()
    return [f"{oid}{XYZ_ONLY}" if d else oid for oid, d in zip(object_ids, drop)]


def clouds_for(store: PointStore, keys: list[str]) -> torch.Tensor:
    """(B, P, 6) clouds of ``cloud_keys``; xyz-only keys get zero colours."""
    points = store.batch([k.removesuffix(XYZ_ONLY) for k in keys]).clone()
    for i, k in enumerate(keys):
        if k.endswith(XYZ_ONLY):
            points[i, :, 3:] = 0.0
    return points


def train_step(run: StageRun, forward: nn.Module) -> dict[str, float]:
    """One optimizer step of an instruction stage; returns the metrics of the step."""
    name, records = run.data.next_batch()
    builder = run.model.builder
    keys = cloud_keys([r.object_id for r in records], run.cfg.data.colour_dropout)
    hide = colour_spans if run.cfg.data.hide_dropped_colours else None  # only for the clouds without colours
    encoded = [builder.encode(r.turns, hide=hide if k.endswith(XYZ_ONLY) else None) for r, k in zip(records, keys)]
    batch = builder.collate(encoded, padding_side="right").to(run.dist.device)
    with autocast(run):
        if run.cache is not None:
            queries = run.cache.qformer_outputs(keys, lambda ks: clouds_for(run.store, ks))  # (B, Q, Dq)
            out = forward(batch, qformer_out=queries.to(run.dist.device))
        else:
            out = forward(batch, points=clouds_for(run.store, keys).to(run.dist.device))
    run.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if run.cfg.optim.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], run.cfg.optim.grad_clip)
    run.optimizer.step()
    metrics = {
        "dataset": name,
        "loss": float(all_reduce_mean(out.loss.detach(), run.dist)),
        "ntp_loss": float(all_reduce_mean(out.ntp_loss.detach(), run.dist)),
        "tokens": int(batch.attention_mask.sum()) * run.dist.world,
        "samples": len(records) * run.dist.world,
    }
    if out.align_loss is not None:
        metrics["align_loss"] = float(all_reduce_mean(out.align_loss.detach(), run.dist))
    return metrics


def fit(run: StageRun, step_fn: Callable[[StageRun, nn.Module], dict[str, float]]) -> None:
    """Steps from ``run.step`` to ``optim.steps``: schedule, step, log, checkpoint."""
    from tqdm import tqdm

    cfg = run.cfg
    forward: nn.Module = run.model
    if run.dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(run.model)
    log = MetricsLog(run.out / "logs" / cfg.name, run.dist.main, cfg.log.tensorboard, run.step)
    bar = tqdm(total=cfg.optim.steps, initial=run.step, desc=cfg.name, disable=None if run.dist.main else True)
    run.model.train()
    first_line = True  # the first metrics line of this process also records the precision
    try:
        while run.step < cfg.optim.steps:
            lr = lr_at(run.step, cfg.optim)
            set_lr(run.optimizer, lr)
            if run.casts is not None:
                run.casts.hold()  # once, and again after each checkpoint
            t = time.perf_counter()
            metrics = step_fn(run, forward)
            elapsed = time.perf_counter() - t
            run.step += 1
            record = {
                "step": run.step,
                "lr": lr,
                **metrics,
                "seconds": elapsed,
                "samples_per_s": metrics.get("samples", 0) / elapsed,
                "tokens_per_s": metrics.get("tokens", 0) / elapsed,
            }
            if run.step % cfg.log.every == 0 or run.step == cfg.optim.steps:
                log.write({**record, "precision": run.precision.chosen} if first_line else record)
                first_line = False
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in metrics.items() if k.endswith("loss") or k == "accuracy"})
            if run.step % cfg.checkpoint_every == 0 or run.step == cfg.optim.steps:
                if run.casts is not None:
                    run.casts.release()  # the checkpoint and whatever follows the loop see the fp32 weights
                save_run(run, complete=run.step == cfg.optim.steps)
                barrier(run.dist)
    finally:
        if run.casts is not None:
            run.casts.release()
        bar.close()
        log.close()


# ---------------------------------------------------------------------------------------------------------------
# A stage from start to end


@dataclass(frozen=True)
class StageKind:
    """What differs between the kinds of stage (``cfg.kind``): building the run, one step, and a closing report."""

    setup: Callable[[TrainConfig, Path, DistInfo, PrecisionChoice | None], StageRun]
    step: Callable[[StageRun, nn.Module], dict[str, float]]
    finish: Callable[[StageRun, Callable[[str], Any]], None] | None = None  # after the last step, on every process


INSTRUCT = StageKind(setup, train_step)


def train_stage(
    kind: StageKind, cfg: TrainConfig, out: str | Path, resume: bool = False, print_fn: Callable[[str], Any] = print
) -> Path:
    """Train one stage of ``kind`` into ``<out>/<stage>/`` (see the module docstring); returns that folder."""
    out = Path(out)
    stage_dir = out / cfg.name
    state = read_trainer_state(stage_dir)
    if state is not None and state.get("complete"):
        print_fn(f"{stage_dir}: already complete ({state['step']} steps); nothing to do")
        return stage_dir
    if state is not None and not resume:
        raise ConfigError(f"{stage_dir}: an unfinished run is there; pass --resume to continue it, or remove it")
    if stage_dir.exists() and state is None and any(stage_dir.iterdir()):
        raise FileExistsError(f"{stage_dir}: exists and is not a training run of pointalign")
    dist = init_distributed()
    try:
        precision = resolve_precision(cfg.precision, dist, resumed=state.get("precision") if state else None)
        precision = for_llm_dtype(precision, cfg.precision, stage_model_config(cfg, resolve_init(cfg, out)).llm.dtype)
        if cfg.precision == "auto" and dist.main:
            print_fn(f"{cfg.name}: {precision.describe()}")
        run = kind.setup(cfg, out, dist, precision)
        set_llm_attention(run.model, llm_attention(precision.chosen, dist.device.type))
        if state is not None:
            restore_run(run, state)
            print_fn(f"resuming {cfg.name} at step {run.step}")
        fit(run, kind.step)
        if kind.finish is not None:
            kind.finish(run, print_fn)
    finally:
        cleanup(dist)
    return stage_dir
