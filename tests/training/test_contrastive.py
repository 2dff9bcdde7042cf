"""Stage 0: the contrastive losses and the Q-Former's optional contrastive pretraining."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from pointalign.cli import main
from pointalign.config import preset
from pointalign.data.readers import Record
from pointalign.models.builders import build_model
from pointalign.training.contrastive import (
    ContrastiveHead,
    ContrastiveModule,
    QueryHead,
    clip_loss,
    colour_histogram,
    colour_loss,
    nearest_captions,
    with_hard_negatives,
)

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
    emb, queries, colour = module(torch.randn(2, cfg.encoder.num_points, 6))
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


def test_nearest_captions_by_hand():
    emb = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.6, 0.8]]), dim=-1)  # (C=4, D=2)
    assert nearest_captions(emb, 2).tolist() == [[1, 3], [0, 3], [3, 1], [2, 1]]
    assert nearest_captions(emb, 10).shape == (4, 3)  # never itself: at most C - 1 neighbours


def _rec(object_id: str, caption: str) -> Record:
    return Record(object_id, [("Describe it.", caption)], "simple_description")


def test_hard_negatives_give_odd_places_to_other_objects_with_near_captions():
    captions = ["a red chair", "a blue chair", "a red table", "a blue table"]
    neighbours = torch.tensor([[1], [0], [3], [2]])  # each caption's nearest: the same class in the other colour
    records = [_rec("o0", "a red chair"), _rec("o2", "a red table"), _rec("o4", "a blue table"), _rec("o5", "x")]
    objects_of = {
        "a red chair": [records[0]],
        "a blue chair": [_rec("o1", "a blue chair")],
        "a red table": [records[1], _rec("o3", "a red table")],
        "a blue table": [records[2]],
    }
    out = with_hard_negatives(records, captions, neighbours, objects_of, np.random.default_rng(0))
    assert [r.object_id for r in out[:3]] == ["o0", "o1", "o4"]  # the anchors kept, o1 the red chair's neighbour
    assert out[3].object_id in {"o2", "o3"}  # a red table: o2 left its place to o1, so it is free again
    assert len({r.object_id for r in out}) == len(out)


def test_hard_negatives_keep_the_record_when_every_neighbour_is_taken():
    captions = ["a red chair", "a blue chair"]
    records = [_rec("o0", "a red chair"), _rec("o9", "a green lamp"), _rec("o1", "a blue chair"), _rec("o8", "z")]
    objects_of = {"a red chair": [records[0]], "a blue chair": [records[2]]}
    out = with_hard_negatives(records, captions, torch.tensor([[1], [0]]), objects_of, np.random.default_rng(0))
    assert [r.object_id for r in out] == ["o0", "o9", "o1", "o8"]  # each anchor's neighbour is already an anchor


def test_stage0_with_hard_negatives_trains_and_resumes_the_same_batches(tiny_data, tmp_path, monkeypatch):
    from pointalign.training import contrastive

    seen: list[list[str]] = []
    real = contrastive.with_hard_negatives
    monkeypatch.setattr(
        contrastive, "with_hard_negatives", lambda *a: seen.append([r.object_id for r in real(*a)]) or real(*a)
    )
    args = ["train", str(CONFIGS / "stage0.yaml"), f"data.root={tiny_data}", "contrastive.hard_negatives=true"]
    assert main([*args, "--out", str(tmp_path / "a"), "contrastive.neighbour_pool=2"]) == 0
    assert len(seen) == 4 and all(len(set(batch)) == len(batch) for batch in seen)
    assert main([*args, "--out", str(tmp_path / "b"), "contrastive.neighbour_pool=0"]) == 2
    assert not (tmp_path / "b").exists() or list((tmp_path / "b").iterdir()) == []


def test_colour_histogram_by_hand():
    rgb = torch.tensor([[[0.0, 0.0, 0.0], [0.9, 0.1, 0.1], [0.95, 0.2, 0.0], [1.0, 1.0, 1.0]]])  # (B=1, N=4, 3)
    hist = colour_histogram(rgb, 2)  # cells r*4 + g*2 + b: black 0, red 4, white 7 (1.0 falls in the last cell)
    assert hist.shape == (1, 8)
    assert hist[0].tolist() == [0.25, 0, 0, 0, 0.5, 0, 0, 0.25]


def test_colour_loss_is_the_mean_soft_cross_entropy_over_queries():
    logits = torch.randn(2, 3, 4)  # (B, Q, K)
    target = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    expected = sum(-(target[b] * logits[b, q].log_softmax(-1)).sum() for b in range(2) for q in range(3)) / 6
    assert colour_loss(logits, target) == pytest.approx(float(expected), rel=1e-6)
    assert colour_loss(torch.tensor([[[0.0, 50.0]]]), torch.tensor([[0.0, 1.0]])) == pytest.approx(0.0, abs=1e-6)
    only_first = colour_loss(logits, target, torch.tensor([True, False]))  # the second cloud lost its colours
    assert only_first == pytest.approx(float(colour_loss(logits[:1], target[:1])), rel=1e-6)


def test_colour_loss_with_every_cloud_left_out_is_zero_with_zero_gradients():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    loss = colour_loss(logits, torch.full((2, 4), 0.25), torch.tensor([False, False]))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


def test_colour_head_gives_each_query_a_histogram_and_stops_at_the_encoder():
    cfg = preset("tiny")
    model = build_model(cfg).requires_grad_(True)
    head = ContrastiveHead(cfg.encoder.trans_dim, 8, 0.07)
    colour_head = torch.nn.Linear(cfg.qformer.hidden_size, 27)
    module = ContrastiveModule(model, head, QueryHead(cfg.qformer.hidden_size, 8, 0.07), colour_head)
    _, _, colour = module(torch.rand(2, cfg.encoder.num_points, 6))
    assert colour.shape == (2, cfg.qformer.num_queries, 27)
    colour.sum().backward()
    assert all(p.grad is None for p in model.point_encoder.parameters())
    some = ContrastiveModule(model, head, module.query_head, colour_head, colour_queries=2)
    assert some(torch.rand(2, cfg.encoder.num_points, 6))[2].shape == (2, 2, 27)  # only the first two queries
    with pytest.raises(ValueError, match="needs the query head"):
        ContrastiveModule(model, head, None, colour_head)


def test_stage0_with_colour_prediction_logs_its_loss_and_saves_the_head(tiny_data, tmp_path):
    args = ["train", str(CONFIGS / "stage0.yaml"), "--out", str(tmp_path), f"data.root={tiny_data}"]
    assert main([*args, "contrastive.colour_weight=0.5", "contrastive.colour_dropout=0.0"]) == 0
    metrics = [json.loads(line) for line in (tmp_path / "logs" / "stage0" / "metrics.jsonl").read_text().splitlines()]
    assert all(m["colour_loss"] > 0 for m in metrics)
    state = torch.load(tmp_path / "stage0" / "optimizer.pt", weights_only=False)
    assert "colour_head" in state["extra_modules"]


def test_stage0_colour_prediction_needs_the_qformer(tiny_data, tmp_path, capsys):
    args = ["train", str(CONFIGS / "stage0.yaml"), "--out", str(tmp_path), f"data.root={tiny_data}"]
    assert main([*args, "contrastive.colour_weight=1.0", "contrastive.qformer=false"]) == 2
    assert "contrastive.colour_weight > 0 trains the Q-Former's outputs: it needs contrastive.qformer" in (
        capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == []
    assert main([*args, "contrastive.colour_weight=1.0", "contrastive.colour_queries=999"]) == 2
    assert "contrastive.colour_queries=999, but the Q-Former has" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert main([*args, "contrastive.colour_weight=-1"]) == 2
    assert "contrastive.colour_weight: must be >= 0, got -1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_colour_prediction_leaves_the_encoder_as_it_would_be_without_it(tiny_data, tmp_path):
    """The colour head draws its weights from its own generator and its loss stops at the Q-Former, so turning it on
    changes the Q-Former's training and nothing else: the encoder's weights come out the same, bit for bit."""
    args = ["train", str(CONFIGS / "stage0.yaml"), f"data.root={tiny_data}", "contrastive.colour_dropout=0.5"]
    assert main([*args, "--out", str(tmp_path / "off")]) == 0
    assert main([*args, "--out", str(tmp_path / "on"), "contrastive.colour_weight=1.0"]) == 0
    off, on = (load_file(tmp_path / run / "stage0" / "model.safetensors") for run in ("off", "on"))
    encoder = [k for k in off if k.startswith("point_encoder.")]
    assert encoder and all(torch.equal(off[k], on[k]) for k in encoder)
    assert any(not torch.equal(off[k], on[k]) for k in off if k.startswith("qformer."))
