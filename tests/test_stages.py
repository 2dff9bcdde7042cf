import pytest

from pointalign.config import preset
from pointalign.errors import ConfigError
from pointalign.models.builders import build_model
from pointalign.training.stages import STAGES, TrainableConfig, apply_trainable, parameter_summary


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_stage1a_trains_the_bridge_only(tiny_model):
    apply_trainable(tiny_model, STAGES["stage1a"])
    assert trainable_names(tiny_model) == {n for n, _ in tiny_model.named_parameters() if n.startswith("bridge.")}


def test_stage1b_trains_bridge_qformer_lora_queries_projector_llm_lora(tiny_model):
    apply_trainable(tiny_model, STAGES["stage1b"])
    names = trainable_names(tiny_model)
    assert "qformer.query_tokens" in names
    qformer = {n for n in names if n.startswith("qformer.") and n != "qformer.query_tokens"}
    assert qformer and all("lora_" in n or "LayerNorm.weight" in n for n in qformer)
    assert not any(n.startswith(("point_encoder.", "align_projector.")) for n in names)


def test_stage0_trains_the_encoder_and_keeps_others_in_eval(tiny_model):
    apply_trainable(tiny_model, STAGES["stage0"])
    tiny_model.train()
    assert tiny_model.point_encoder.training and not tiny_model.qformer.training
    assert not tiny_model.llm.training


def test_lora_mode_without_lora_modules():
    model = build_model(preset("tiny", ["llm.lora_r=0"]))
    with pytest.raises(ConfigError, match="trainable.llm: mode 'lora\\+norms' but the part has no LoRA"):
        apply_trainable(model, STAGES["stage2"])


def test_training_a_missing_projector():
    model = build_model(preset("tiny"), for_inference=True)
    with pytest.raises(ConfigError, match="no align_projector"):
        apply_trainable(model, TrainableConfig(align_projector="full"))


def test_summary_counts(tiny_model):
    apply_trainable(tiny_model, STAGES["stage2"])
    rows = dict((name, (n, t)) for name, n, t in parameter_summary(tiny_model))
    assert sum(n for n, _ in rows.values()) == sum(p.numel() for p in tiny_model.parameters())
    assert rows["align_projector"][0] == rows["align_projector"][1] > 0
    assert rows["point_encoder"][1] == 0
