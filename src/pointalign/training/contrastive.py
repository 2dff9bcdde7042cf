"""Stage 0: point-encoder pretraining by point-text contrastive learning (ULIP-style).

The point embedding (the encoder's cls token concatenated with the max over its group tokens, projected to the
text width) is pulled towards the frozen MiniLM embedding of the object's caption and away from the other captions
in the batch (symmetric InfoNCE with a learned temperature). Zero-shot classification on the test split (ModelNet40
format: xyz only, colour 0) compares each cloud's embedding with the embeddings of "a 3D model of a {class}."

With ``contrastive.qformer``, the bridge and the Q-Former train as well, by BLIP-2's image-text contrastive loss:
each query output is projected to the text width and a cloud's score for a caption is its best query's. The two
InfoNCE losses are added; the Q-Former's does not flow back into the encoder.

Two options, off in the shipped configs (README, tuning table): ``contrastive.hard_negatives`` fills every other
place of a batch with an object whose caption is near the previous record's (``with_hard_negatives``), and
``contrastive.colour_weight`` has the query outputs also predict their cloud's colour histogram (``colour_loss``),
a target that needs no text: the caption embeddings weigh a colour word lightly.

``CONTRASTIVE`` is the stage kind (set-up, step, closing report) that ``training/run.py`` hands to the loop.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pointalign.data.readers import Record, read_class_names
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


def colour_histogram(rgb: torch.Tensor, bins: int) -> torch.Tensor:
    """(B, N, 3) colours in [0, 1] -> (B, bins**3): the share of each cloud's points in each cell of a bins^3 RGB
    grid (cell index r * bins^2 + g * bins + b)."""
    cell = (rgb.float() * bins).floor().clamp(0, bins - 1).long()  # (B, N, 3)
    index = (cell[..., 0] * bins + cell[..., 1]) * bins + cell[..., 2]  # (B, N)
    counts = torch.zeros(rgb.shape[0], bins**3, device=rgb.device).scatter_add_(
        1, index, torch.ones_like(index, dtype=torch.float)
    )
    return counts / rgb.shape[1]


def colour_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of (B, K) colour histograms under each query's (B, Q, K) predicted distribution, averaged over
    the queries, then over the clouds by their (B,) ``weight`` (None: all alike). Weights that are all 0 give 0, with
    zero gradients rather than none, so every process of a DDP run averages the same parameters."""
    per_cloud = -(target[:, None] * logits.float().log_softmax(dim=-1)).sum(dim=-1).mean(dim=-1)  # (B,)
    if weight is None:
        return per_cloud.mean()
    weight = weight.to(per_cloud.dtype)
    return (per_cloud * weight).sum() / weight.sum().clamp(min=1.0)


