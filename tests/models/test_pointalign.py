import dataclasses

import pytest
import torch

from pointalign.config import GenerationConfig, preset
from pointalign.losses import alignment_loss, gather_positions
from pointalign.models.builders import build_model
from pointalign.training.stages import STAGES, apply_trainable
from tests.conftest import clouds

N = 256
DIALOGUES = [
    [("What is this?", "A red sphere.")],
    [("Describe this object in a lot of detail, please.", "A blue cube with six faces.")],
    [("Colour?", "Green."), ("And the shape?", "A cylinder.")],
]


def make_batch(model, dialogues=DIALOGUES):
    return model.builder.collate([model.builder.encode(d) for d in dialogues], "right")


def test_padding_side_does_not_change_the_loss(tiny_model):
    tiny_model.eval()
    pts = clouds(3, N)
    items = [tiny_model.builder.encode(d) for d in DIALOGUES]
    right = tiny_model(tiny_model.builder.collate(items, "right"), points=pts)
    left = tiny_model(tiny_model.builder.collate(items, "left"), points=pts)
    assert right.ntp_loss.item() == pytest.approx(left.ntp_loss.item(), rel=1e-5)
    assert right.align_loss.item() == pytest.approx(left.align_loss.item(), rel=1e-5)


def test_forward_output(tiny_model):
    batch = make_batch(tiny_model)
    out = tiny_model(batch, points=clouds(3, N))
    assert out.logits.shape == (out.num_tokens, len(tiny_model.tokenizer))  # the supervised positions only
    assert out.align_loss is not None
    assert out.loss.item() == pytest.approx(out.ntp_loss.item() + 0.1 * out.align_loss.item(), rel=1e-6)
    assert out.num_tokens == int((batch.labels[:, 1:] != -100).sum())


def test_point_tokens_are_spliced_at_exact_positions(tiny_model):
    batch = make_batch(tiny_model)
    feats = tiny_model.encode_points(clouds(3, N))
    embeds = tiny_model.embed(batch, feats.point_tokens)
    for b in range(3):
        assert torch.equal(embeds[b, batch.point_positions[b]], feats.point_tokens[b])
    text = tiny_model.llm.get_input_embeddings()(batch.input_ids)
    mask = torch.ones_like(batch.input_ids, dtype=torch.bool)
    mask[torch.arange(3)[:, None], batch.point_positions] = False
    assert torch.equal(embeds[mask], text[mask])


@pytest.mark.parametrize("padding", ["right", "left"])
def test_aligned_states_are_block_outputs_at_point_positions(tiny_model, padding):
    """Prompts of different lengths: the projector sees hidden_states[layer] at each sample's point positions."""
    tiny_model.eval()  # no LoRA dropout: two passes must agree
    batch = tiny_model.builder.collate([tiny_model.builder.encode(d) for d in DIALOGUES], padding)
    assert len(set(batch.answer_start.tolist())) == 3  # prompt lengths really differ
    if padding == "left":
        assert len(set(batch.point_positions[:, 0].tolist())) == 3  # and so do the point positions
    pts = clouds(3, N)
    seen = []
    handle = tiny_model.align_projector.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    out = tiny_model(batch, points=pts)
    handle.remove()
    feats = tiny_model.encode_points(pts)
    ref = tiny_model.llm(
        inputs_embeds=tiny_model.embed(batch, feats.point_tokens),
        attention_mask=batch.attention_mask,
        position_ids=(batch.attention_mask.cumsum(-1) - 1).clamp(min=0),
        output_hidden_states=True,
    ).hidden_states[tiny_model.align_cfg.layer]
    expected = gather_positions(ref, batch.point_positions)
    assert torch.allclose(seen[0], expected, atol=1e-6)
    hand = alignment_loss(tiny_model.align_projector(expected), feats.qformer_out)
    assert out.align_loss.item() == pytest.approx(hand.item(), rel=1e-5)


def test_legacy_span_pairs_other_positions(tiny_config):
    exact = build_model(tiny_config).eval()
    legacy = build_model(dataclasses.replace(tiny_config, align=dataclasses.replace(tiny_config.align, span="legacy")))
    legacy.eval()
    batch = make_batch(exact)
    assert not torch.equal(exact.align_positions(batch), legacy.align_positions(batch))
    pts = clouds(3, N)
    assert exact(batch, points=pts).align_loss.item() != pytest.approx(legacy(batch, points=pts).align_loss.item())


@pytest.mark.parametrize("stage", ["stage1a", "stage1b", "stage2"])
def test_gradients_reach_exactly_the_trainable_parameters(tiny_model, stage):
    apply_trainable(tiny_model, STAGES[stage])
    tiny_model.train()
    tiny_model(make_batch(tiny_model), points=clouds(3, N)).loss.backward()
    for name, p in tiny_model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
            if "lora_A" not in name:  # lora_B starts at zero, so lora_A's first gradient is exactly zero
                assert p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_stage2_trains_lora_norms_and_projector_only(tiny_model):
    apply_trainable(tiny_model, STAGES["stage2"])
    names = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert names
    assert all(n.startswith(("llm.", "align_projector.")) for n in names)
    assert all("lora_" in n or "norm" in n for n in names if n.startswith("llm."))
    assert {"point_encoder", "bridge", "qformer", "projector"} <= tiny_model.eval_parts


def test_qformer_outputs_equal_points_path(tiny_model):
    tiny_model.eval()
    batch, pts = make_batch(tiny_model), clouds(3, N)
    a = tiny_model(batch, points=pts)
    b = tiny_model(batch, qformer_out=tiny_model.query_outputs(pts))
    assert torch.allclose(a.loss, b.loss)
    with pytest.raises(ValueError, match="exactly one"):
        tiny_model(batch)


def test_alignment_off_builds_no_projector(tiny_config):
    model = build_model(preset("tiny", ["align.enabled=false"]))
    assert model.align_projector is None
    assert model(make_batch(model), points=clouds(3, N)).align_loss is None


def test_align_layer_out_of_range():
    with pytest.raises(ValueError, match=r"align.layer=9: the LLM has 4 decoder blocks \(1..4\)"):
        build_model(preset("tiny", ["align.layer=9"]))


def test_greedy_generation_is_deterministic_and_batch_independent(tiny_model):
    tiny_model.eval()
    pts = clouds(3, N)
    questions = ["What is this?", "Describe it in great detail please.", "Colour?"]
    cfg = GenerationConfig.greedy(max_new_tokens=8)
    first = tiny_model.generate(pts, questions, config=cfg)
    assert first == tiny_model.generate(pts, questions, config=cfg)
    singles = [tiny_model.generate(pts[i : i + 1], [q], config=cfg)[0] for i, q in enumerate(questions)]
    assert first == singles


def test_beam_sampling_and_history(tiny_model):
    tiny_model.eval()
    pts = clouds(2, N)
    out = tiny_model.generate(pts, ["a", "b"], config=GenerationConfig(max_new_tokens=4))
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    again = tiny_model.generate(pts, ["a", "b"], config=GenerationConfig(max_new_tokens=4))
    assert out == again  # seeded sampling
    hist = tiny_model.generate(pts, ["b", "c"], histories=[[("a", "x")], []], config=GenerationConfig.greedy(4))
    assert len(hist) == 2
    with pytest.raises(ValueError, match="2 point clouds but 1 questions"):
        tiny_model.generate(pts, ["a"])
