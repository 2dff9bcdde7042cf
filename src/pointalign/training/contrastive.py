"""Stage 0: point-encoder pretraining by point-text contrastive learning (ULIP-style).

The point embedding (the encoder's cls token concatenated with the max over its group tokens, projected to the
text width) is pulled towards the frozen MiniLM embedding of the object's caption and away from the other captions
in the batch (symmetric InfoNCE with a learned temperature). Zero-shot classification on the test split (ModelNet40
format: xyz only, colour 0) compares each cloud's embedding with the embeddings of "a 3D model of a {class}."

With ``contrastive.qformer``, the bridge and the Q-Former train as well, by BLIP-2's image-text contrastive loss:
each query output is projected to the text width and a cloud's score for a caption is its best query's. The two
InfoNCE losses are added; the Q-Former's does not flow back into the encoder.

``CONTRASTIVE`` is the stage kind (set-up, step, closing report) that ``training/run.py`` hands to the loop.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pointalign.data.readers import read_class_names
from pointalign.data.synth import SHAPE_NAMES_FILE
from pointalign.errors import ConfigError
from pointalign.eval.tasks import load_items
from pointalign.models.pointalign import PointAlignModel
from pointalign.text_encoder import embed_texts
from pointalign.training.config import TrainConfig
from pointalign.training.data import MixtureData, PointStore
from pointalign.training.distributed import DistInfo, average_gradients
from pointalign.training.loop import StageKind, StageRun, autocast, build_stage_model
from pointalign.training.optim import build_optimizer
from pointalign.training.precision import PrecisionChoice, resolve_precision

ZERO_SHOT_TEMPLATE = "a 3D model of a {}."


class ContrastiveHead(nn.Module):
    """(B, G+1, C) encoder tokens -> (B, D) unit embeddings; holds the learned logit scale."""

    def __init__(self, width: int, embed_dim: int, init_temperature: float) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * width, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([tokens[:, 0], tokens[:, 1:].max(dim=1).values], dim=-1)  # (B, 2C)
        return F.normalize(self.proj(pooled), dim=-1)  # (B, D)


class QueryHead(nn.Module):
    """(B, Q, Dq) Q-Former outputs -> (B, Q, D) unit embeddings (BLIP-2's vision_proj); holds its logit scale."""

    def __init__(self, width: int, embed_dim: int, init_temperature: float) -> None:
        super().__init__()
        self.proj = nn.Linear(width, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(queries), dim=-1)  # (B, Q, D)


class ContrastiveModule(nn.Module):
    """What stage 0 trains: the point encoder and its head; with ``query_head``, also the bridge and the Q-Former."""

    def __init__(self, model: PointAlignModel, head: ContrastiveHead, query_head: QueryHead | None) -> None:
        super().__init__()
        self.point_encoder = model.point_encoder
        self.head = head
        self.bridge = model.bridge if query_head is not None else None
        self.qformer = model.qformer if query_head is not None else None
        self.query_head = query_head

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, N, F) clouds -> (B, D) encoder embeddings and (B, Q, D) query embeddings (None without a Q-Former)."""
        tokens = self.point_encoder(points)  # (B, T, C)
        if self.query_head is None:
            return self.head(tokens), None
        # The Q-Former's loss stops at the encoder, which learns from its own head alone (as it does without one).
        return self.head(tokens), self.query_head(self.qformer(self.bridge(tokens.detach())))


def similarity(points: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """(B, T) cosine similarity of (B, D) unit point embeddings, or of (B, Q, D) query embeddings by their best query
    (BLIP-2's image-text score), with (T, D) unit text embeddings."""
    sim = points @ texts.t()  # (B, T) or (B, Q, T)
    return sim.max(dim=1).values if sim.dim() == 3 else sim


def clip_loss(points: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between point (or query) embeddings and their B captions' embeddings (see ``similarity``)."""
    logits = logit_scale.clamp(max=math.log(100.0)).exp() * similarity(points, texts)  # (B, B)
    target = torch.arange(points.shape[0], device=points.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def load_test_split(root: Path, points: int, file_points: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """ModelNet40-format test clouds reduced to ``points`` by FPS, their labels and the class names."""
    items = load_items("cls-closed", root, points, file_points)
    names = read_class_names(root / "modelnet40_data" / SHAPE_NAMES_FILE)
    return torch.stack([it.points() for it in items]), torch.tensor([int(it.ground_truth) for it in items]), names


def setup_contrastive(
    cfg: TrainConfig, out: Path, dist: DistInfo, precision: PrecisionChoice | None = None
) -> StageRun:
    """Stage 0's run; ``precision`` None resolves ``cfg.precision`` here (``auto`` measures)."""
    precision = precision or resolve_precision(cfg.precision, dist)
    torch.manual_seed(cfg.seed + dist.rank)
    model, model_cfg, parent = build_stage_model(cfg, out)
    model.to(dist.device)
    c = cfg.contrastive
    head = ContrastiveHead(model_cfg.encoder.trans_dim, c.embed_dim, c.init_temperature)
    query_head = None
    if c.qformer:
        frozen = [p for p in ("bridge", "qformer", "query_tokens") if getattr(cfg.trainable, p) == "frozen"]
        if frozen:
            raise ConfigError(f"contrastive.qformer=true trains the Q-Former, but trainable.{frozen[0]} is frozen")
        query_head = QueryHead(model_cfg.qformer.hidden_size, c.embed_dim, c.init_temperature)
    module = ContrastiveModule(model, head, query_head).to(dist.device)
    data = MixtureData(cfg.data, cfg.seed, dist.rank, dist.world)
    store = PointStore(data.folder, model_cfg.encoder.num_points, cfg.data.resample)
    run = StageRun(
        cfg,
        out,
        dist,
        model,
        model_cfg,
        parent,
        build_optimizer(module, cfg.optim),
        data,
        store,
        None,
        precision,
        extra_modules={"head": head, **({"query_head": query_head} if query_head is not None else {})},
    )
    captions = sorted({r.turns[0][1] for _, recs in data.sources for r in recs})
    emb = embed_texts(captions, cfg.contrastive.text_encoder)
    if emb.shape[1] != cfg.contrastive.embed_dim:
        raise ValueError(f"contrastive.embed_dim={cfg.contrastive.embed_dim} but the text encoder gives {emb.shape[1]}")
    # text_bank: caption -> (D,); zero_shot: the test clouds and prompts, loaded once; zero_shot_at: (step, accuracies)
    run.aux.update(text_bank=dict(zip(captions, emb)), module=module, zero_shot=None, zero_shot_at=None)
    return run


@torch.no_grad()
def zero_shot_accuracy(run: StageRun, step: int) -> dict[str, float]:
    """Top-1 zero-shot accuracy (%) on the test split: ``zero_shot_accuracy`` from the encoder's embedding and,
    when the Q-Former trains, ``qformer_zero_shot_accuracy`` from its best query. ``step`` counts the optimizer steps
    the model has taken; a second call at the same step (the final report after a step that measured it) returns the
    first result instead of running the test split again."""
    if run.aux["zero_shot_at"] is not None and run.aux["zero_shot_at"][0] == step:
        return dict(run.aux["zero_shot_at"][1])
    if run.aux["zero_shot"] is None:
        root = Path(run.cfg.data.root).expanduser()
        clouds, labels, names = load_test_split(root, run.model_cfg.encoder.num_points, run.cfg.data.file_points)
        prompts = embed_texts([ZERO_SHOT_TEMPLATE.format(n) for n in names], run.cfg.contrastive.text_encoder)
        run.aux["zero_shot"] = (clouds, labels, prompts)
    clouds, labels, prompts = run.aux["zero_shot"]
    module = run.aux["module"]
    was_training = module.training
    module.eval()
    preds: dict[str, list[torch.Tensor]] = {"zero_shot_accuracy": [], "qformer_zero_shot_accuracy": []}
    for i in range(0, len(clouds), 32):
        with autocast(run):
            emb, queries = module(clouds[i : i + 32].to(run.dist.device))
        preds["zero_shot_accuracy"].append(similarity(emb.float().cpu(), prompts).argmax(dim=1))
        if queries is not None:
            preds["qformer_zero_shot_accuracy"].append(similarity(queries.float().cpu(), prompts).argmax(dim=1))
    module.train(was_training)
    accs = {k: float((torch.cat(v) == labels).float().mean() * 100) for k, v in preds.items() if v}
    run.aux["zero_shot_at"] = (step, accs)
    return dict(accs)


def contrastive_step(run: StageRun, forward: nn.Module) -> dict[str, float]:
    del forward  # stage 0 trains run.aux["module"]; gradients are averaged by hand under DDP
    _, records = run.data.next_batch()
    points = run.store.batch([r.object_id for r in records]).clone()
    drop = torch.rand(points.shape[0]) < run.cfg.contrastive.colour_dropout
    points[drop, :, 3:] = 0.0
    texts = torch.stack([run.aux["text_bank"][r.turns[0][1]] for r in records]).to(run.dist.device)
    module = run.aux["module"]
    module.train()
    with autocast(run):
        emb, queries = module(points.to(run.dist.device))
    loss = clip_loss(emb.float(), texts, module.head.logit_scale)
    if queries is not None:
        query_loss = clip_loss(queries.float(), texts, module.query_head.logit_scale)
        loss = loss + query_loss
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(module.parameters(), run.dist)
    run.optimizer.step()
    metrics = {
        "loss": float(loss.detach()),
        **({"query_loss": float(query_loss.detach())} if queries is not None else {}),
        "samples": len(records) * run.dist.world,
        "temperature": float(1.0 / module.head.logit_scale.detach().exp()),
    }
    every = run.cfg.contrastive.zero_shot_every
    if run.dist.main and every and (run.step + 1) % every == 0:
        metrics.update(zero_shot_accuracy(run, run.step + 1))  # run.step counts the steps before this one
    return metrics


def final_report(run: StageRun, print_fn: Callable[[str], Any]) -> None:
    if not run.dist.main:
        return
    accs = zero_shot_accuracy(run, run.step)
    folder = run.out / "logs" / run.cfg.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero_shot.json").write_text(json.dumps({**accs, "step": run.step}) + "\n")
    chance = 100 / len(run.aux["zero_shot"][2])
    for key, acc in accs.items():
        where = "the Q-Former's" if key.startswith("qformer") else "the encoder's"
        print_fn(
            f"{run.cfg.name}: zero-shot accuracy on the test split from {where} embedding {acc:.2f}% "
            f"(chance {chance:.2f}%)"
        )


CONTRASTIVE = StageKind(setup_contrastive, contrastive_step, final_report)