class ContrastiveModule(nn.Module):
    """What stage 0 trains: the point encoder and its head; with ``query_head``, also the bridge and the Q-Former;
    with ``colour_head`` (Q-Former width -> histogram cells), the first ``colour_queries`` query outputs (0 = all)
    also predict the cloud's colours."""

    def __init__(
        self,
        model: PointAlignModel,
        head: ContrastiveHead,
        query_head: QueryHead | None,
        colour_head: nn.Linear | None = None,
        colour_queries: int = 0,
    ) -> None:
        super().__init__()
        if colour_head is not None and query_head is None:
            raise ValueError("the colour head reads the Q-Former's outputs: it needs the query head as well")
        self.point_encoder = model.point_encoder
        self.head = head
        self.bridge = model.bridge if query_head is not None else None
        self.qformer = model.qformer if query_head is not None else None
        self.query_head = query_head
        self.colour_head = colour_head
        self.colour_queries = colour_queries

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(B, N, F) clouds -> (B, D) encoder embeddings, (B, Q, D) query embeddings (None without a Q-Former) and
        (B, Q, K) colour-histogram logits (None without a colour head)."""
        tokens = self.point_encoder(points)  # (B, T, C)
        if self.query_head is None:
            return self.head(tokens), None, None
        # The Q-Former's losses stop at the encoder, which learns from its own head alone (as it does without one).
        outputs = self.qformer(self.bridge(tokens.detach()))  # (B, Q, Dq)
        colour = None
        if self.colour_head is not None:
            colour = self.colour_head(outputs[:, : self.colour_queries or None])  # (B, Q or colour_queries, K)
        return self.head(tokens), self.query_head(outputs), colour


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


def nearest_captions(emb: torch.Tensor, pool: int) -> torch.Tensor:
    """(C, min(pool, C - 1)) indices of each caption's nearest other captions, nearest first, from (C, D) unit
    embeddings."""
    sim = emb @ emb.t()  # (C, C)
    sim.fill_diagonal_(-float("inf"))
    return sim.topk(min(pool, emb.shape[0] - 1), dim=1).indices


def with_hard_negatives(
    records: list[Record],
    captions: list[str],
    neighbours: torch.Tensor,
    objects_of: dict[str, list[Record]],
    rng: np.random.Generator,
) -> list[Record]:
    """``records`` with every odd place given to a neighbour of the record before it: a record of another object,
    not yet in the batch, whose caption is drawn from the anchor's ``neighbours`` row (a place none of them can take
    keeps its record). ``captions`` indexes the rows of ``neighbours``; ``objects_of`` maps a caption to its records."""
    index = {c: i for i, c in enumerate(captions)}
    out = list(records)
    taken = {r.object_id for r in out[0::2]}
    for place in range(1, len(out), 2):
        row = neighbours[index[out[place - 1].turns[0][1]]].tolist()
        for k in rng.permutation(len(row)):
            free = [r for r in objects_of[captions[row[k]]] if r.object_id not in taken]
            if free:
                out[place] = free[int(rng.integers(len(free)))]
                break
        taken.add(out[place].object_id)
    return out


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
    colour_head = None
    if c.colour_weight > 0:
        if query_head is None:
            raise ConfigError(
                "contrastive.colour_weight > 0 trains the Q-Former's outputs: it needs contrastive.qformer"
            )
        queries = model_cfg.qformer.num_queries
        if c.colour_queries > queries:
            raise ConfigError(f"contrastive.colour_queries={c.colour_queries}, but the Q-Former has {queries} queries")
        with torch.random.fork_rng(devices=[]):  # its own draw: turning it on leaves every other random draw as it was
            torch.manual_seed(cfg.seed + 1)
            colour_head = nn.Linear(model_cfg.qformer.hidden_size, c.colour_bins**3)
    module = ContrastiveModule(model, head, query_head, colour_head, c.colour_queries).to(dist.device)
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
        extra_modules={
            "head": head,
            **({"query_head": query_head} if query_head is not None else {}),
            **({"colour_head": colour_head} if colour_head is not None else {}),
        },
    )
    captions = sorted({r.turns[0][1] for _, recs in data.sources for r in recs})
    emb = embed_texts(captions, cfg.contrastive.text_encoder)
    if emb.shape[1] != cfg.contrastive.embed_dim:
        raise ValueError(f"contrastive.embed_dim={cfg.contrastive.embed_dim} but the text encoder gives {emb.shape[1]}")
    # text_bank: caption -> (D,); zero_shot: the test clouds and prompts, loaded once; zero_shot_at: (step, accuracies)
    run.aux.update(text_bank=dict(zip(captions, emb)), module=module, zero_shot=None, zero_shot_at=None)
    if c.hard_negatives:
        objects_of: dict[str, list[Record]] = {}
        for _, recs in data.sources:
            for r in recs:
                objects_of.setdefault(r.turns[0][1], []).append(r)
        run.aux["hard"] = (captions, nearest_captions(emb, c.neighbour_pool), objects_of)
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
            emb, queries, _ = module(clouds[i : i + 32].to(run.dist.device))
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
    if "hard" in run.aux:  # the draw depends on the step alone, so a resumed run builds the same batches
        rng = np.random.default_rng([run.cfg.seed, run.dist.rank, run.step, 11])
        records = with_hard_negatives(records, *run.aux["hard"], rng)
    points = run.store.batch([r.object_id for r in records]).clone()
    drop = torch.rand(points.shape[0]) < run.cfg.contrastive.colour_dropout
    points[drop, :, 3:] = 0.0
    texts = torch.stack([run.aux["text_bank"][r.turns[0][1]] for r in records]).to(run.dist.device)
    module = run.aux["module"]
    module.train()
    with autocast(run):
        emb, queries, colour = module(points.to(run.dist.device))
    loss = clip_loss(emb.float(), texts, module.head.logit_scale)
    if queries is not None:
        query_loss = clip_loss(queries.float(), texts, module.query_head.logit_scale)
        loss = loss + query_loss
    if colour is not None:  # the clouds whose colours were dropped have none to predict: they weigh 0
        hist = colour_histogram(points[:, :, 3:6].to(colour.device), run.cfg.contrastive.colour_bins)
        colour_term = colour_loss(colour, hist, (~drop).to(colour.device))
        loss = loss + run.cfg.contrastive.colour_weight * colour_term
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(module.parameters(), run.dist)
    run.optimizer.step()
    metrics = {
        "loss": float(loss.detach()),
        **({"query_loss": float(query_loss.detach())} if queries is not None else {}),
        **({"colour_loss": float(colour_term.detach())} if colour is not None else {}),
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
