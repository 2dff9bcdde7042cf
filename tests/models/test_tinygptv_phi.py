"""TinyGPT-V's Phi against the reference fixture (tests/fixtures/minigpt3d_tiny, see its README.md).

The reference's LLM outputs (MiniGPT-3D from its stage-3 file, PointAlign from pretrain + finetune) are compared at
the positions where ``attention_mask == 1``, given the reference's own ``inputs_embeds``.
"""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import PhiConfig

from pointalign.config import GenerationConfig, LLMConfig, PromptConfig, preset
from pointalign.errors import CheckpointError, ConfigError
from pointalign.models import llm as llm_seam
from pointalign.models.builders import build_model
from pointalign.models.released import apply_llm_state, llm_state, read_checkpoint
from pointalign.models.tinygptv_phi import TinyGPTVPhiForCausalLM, fuse_qkv, load_phi2_folder, split_qkv

FIXTURE = Path(__file__).parent.parent / "fixtures" / "minigpt3d_tiny"
RUNS = {  # the reference's evaluation load order of the LLM-side files (KEYS.md §6)
    "mg3": ["MiniGPT_3D_stage_3.pth"],
    "pa": ["MiniGPT_3D_stage_3.pth", "finetune.pth"],
}
LORA_ALPHA = 16  # the fixture's LLM LoRA alpha (r = 4 comes from the weights)
TOLERANCE = 1e-4  # max |ours - reference| / max |reference| over the attended positions
HIDDEN, LAYERS, HEADS, VOCAB = 64, 2, 4, 448  # the fixture's Phi
BOS = 415  # <|endoftext|>: bos = eos = pad


@pytest.fixture(scope="module")
def reference():
    return load_file(FIXTURE / "reference_outputs.safetensors")


def phi_folder(layout, split_folder):
    return FIXTURE / "Phi_2" if layout == "fused" else split_folder


def reference_llm(layout, run, lora, split_folder):
    """Our Phi with the fixture's base weights and the run's LoRA + norms, LoRA merged or as peft adapters."""
    model = load_phi2_folder(phi_folder(layout, split_folder))
    if lora == "peft":
        cfg = LLMConfig(
            source="phi",
            architecture="tinygptv-phi",
            lora_r=4,
            lora_alpha=LORA_ALPHA,
            lora_dropout=0.0,
            lora_targets=("query_key_value", "dense"),
        )
        model = llm_seam.apply_lora(model, cfg)
    state = llm_state([read_checkpoint(FIXTURE / name) for name in RUNS[run]])
    apply_llm_state(model, state, lora_alpha=LORA_ALPHA)
    return model.eval()


def relative_error(ours, ref, mask):
    return float((ours[mask] - ref[mask]).abs().max() / ref[mask].abs().max())


def tiny_phi():
    """A random TinyGPT-V Phi: 3 blocks, width 16, 2 heads of 8 (4 rotary dims), vocabulary 32; eval mode."""
    torch.manual_seed(0)
    config = PhiConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2)
    return TinyGPTVPhiForCausalLM(config).eval()


def test_fuse_qkv_orders_rows_by_head_then_qkv():
    nh, hd, d_in = 4, 3, 5
    q, k, v = (torch.randn(nh * hd, d_in) for _ in range(3))
    fused = fuse_qkv(q, k, v, nh)  # (3H, d_in)
    for j, part in enumerate((q, k, v)):  # KEYS.md: W.view(nh, 3, hd, H)[:, j] == W_j.view(nh, hd, H)
        assert torch.equal(fused.view(nh, 3, hd, d_in)[:, j], part.view(nh, hd, d_in))
    assert all(torch.equal(a, b) for a, b in zip(split_qkv(fused, nh), (q, k, v)))
    bias = fuse_qkv(q[:, 0], k[:, 0], v[:, 0], nh)  # (3H,)
    assert torch.equal(bias, fused[:, 0])


