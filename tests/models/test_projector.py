import pytest
import torch

from pointalign.config import BridgeConfig, ProjectorConfig
from pointalign.models.projector import AlignmentProjector, Bridge, ModalityProjector


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_shapes():
    assert Bridge(BridgeConfig(hidden=(8,)), 4, 6)(torch.rand(2, 5, 4)).shape == (2, 5, 6)
    assert Bridge(BridgeConfig(hidden=()), 4, 6)(torch.rand(2, 5, 4)).shape == (2, 5, 6)
    assert ModalityProjector(ProjectorConfig(hidden=8), 4, 10)(torch.rand(2, 3, 4)).shape == (2, 3, 10)
    assert AlignmentProjector(10, 4)(torch.rand(2, 3, 10)).shape == (2, 3, 4)


def test_reference_parameter_counts():
    # REFERENCE_SPEC 1.3, 1.5, 2: bridge 1,378,432; projector 13,638,144; alignment projector 8,310,784
    assert n_params(Bridge(BridgeConfig(hidden=(768,)), 384, 1408)) == 1_378_432
    assert n_params(ModalityProjector(ProjectorConfig(hidden=4096), 768, 2560)) == 13_638_144
    assert n_params(AlignmentProjector(2560, 768)) == 8_310_784
    assert AlignmentProjector(2560, 768).net[0].out_features == 1664


def test_text_output_scale_puts_point_tokens_at_the_text_embeddings_scale():
    from pointalign.config import preset
    from pointalign.models.builders import build_model

    model = build_model(preset("tiny", ["projector.output_scale=text"]))
    text = model.llm.get_input_embeddings().weight.detach()
    text_rms = float(text.pow(2).mean().sqrt())
    q = torch.randn(3, 4, model.config.qformer.hidden_size) * 7.0
    tokens = model.projector(q)  # (3, 4, D)
    assert tokens.shape == (3, 4, text.shape[1])
    assert float(tokens.pow(2).mean(-1).sqrt().mean()) == pytest.approx(text_rms, rel=1e-3)
    assert model.projector.norm.weight.requires_grad
    free = build_model(preset("tiny"))
    assert free.projector.norm is None


def test_text_output_scale_needs_the_text_rms():
    with pytest.raises(ValueError, match="RMS of the LLM's input embeddings"):
        ModalityProjector(ProjectorConfig(hidden=8, output_scale="text"), 4, 6)
