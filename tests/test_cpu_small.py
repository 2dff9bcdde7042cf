"""The real cpu-small model: SmolLM2-135M-Instruct from its GGUF package + MiniLM-initialised Q-Former."""

import pytest
import torch

from pointalign.config import GenerationConfig, preset
from pointalign.models.builders import build_model
from pointalign.models.qformer import _read_bert_state, minilm_folder
from pointalign.training.stages import STAGES, apply_trainable
from tests.conftest import clouds


@pytest.mark.slow
def test_cpu_small_trains_two_aligned_steps_and_generates():
    cfg = preset("cpu-small", ["encoder.num_points=512", "encoder.num_groups=32"])
    model = build_model(cfg)
    assert type(model.llm.get_base_model()).__name__ == "LlamaForCausalLM"
    bert = _read_bert_state(minilm_folder())
    assert torch.equal(
        model.qformer.encoder.layer[0].intermediate_query.dense.weight,
        bert["encoder.layer.0.intermediate.dense.weight"],
    )
    apply_trainable(model, STAGES["stage2"])
    model.train()
    dialogues = [[("What is this?", "A red sphere.")], [("Describe it.", "A blue cube with six square faces.")]]
    batch = model.builder.collate([model.builder.encode(d) for d in dialogues], "right")
    pts = clouds(2, 512)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = model.align_projector.net[0].weight.detach().clone()
    losses = []
    for _ in range(2):
        out = model(batch, points=pts)
        assert out.align_loss is not None and torch.isfinite(out.loss)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert not torch.equal(before, model.align_projector.net[0].weight)
    model.eval()
    answers = model.generate(pts, ["What is this?", "What colour is it?"], config=GenerationConfig.greedy(12))
    assert len(answers) == 2 and all(a.strip() for a in answers)
