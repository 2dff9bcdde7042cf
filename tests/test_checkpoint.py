import pytest
import torch
from safetensors.torch import load_file

from pointalign.checkpoint import checkpoint_chain, load_model, load_state_into, save_checkpoint
from pointalign.config import GenerationConfig
from pointalign.models.builders import build_model
from pointalign.training.stages import STAGES, apply_trainable
from tests.conftest import clouds


def train_a_step(model):
    apply_trainable(model, STAGES["stage2"])
    model.train()
    batch = model.builder.collate([model.builder.encode([("What is this?", "A red sphere.")])], "right")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(batch, points=clouds(1, 256)).loss.backward()
    opt.step()
    model.eval()


def test_inference_save_has_no_alignment_projector(tiny_model, tiny_config, tmp_path):
    train_a_step(tiny_model)
    save_checkpoint(tiny_model, tmp_path / "full", tiny_config, what="full", for_inference=True)
    save_checkpoint(tiny_model, tmp_path / "train", tiny_config, what="trainable", for_inference=True)
    for name in ("full", "train"):
        keys = load_file(str(tmp_path / name / "model.safetensors")).keys()
        assert keys and not any(k.startswith("align_projector.") for k in keys)
    training = load_file(str(tmp_path / "train" / "model.safetensors"))
    assert training.keys() == {
        n for n, p in tiny_model.named_parameters() if p.requires_grad and not n.startswith("align_projector.")
    }


def test_trainable_save_keeps_the_projector_for_training(tiny_model, tiny_config, tmp_path):
    train_a_step(tiny_model)
    save_checkpoint(tiny_model, tmp_path / "ck", tiny_config)
    keys = load_file(str(tmp_path / "ck" / "model.safetensors")).keys()
    assert any(k.startswith("align_projector.") for k in keys)


def test_inference_load_never_builds_the_projector_and_reproduces_outputs(tiny_model, tiny_config, tmp_path):
    train_a_step(tiny_model)
    save_checkpoint(tiny_model, tmp_path / "ck", tiny_config, what="full")
    loaded, cfg = load_model(tmp_path / "ck", for_inference=True)
    assert loaded.align_projector is None and cfg == tiny_config
    pts = clouds(2, 256)
    greedy = GenerationConfig.greedy(6)
    assert loaded.generate(pts, ["a", "b"], config=greedy) == tiny_model.generate(pts, ["a", "b"], config=greedy)
    training, _ = load_model(tmp_path / "ck", for_inference=False)
    assert torch.equal(training.align_projector.net[0].weight, tiny_model.align_projector.net[0].weight)


def test_inference_load_merges_lora_with_the_same_states(tiny_model, tiny_config, tmp_path):
    """The LoRA deltas (non-zero after a step) are added into the fp32 base weights: no adapter is left, and every
    layer's point-token states match the unmerged model's."""
    from pointalign.analysis.probe import point_states

    train_a_step(tiny_model)
    save_checkpoint(tiny_model, tmp_path / "ck", tiny_config, what="full")
    loaded, _ = load_model(tmp_path / "ck", for_inference=True)
    assert not any("lora_" in n for n, _ in loaded.llm.named_parameters())
    assert any("lora_" in n for n, _ in tiny_model.llm.named_parameters())
    pts = clouds(3, 256)
    merged, unmerged = point_states(loaded, pts)[0], point_states(tiny_model, pts)[0]  # (L+1, 3, D)
    assert torch.allclose(merged, unmerged, atol=1e-5)
    training, _ = load_model(tmp_path / "ck", for_inference=False)
    assert any("lora_" in n for n, _ in training.llm.named_parameters())  # training keeps the adapters


def test_parent_chain(tiny_model, tiny_config, tmp_path):
    save_checkpoint(tiny_model, tmp_path / "base", tiny_config, what="full")
    train_a_step(tiny_model)
    save_checkpoint(tiny_model, tmp_path / "child", tiny_config, parent=tmp_path / "base")
    assert [p.name for p in checkpoint_chain(tmp_path / "child")] == ["base", "child"]
    loaded, _ = load_model(tmp_path / "child", for_inference=False)
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


def test_replacing_a_checkpoint_is_atomic(tiny_model, tiny_config, tmp_path):
    save_checkpoint(tiny_model, tmp_path / "ck", tiny_config)
    save_checkpoint(tiny_model, tmp_path / "ck", tiny_config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.yaml", "model.safetensors"]


def test_bad_checkpoints(tiny_model, tiny_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a pointalign checkpoint"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="parent checkpoint"):
        save_checkpoint(tiny_model, tmp_path / "ck", tiny_config, parent=tmp_path / "nope")
    assert not (tmp_path / "ck").exists()
    from safetensors.torch import save_file

    (tmp_path / "odd").mkdir()
    save_file({"not.a.weight": torch.zeros(1)}, str(tmp_path / "odd" / "model.safetensors"))
    with pytest.raises(ValueError, match="tensors the model does not have"):
        load_state_into(tiny_model, tmp_path / "odd")
    (tmp_path / "odd" / "config.yaml").write_text("just text\n")
    with pytest.raises(ValueError, match="malformed checkpoint config"):
        load_model(tmp_path / "odd")


def test_other_model_shape_is_refused(tiny_config, tmp_path):
    from pointalign.config import preset

    small = build_model(preset("tiny", ["projector.hidden=32"]))
    save_checkpoint(small, tmp_path / "ck", small.config, what="full")
    with pytest.raises(ValueError, match="shape mismatch"):
        load_state_into(build_model(tiny_config), tmp_path / "ck")
