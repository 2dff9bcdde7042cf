"""The mixture of query experts (MiniGPT-3D's stage 4); its parity with the reference is in tests/test_importer.py."""

from pathlib import Path

import pytest
import torch

from pointalign.config import QueryExpertsConfig, preset
from pointalign.errors import ConfigError
from pointalign.models.builders import build_model
from pointalign.training.config import load_train_config
from pointalign.training.stages import STAGES, apply_trainable

EXPERTS = 4


def tiny_with_experts(router="sparse", top_k=2):
    sets = [f"experts.num_experts={EXPERTS}", f"experts.router={router}", f"experts.top_k={top_k}"]
    return build_model(preset("tiny", sets)).eval()


def test_routers_weigh_the_experts_as_the_reference():
    model = tiny_with_experts()
    experts = model.query_experts
    probs = torch.tensor([[0.1, 0.5, 0.15, 0.25], [0.4, 0.3, 0.2, 0.1]])
    ids, weights = experts.selection(probs)
    assert ids.tolist() == [[1, 3], [0, 1]]  # top 2, in increasing expert id
    assert torch.equal(weights, torch.tensor([[0.5, 0.25], [0.4, 0.3]]))  # raw softmax, not renormalised
    experts.cfg = QueryExpertsConfig(num_experts=EXPERTS, router="soft")
    assert torch.equal(experts.selection(probs)[1], probs)
    experts.cfg = QueryExpertsConfig(num_experts=EXPERTS, router="constant")
    assert torch.equal(experts.selection(probs)[1], torch.full_like(probs, 1 / EXPERTS))


def test_constant_router_averages_every_expert_output():
    model = tiny_with_experts(router="constant")
    points = torch.rand(2, model.config.encoder.num_points, 6)
    with torch.no_grad():
        tokens = model.point_encoder(points)
        features = model.bridge(tokens)
        mixed = model.query_experts(tokens, features, model.qformer)  # (B, Q, D)
        bank = [model.qformer.query_tokens, *model.query_experts.experts.values()]
        each = [model.qformer(features, queries=q.expand(2, -1, -1)) for q in bank]
    assert torch.allclose(mixed, sum(each) / EXPERTS, atol=1e-6)
    assert model.encode_points(points).qformer_out.shape == mixed.shape


def test_stage4_trains_the_experts_and_the_router_only():
    model = tiny_with_experts(router="soft")  # every expert runs, so every one gets a gradient
    with torch.no_grad():  # experts that differ: equal ones make the soft router's weights irrelevant
        for expert in model.query_experts.experts.values():
            expert.normal_()
    apply_trainable(model, STAGES["stage4"])
    model.train()
    batch = model.builder.collate([model.builder.encode([("What is this?", "A ball.")])] * 2, "right")
    model(batch, points=torch.rand(2, model.config.encoder.num_points, 6)).loss.backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert trained == {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {
        "qformer.query_tokens",
        *(f"query_experts.experts.{i}" for i in range(1, EXPERTS)),
        *(f"query_experts.router.{i}.{w}" for i in (0, 2) for w in ("weight", "bias")),
    }


def test_experts_config_is_checked_and_stage4_yaml_is_the_references():
    with pytest.raises(ConfigError, match="top_k: 3 experts per sample out of 2"):
        QueryExpertsConfig(num_experts=2, top_k=3)
    stage = load_train_config(Path(__file__).resolve().parents[2] / "configs" / "paper" / "stage4.yaml")
    assert stage.trainable == STAGES["stage4"] and stage.init_from == "stage1c"
    assert stage.model_set == {"experts.num_experts": 8, "experts.router": "sparse", "experts.top_k": 2}
    assert (stage.optim.lr, stage.optim.warmup_lr, stage.optim.steps) == (5e-6, 1e-6, 10000)


def test_a_stage_that_adds_experts_starts_them_from_the_trained_queries(tmp_path):
    from pointalign.checkpoint import save_checkpoint
    from pointalign.training.config import TrainConfig
    from pointalign.training.loop import build_stage_model

    cfg = preset("tiny")
    parent = build_model(cfg)
    with torch.no_grad():
        parent.qformer.query_tokens.normal_()
    save_checkpoint(parent, tmp_path / "stage1c", cfg, what="full", for_inference=True)
    stage = TrainConfig(stage="stage4", init_from="stage1c", preset="tiny", model_set={"experts.num_experts": 3})
    model, model_cfg, _ = build_stage_model(stage, tmp_path)
    assert model_cfg.experts.num_experts == 3
    for expert in model.query_experts.experts.values():
        assert torch.equal(expert, parent.qformer.query_tokens) and expert.requires_grad
