"""Stage 0: the contrastive losses and the Q-Former's optional contrastive pretraining."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from pointalign.cli import main
from pointalign.config import preset
from pointalign.models.builders import build_model
from pointalign.training.contrastive import ContrastiveHead, ContrastiveModule, QueryHead, clip_loss

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tiny"


def test_clip_loss_by_hand():
    points = F.normalize(torch.randn(3, 4), dim=-1)
    texts = F.normalize(torch.randn(3, 4), dim=-1)
    scale = torch.tensor(math.log(10.0))
    logits = 10.0 * points @ texts.t()
    target = torch.arange(3)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    assert clip_loss(points, texts, scale) == pytest.approx(float(expected), rel=1e-6)


def test_clip_loss_scores_queries_by_the_best_one():
    queries = F.normalize(torch.randn(3, 5, 4), dim=-1)  # (B, Q, D)
    texts = F.normalize(torch.randn(3, 4), dim=-1)
    scale = torch.tensor(math.log(20.0))
    best = torch.einsum("bqd,td->bqt", queries, texts).max(dim=1).values  # (B, B)
    target = torch.arange(3)
    logits = 20.0 * best
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    assert clip_loss(queries, texts, scale) == pytest.approx(float(expected), rel=1e-6)


def test_query_loss_does_not_reach_the_encoder():
    cfg = preset("tiny")
    model = build_model(cfg).requires_grad_(True)
    head = ContrastiveHead(cfg.encoder.trans_dim, 8, 0.07)
    module = ContrastiveModule(model, head, QueryHead(cfg.qformer.hidden_size, 8, 0.07))
    emb, queries = module(torch.randn(2, cfg.encoder.num_points, 6))
    assert emb.shape == (2, 8) and queries.shape == (2, cfg.qformer.num_queries, 8)
    queries.sum().backward()
    assert all(p.grad is None for p in model.point_encoder.parameters())
    assert model.qformer.query_tokens.grad is not None


def test_stage0_with_the_qformer_saves_it_and_reports_both_accuracies(tiny_data, tmp_path):
    args = ["train", str(CONFIGS / "stage0.yaml"), "--out", str(tmp_path), f"data.root={tiny_data}"]
    assert main(args) == 0  # the tiny stage 0 pretrains the Q-Former, as cpu-small's does
    zs = json.loads((tmp_path / "logs" / "stage0" / "zero_shot.json").read_text())
    assert set(zs) == {"zero_shot_accuracy", "qformer_zero_shot_accuracy", "step"}
    saved = load_file(tmp_path / "stage0" / "model.safetensors")
    assert any(k.startswith("qformer.") for k in saved) and any(k.startswith("point_encoder.") for k in saved)
    metrics = [json.loads(line) for line in (tmp_path / "logs" / "stage0" / "metrics.jsonl").read_text().splitlines()]
    assert all("query_loss" in m for m in metrics)


def test_stage0_qformer_needs_a_trainable_qformer(tiny_data, tmp_path, capsys):
    args = ["train", str(CONFIGS / "stage0.yaml"), "--out", str(tmp_path), f"data.root={tiny_data}"]
    assert main([*args, "contrastive.qformer=true", "trainable.bridge=frozen"]) == 2
    assert "contrastive.qformer=true trains the Q-Former, but trainable.bridge is frozen" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_stage0_final_report_reuses_the_last_steps_zero_shot(tiny_data, tmp_path, monkeypatch):
    from pointalign.training import contrastive

    calls = []  # the training flag of each forward pass of the stage-0 module: eval passes run the test split
    real = contrastive.ContrastiveModule.forward
    monkeypatch.setattr(contrastive.ContrastiveModule, "forward", lambda m, x: calls.append(m.training) or real(m, x))
    args = ["train", str(CONFIGS / "stage0.yaml"), f"data.root={tiny_data}"]
    assert main([*args, "--out", str(tmp_path / "final"), "contrastive.zero_shot_every=0"]) == 0
    once = calls.count(False)  # the final report alone runs the test split once
    assert once > 0
    calls.clear()
    assert main([*args, "--out", str(tmp_path / "every2"), "contrastive.zero_shot_every=2"]) == 0
    assert calls.count(False) == 2 * once  # steps 2 and 4; the final report reuses step 4's result
    zs = json.loads((tmp_path / "every2" / "logs" / "stage0" / "zero_shot.json").read_text())
    lines = (tmp_path / "every2" / "logs" / "stage0" / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    assert zs["step"] == last["step"] == 4
    assert zs["zero_shot_accuracy"] == last["zero_shot_accuracy"]