def test_fused_and_split_layouts_load_identical_weights(split_folder):
    fused = load_phi2_folder(FIXTURE / "Phi_2").state_dict()
    split = load_phi2_folder(split_folder).state_dict()
    assert fused.keys() == split.keys()
    assert all(torch.equal(fused[k], split[k]) for k in fused)
    raw = load_file(FIXTURE / "Phi_2" / "model.safetensors")
    assert torch.equal(
        fused["model.layers.1.self_attn.query_key_value.weight"],
        raw[next(k for k in raw if "1.self_attn.query_key_value.w" in k)].float(),
    )
    # the modules a Phi-2 folder lacks start at the identity until a checkpoint supplies them
    assert torch.equal(fused["model.layers.0.self_attn.q_layernorm.bias"], torch.zeros(HIDDEN // HEADS))
    assert torch.equal(fused["model.layers.0.post_layernorm.weight"], torch.ones(HIDDEN))


@pytest.mark.parametrize("lora", ["merged", "peft"])
@pytest.mark.parametrize("run", sorted(RUNS))
@pytest.mark.parametrize("layout", ["fused", "split"])
def test_llm_reproduces_reference_logits_and_hidden_states(reference, split_folder, layout, run, lora):
    model = reference_llm(layout, run, lora, split_folder)
    for part in ("eval", "train"):
        mask = reference[f"{run}.{part}.attention_mask"]
        # evaluation: the reference's cumsum positions (left padding); training: none passed, so 0..L-1
        positions = reference.get(f"{run}.{part}.position_ids")
        with torch.no_grad():
            out = model(
                inputs_embeds=reference[f"{run}.{part}.inputs_embeds"],
                attention_mask=mask,
                position_ids=positions,
                output_hidden_states=True,
            )
        assert len(out.hidden_states) == LAYERS + 1
        ours = {
            "logits": out.logits,
            "hidden_states_1": out.hidden_states[1],
            "hidden_states_last": out.hidden_states[-1],
        }
        for name, tensor in ours.items():
            err = relative_error(tensor, reference[f"{run}.{part}.{name}"], mask.bool())
            assert err < TOLERANCE, f"{run}.{part}.{name}: relative error {err:.2e}"


@pytest.mark.parametrize("run", sorted(RUNS))
def test_greedy_generation_matches_reference_and_the_uncached_loop(reference, split_folder, run):
    model = reference_llm("fused", run, "merged", split_folder)
    embeds = reference[f"{run}.eval.inputs_embeds"]  # (B, L, D), left-padded with zero vectors
    mask = reference[f"{run}.eval.attention_mask"].long()
    expected = reference[f"{run}.eval.greedy_new_tokens"]  # (B, 7)
    # transformers 4.36 started the output of generate(inputs_embeds=...) with the BOS id; 6 tokens were generated
    assert (expected[:, 0] == BOS).all()
    expected = expected[:, 1:]  # (B, 6)
    steps = expected.shape[1]
    cached = model.generate(  # stops a sample at <|endoftext|> and pads it with the same id, as the reference
        inputs_embeds=embeds,
        attention_mask=mask,
        max_new_tokens=steps,
        do_sample=False,
        use_cache=True,
        pad_token_id=BOS,
    )
    assert torch.equal(cached, expected)
    tokens = []
    done = torch.zeros(len(embeds), dtype=torch.bool)  # (B,)
    with torch.no_grad():  # no cache: the whole sequence again at every step
        for _ in range(steps):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False).logits
            token = logits[:, -1].argmax(-1).masked_fill(done, BOS)  # (B,)
            done |= token == BOS
            tokens.append(token)
            embeds = torch.cat([embeds, model.get_input_embeddings()(token)[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    assert torch.equal(torch.stack(tokens, dim=1), cached)


def test_shapes_and_hidden_states_with_tiny_sizes():
    model = tiny_phi()
    ids = torch.randint(0, 32, (2, 5))  # (B, L)
    out = model(input_ids=ids, output_hidden_states=True)
    assert out.logits.shape == (2, 5, 32)
    assert len(out.hidden_states) == 4 and all(h.shape == (2, 5, 16) for h in out.hidden_states)
    assert torch.equal(out.hidden_states[0], model.get_input_embeddings()(ids))
    # hidden_states[l] is the output of block l (what the alignment hook reads); the last one is after the final norm
    captured = []
    block = llm_seam.decoder_layers(model)[1]
    handle = block.register_forward_hook(lambda _m, _i, o: captured.append(o))
    try:
        last = llm_seam.decoder_stack(model)(input_ids=ids).last_hidden_state
    finally:
        handle.remove()
    assert torch.allclose(captured[0], out.hidden_states[2])
    assert torch.allclose(last, out.hidden_states[-1])
    assert torch.allclose(model.lm_head(last), out.logits)
    attn = model.model.layers[0].self_attn
    assert attn.query_key_value.weight.shape == (48, 16) and attn.q_layernorm.weight.shape == (8,)
    assert attn.rotary_ndims == 4


def test_left_padding_does_not_change_attended_outputs():
    model = tiny_phi()
    ids = torch.randint(0, 32, (1, 6))
    alone = model(input_ids=ids).logits  # (1, 6, V)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 6, dtype=torch.long)], dim=1)
    out = model(input_ids=padded, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    assert torch.allclose(out[:, 3:], alone, atol=1e-5)


def test_peft_lora_on_query_key_value_and_dense_trains(split_folder):
    cfg = LLMConfig(
        source="phi", architecture="tinygptv-phi", lora_r=4, lora_alpha=8, lora_targets=("query_key_value", "dense")
    )
    model = llm_seam.apply_lora(load_phi2_folder(FIXTURE / "Phi_2"), cfg)
    model.train()
    ids = torch.randint(0, VOCAB, (2, 7))
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained == {n for n, p in model.named_parameters() if p.requires_grad}
    assert len(trained) == 4 * LAYERS and all(".lora_" in n for n in trained)
    assert any("query_key_value.lora_B" in n for n in trained) and any("dense.lora_A" in n for n in trained)
    assert all(torch.isfinite(p.grad).all() for n, p in model.named_parameters() if n in trained)


def test_lora_merged_equals_lora_as_adapters(reference, split_folder):
    merged = reference_llm("fused", "pa", "merged", split_folder)
    adapters = reference_llm("fused", "pa", "peft", split_folder)
    embeds = reference["pa.train.inputs_embeds"]
    with torch.no_grad():
        assert torch.allclose(merged(inputs_embeds=embeds).logits, adapters(inputs_embeds=embeds).logits, atol=1e-5)


def test_q_k_v_shapes_that_do_not_fit_are_a_clear_error(tmp_path, split_folder):
    folder = tmp_path / "phi"
    shutil.copytree(split_folder, folder)
    weights = load_file(folder / "model.safetensors")
    weights["model.layers.1.self_attn.k_proj.weight"] = torch.zeros(HIDDEN // 2, HIDDEN)
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"model\.layers\.1\.self_attn\.k_proj\.weight has shape \(32, 64\), expected \(64, 64\)"
    ):
        load_phi2_folder(folder)
    del weights["model.layers.1.self_attn.k_proj.weight"]
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"incomplete.*model\.layers\.1\.self_attn\.\{q,v\}_proj\.weight"):
        load_phi2_folder(folder)
    weights["model.layers.1.self_attn.query_key_value.weight"] = torch.zeros(3 * HIDDEN, HIDDEN // 2)
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"query_key_value\.weight: shape \(192, 32\) does not fit"):
        load_phi2_folder(folder)


def test_unexpected_keys_and_missing_folder_are_clear_errors(tmp_path):
    folder = tmp_path / "phi"
    shutil.copytree(FIXTURE / "Phi_2", folder)
    weights = load_file(folder / "model.safetensors")
    weights["transformer.h.0.mixer.Wqkv.weight"] = torch.zeros(3)
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"transformer\.h\.0\.mixer\.Wqkv\.weight: not a weight of Phi-2"):
        load_phi2_folder(folder)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_phi2_folder(tmp_path / "nowhere")


def test_reading_checkpoints_refuses_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((FIXTURE / "finetune.pth").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(truncated)
    code = tmp_path / "code.pth"
    torch.save({"model": {}, "hook": ArbitraryObject()}, code)
    with pytest.raises(CheckpointError, match="holds more than tensors"):
        read_checkpoint(code)


class ArbitraryObject:
    """Anything but tensors and plain containers: torch.load(weights_only=True) must refuse to build it."""


def test_checkpoint_files_apply_in_load_order():
    stage3 = read_checkpoint(FIXTURE / "MiniGPT_3D_stage_3.pth")
    finetune = read_checkpoint(FIXTURE / "finetune.pth")
    state = llm_state([stage3, finetune])
    key = "model.final_layernorm.weight"
    assert torch.equal(state[key], finetune["llama_model.base_model.model." + key])
    assert not torch.equal(state[key], stage3["llama_model.base_model.model." + key])
    assert not any(k.startswith("llama_model") or "pc_encoder" in k for k in state)
    with pytest.raises(CheckpointError, match="not a weight of"):
        apply_llm_state(load_phi2_folder(FIXTURE / "Phi_2"), {"model.layers.9.mlp.fc1.weight": torch.zeros(1)}, 16)


def test_config_selects_tinygptv_phi_and_plain_phi_stays_available(split_folder):
    prompt = PromptConfig(chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}")
    ours, tokenizer = llm_seam.load_llm(
        LLMConfig(source=str(FIXTURE / "Phi_2"), architecture="tinygptv-phi", lora_r=0), prompt
    )
    assert isinstance(ours, TinyGPTVPhiForCausalLM) and tokenizer.eos_token == "<|endoftext|>"
    # Hugging Face's own Phi reads today's layout (a fused-layout folder would leave its q/k/v_proj random)
    plain, _ = llm_seam.load_llm(LLMConfig(source=str(split_folder)), prompt)
    assert type(plain).__name__ == "PhiForCausalLM"
    q = load_file(split_folder / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(plain.model.layers[0].self_attn.q_proj.weight, q.float())
    with pytest.raises(ConfigError, match="architecture"):
        LLMConfig(source="tiny", architecture="tinygptv-phi", lora_targets=("query_key_value", "dense"))
    with pytest.raises(ConfigError, match=r"lora_targets.*query_key_value"):
        LLMConfig(source="phi", architecture="tinygptv-phi")


def test_pointalign_model_trains_and_generates_on_tinygptv_phi():
    cfg = preset(
        "tiny",
        [
            f"llm.source={FIXTURE / 'Phi_2'}",
            "llm.architecture=tinygptv-phi",
            "llm.lora_targets=[query_key_value, dense]",
            "prompt.chat_template=\"{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}\"",
        ],
    )
    model = build_model(cfg)
    batch = model.builder.collate([model.builder.encode([("What is this?", "A ball.")])] * 2, "right")
    points = torch.rand(2, cfg.encoder.num_points, 6)
    out = model(batch, points=points)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.align_loss is not None
    answers = model.eval().generate(
        points, ["What is this?", "Colour?"], config=GenerationConfig.greedy(max_new_tokens=3)
    )
    assert len(answers) == 2
