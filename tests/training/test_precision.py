"""``precision: auto``: the decision from (injected) timings, its log line, its cache, and a stage that records it."""

import json
from pathlib import Path

import pytest
import torch

from pointalign.cli import main
from pointalign.errors import ConfigError
from pointalign.training import precision as prec
from pointalign.training.config import TrainConfig, load_train_config
from pointalign.training.distributed import DistInfo
from pointalign.training.precision import BF16_MARGIN, PrecisionChoice, choose_precision, resolve_precision
from tests.conftest import clouds

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "tiny"
CPU = DistInfo(0, 1, 0, torch.device("cpu"))


@pytest.fixture
def fake_probe(monkeypatch):
    """Replace the timed matmul by given timings; returns the list of devices it was asked to time."""
    calls: list[str] = []

    def install(fp32_ms: float, bf16_ms: float, supported: bool = True) -> list[str]:
        def time_probe(device, warmup=prec.PROBE_WARMUP, repeats=prec.PROBE_REPEATS):
            calls.append(str(device))
            return fp32_ms, bf16_ms

        monkeypatch.setattr(prec, "time_probe", time_probe)
        monkeypatch.setattr(prec, "bf16_supported", lambda device: supported)
        monkeypatch.setattr(prec, "_MEASURED", {})
        return calls

    return install


def test_bf16_clearly_faster_is_chosen():
    choice = choose_precision(13.5, 3.5, True, "cpu (AVX512)")
    assert choice.chosen == "bf16"
    assert (choice.fp32_ms, choice.bf16_ms) == (13.5, 3.5)
    assert "3.86x faster" in choice.reason and "cpu (AVX512)" in choice.reason


def test_bf16_slower_gives_fp32():
    choice = choose_precision(13.5, 24.0, True, "cpu (AVX512)")
    assert choice.chosen == "fp32"
    assert "1.78x slower" in choice.reason


def test_bf16_within_the_margin_gives_fp32():
    just_under = 10.0 / (1.0 + BF16_MARGIN) + 0.05  # faster, but by less than the margin
    choice = choose_precision(10.0, just_under, True)
    assert choice.chosen == "fp32"
    assert "only" in choice.reason
    assert choose_precision(10.0, 10.0 / (1.0 + BF16_MARGIN) - 0.05, True).chosen == "bf16"


def test_unsupported_bf16_gives_fp32_whatever_the_timings():
    assert choose_precision(10.0, 1.0, False, "cuda:0 (old GPU)").chosen == "fp32"
    choice = choose_precision(None, None, False, "cuda:0 (old GPU)")
    assert choice.chosen == "fp32" and "not supported on cuda:0 (old GPU)" in choice.reason


def test_the_log_line_names_the_choice_the_reason_and_both_timings():
    line = choose_precision(13.5, 24.0, True, "cpu (AVX512)").describe()
    assert line.startswith("precision auto -> fp32: bf16 is 1.78x slower than fp32 on cpu (AVX512)")
    assert "fp32 13.50 ms" in line and "bf16 24.00 ms" in line
    assert f"Linear {prec.PROBE_ROWS}x{prec.PROBE_IN}->{prec.PROBE_OUT}" in line


def test_auto_measures_once_per_device(fake_probe):
    calls = fake_probe(12.0, 4.0)
    first = resolve_precision("auto", CPU)
    again = resolve_precision("auto", CPU)
    assert first.chosen == again.chosen == "bf16"
    assert calls == ["cpu"]


def test_auto_without_bf16_times_nothing(fake_probe):
    calls = fake_probe(12.0, 4.0, supported=False)
    assert resolve_precision("auto", CPU).chosen == "fp32"
    assert calls == []


def test_explicit_and_resumed_precisions_are_not_measured(fake_probe):
    calls = fake_probe(12.0, 4.0)
    assert resolve_precision("fp32", CPU).chosen == "fp32"
    assert resolve_precision("bf16", CPU, resumed="fp32").chosen == "bf16"  # the config's own value wins
    kept = resolve_precision("auto", CPU, resumed="fp32")
    assert kept.chosen == "fp32" and "resumed" in kept.reason
    assert calls == []
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", CPU)


def test_the_probe_times_both_precisions():
    fp32_ms, bf16_ms = prec.time_probe(torch.device("cpu"), warmup=0, repeats=1)
    assert fp32_ms > 0 and bf16_ms > 0


def test_a_bad_precision_is_a_config_error_naming_the_key(tiny_data):
    with pytest.raises(ConfigError, match=r"stage0.yaml: precision: .*'auto'.*got 'fp16'"):
        load_train_config(CONFIGS / "stage0.yaml", [f"data.root={tiny_data}", "precision=fp16"])
    with pytest.raises(ConfigError, match="precision: 'fp32', 'bf16' or 'auto', got 'fp16'"):
        TrainConfig(stage="stage0", precision="fp16")
    assert load_train_config(CONFIGS / "stage0.yaml", ["precision=auto"]).precision == "auto"


@pytest.mark.parametrize(("fp32_ms", "bf16_ms", "expected"), [(12.0, 4.0, "bf16"), (13.5, 24.0, "fp32")])
def test_a_stage_with_auto_records_what_it_resolved_to(
    fake_probe, tiny_data, tmp_path, capsys, monkeypatch, fp32_ms, bf16_ms, expected
):
    """Stage 0 (contrastive) with precision=auto: runs in, logs and records the measured choice."""
    fake_probe(fp32_ms, bf16_ms)
    seen: list[bool] = []  # whether bf16 autocast was on in the stage-0 forward
    from pointalign.training import contrastive

    original = contrastive.ContrastiveHead.forward

    def recording_forward(self, tokens):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return original(self, tokens)

    monkeypatch.setattr(contrastive.ContrastiveHead, "forward", recording_forward)
    args = ["train", str(CONFIGS / "stage0.yaml"), "--out", str(tmp_path), f"data.root={tiny_data}"]
    assert main([*args, "precision=auto", "optim.steps=2", "contrastive.qformer=false"]) == 0
    assert f"stage0: precision auto -> {expected}: " in capsys.readouterr().out
    state = json.loads((tmp_path / "stage0" / "trainer_state.json").read_text())
    assert state["precision"] == expected and state["train_config"]["precision"] == "auto"
    lines = [json.loads(x) for x in (tmp_path / "logs" / "stage0" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["precision"] == expected and "precision" not in lines[1]
    assert seen and all(on == (expected == "bf16") for on in seen)


def test_setup_takes_a_given_precision_over_the_config(fake_probe, tiny_data, tmp_path):
    calls = fake_probe(12.0, 4.0)
    from pointalign.training.contrastive import setup_contrastive

    cfg = load_train_config(CONFIGS / "stage0.yaml", [f"data.root={tiny_data}", "precision=auto"])
    run = setup_contrastive(cfg, tmp_path, CPU, PrecisionChoice("fp32", None, None, "kept from the run being resumed"))
    assert run.precision.chosen == "fp32" and calls == []


def test_cuda_without_bf16_gives_fp32_untimed(monkeypatch):
    """The CUDA branch without a GPU: bf16 support is asked of torch.cuda, and no probe runs when it is missing."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "old GPU")
    monkeypatch.setattr(prec, "_MEASURED", {})
    monkeypatch.setattr(prec, "time_probe", lambda *a, **k: pytest.fail("timed a device without bf16"))
    choice = prec.auto_precision(torch.device("cuda", 0))
    assert choice.chosen == "fp32" and choice.reason == "bf16 is not supported on cuda:0 (old GPU)"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert prec.bf16_supported(torch.device("cuda", 0))


# -- a 16-bit LLM: fp32 trainable weights, under autocast ------------------------------------------------------------


def test_a_16_bit_llm_runs_under_autocast():
    fp32 = PrecisionChoice("fp32", 10.0, 20.0, "bf16 is 2.00x slower than fp32 on cpu")
    assert prec.for_llm_dtype(fp32, "auto", "float32") is fp32
    chosen = prec.for_llm_dtype(fp32, "auto", "bfloat16")
    assert chosen.chosen == "bf16" and chosen.reason.startswith("llm.dtype=bfloat16: a 16-bit LLM with fp32")
    assert "(bf16 is 2.00x slower than fp32 on cpu)" in chosen.reason and chosen.fp32_ms == 10.0
    bf16 = PrecisionChoice("bf16", None, None, "set by the config")
    assert prec.for_llm_dtype(bf16, "bf16", "float16") is bf16
    with pytest.raises(ConfigError, match="precision: fp32 with llm.dtype=float16: .* set precision: bf16"):
        prec.for_llm_dtype(PrecisionChoice("fp32", None, None, "set by the config"), "fp32", "float16")


def test_trainable_weights_of_a_bf16_llm_are_fp32(tiny_config):
    import dataclasses

    from pointalign.models.builders import build_model
    from pointalign.training.stages import STAGES, apply_trainable

    cfg = dataclasses.replace(tiny_config, llm=dataclasses.replace(tiny_config.llm, dtype="bfloat16"))
    model = build_model(cfg)
    apply_trainable(model, STAGES["stage2"])  # LLM LoRA + norms, the alignment projector
    trainable = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
    frozen_llm = {n: p.dtype for n, p in model.llm.named_parameters() if not p.requires_grad}
    assert any(".lora_" in n for n in trainable) and any("norm" in n for n in trainable)
    assert set(trainable.values()) == {torch.float32}
    assert set(frozen_llm.values()) == {torch.bfloat16}


def test_a_stage_on_a_bf16_llm_trains_fp32_weights_and_saves_them(fake_probe, tiny_data, tmp_path, capsys):
    fake_probe(10.0, 20.0)  # bf16 slower here: auto would take fp32, the 16-bit LLM takes bf16
    args = ["train", str(CONFIGS / "stage1b.yaml"), f"data.root={tiny_data}", "init_from=null", "preset=tiny"]
    args += ["model_set={llm.dtype: bfloat16}", "optim.steps=2", "checkpoint_every=2"]
    assert main([*args, "--out", str(tmp_path / "fp32"), "precision=fp32"]) == 2
    assert "precision: fp32 with llm.dtype=bfloat16" in capsys.readouterr().err
    assert not (tmp_path / "fp32").exists()
    assert main([*args, "--out", str(tmp_path / "auto"), "precision=auto"]) == 0
    assert "stage1b: precision auto -> bf16: llm.dtype=bfloat16: a 16-bit LLM" in capsys.readouterr().out
    from safetensors.torch import load_file

    from pointalign.checkpoint import load_model

    saved = load_file(tmp_path / "auto" / "stage1b" / "model.safetensors")
    llm = {k: v for k, v in saved.items() if k.startswith("llm.") and (".lora_" in k or "norm" in k)}
    assert llm and {v.dtype for v in llm.values()} == {torch.float32}
    model, cfg = load_model(tmp_path / "auto" / "stage1b")
    assert cfg.llm.dtype == "bfloat16"


@pytest.mark.parametrize("chosen", ["fp32", "bf16"])
def test_inference_autocast_gives_the_autocast_results_and_restores_the_marks(chosen):
    from pointalign.training.precision import autocast, inference_autocast

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    net[0].weight.requires_grad_(False)  # a frozen part keeps its mark
    x = torch.randn(5, 8)
    with torch.no_grad(), autocast(chosen, "cpu"):
        expected = [net(x), net(x * 2)]
    with inference_autocast(chosen, "cpu", net):
        got = [net(x), net(x * 2)]  # two forward passes in one region: the second reads the cached casts
        assert all(p.requires_grad for p in net.parameters()) == (chosen == "bf16")
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    assert got[0].dtype == (torch.bfloat16 if chosen == "bf16" else torch.float32)
    assert not any(g.requires_grad for g in got)
    assert [p.requires_grad for p in net.parameters()] == [False, True, True, True]


def test_llm_attention_is_eager_under_bf16_on_a_cpu_only():
    assert prec.llm_attention("bf16", "cpu") == "eager"
    assert prec.llm_attention("fp32", "cpu") == prec.llm_attention("bf16", "cuda") == "sdpa"


def test_inference_autocast_runs_the_llm_with_eager_attention_and_puts_sdpa_back(tiny_model, tiny_config):
    clouds_2 = clouds(2, tiny_config.encoder.num_points)
    llm = tiny_model.llm.get_base_model()
    assert llm.config._attn_implementation == "sdpa"  # transformers' default
    tiny_model.eval()
    with prec.inference_autocast("fp32", "cpu", tiny_model):
        assert llm.config._attn_implementation == "sdpa"
        fp32 = tiny_model.encode_points(clouds_2).point_tokens
    with prec.inference_autocast("bf16", "cpu", tiny_model):
        assert llm.config._attn_implementation == "eager"
        bf16 = tiny_model.encode_points(clouds_2).point_tokens
    assert llm.config._attn_implementation == "sdpa"
    torch.testing.assert_close(bf16.float(), fp32, atol=0.1, rtol=0.05)
    assert prec.set_llm_attention(torch.nn.Linear(2, 2), "eager") is None  # no LLM: nothing to set


def test_llm_attention_eager_and_sdpa_give_the_same_loss_on_a_padded_batch(tiny_model, tiny_config):
    dialogues = [[("What is this?", "A red sphere.")], [("Describe it.", "A blue cube with six faces, all flat.")]]
    batch = tiny_model.builder.collate([tiny_model.builder.encode(d) for d in dialogues], "right")
    assert not bool(batch.attention_mask.all())  # the shorter dialogue is padded
    points = clouds(2, tiny_config.encoder.num_points)
    tiny_model.eval()
    with torch.no_grad():
        sdpa = tiny_model(batch, points=points)
        assert prec.set_llm_attention(tiny_model, "eager") == "sdpa"
        eager = tiny_model(batch, points=points)
    torch.testing.assert_close(eager.logits, sdpa.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eager.loss, sdpa.loss, atol=1e-5, rtol=1e-5)


# -- frozen LLM weights held in bf16 for the steps of a bf16 stage ----------------------------------------------------


def test_frozen_casts_hold_the_frozen_linear_weights_and_give_the_same_step(tiny_config):
    from pointalign.models.builders import build_model
    from pointalign.training.precision import FrozenCasts, autocast
    from pointalign.training.stages import STAGES, apply_trainable

    torch.manual_seed(0)
    model = build_model(tiny_config)
    apply_trainable(model, STAGES["stage2"])  # LLM LoRA + norms and the alignment projector train
    casts = FrozenCasts(model.llm)
    held = {id(w) for w in casts.weights}
    names = [n for n, p in model.llm.named_parameters() if id(p) in held]
    linears = [(n, m) for n, m in model.llm.named_modules() if isinstance(m, torch.nn.Linear)]
    frozen_linears = [f"{n}.weight" for n, m in linears if not m.weight.requires_grad]
    assert any(n.endswith("base_layer.weight") for n in names)  # the frozen bases of the LoRA Linears, and the rest
    assert names == [n for n in frozen_linears if "lm_head" not in n] and all(".layers." in n for n in names)
    head = model.llm.get_output_embeddings().weight
    assert head is model.llm.get_input_embeddings().weight and id(head) not in held  # tied: read outside autocast
    assert not any(p.requires_grad for p in casts.weights)
    fp32 = [w.detach().clone() for w in casts.weights]
    storage = [w.data_ptr() for w in casts.weights]
    batch = model.builder.collate([model.builder.encode([("What is this?", "A red ball.")])] * 2, "right")
    points = torch.randn(2, tiny_config.encoder.num_points, 6)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same dropout masks in both
        with autocast("bf16", "cpu"):
            out = model(batch, points=points)
        out.loss.backward()
        return out.loss.detach(), [p.grad.clone() for p in trainable]

    loss, grads = loss_and_grads()
    casts.hold()
    casts.hold()  # a second hold keeps the first one's fp32 tensors
    assert casts.held and {w.dtype for w in casts.weights} == {torch.bfloat16}
    held_loss, held_grads = loss_and_grads()
    casts.release()
    assert torch.equal(loss, held_loss) and all(torch.equal(a, b) for a, b in zip(grads, held_grads))
    assert not casts.held and [w.data_ptr() for w in casts.weights] == storage  # the fp32 tensors themselves, back
    assert all(w.dtype == torch.float32 and torch.equal(w, d) for w, d in zip(casts.weights, fp32))
    casts.release()  # nothing held: nothing to do


def test_a_bf16_stage_steps_on_held_casts_and_saves_what_fp32_weights_give(tiny_data, tmp_path, monkeypatch):
    """Stage 1b in bf16 with and without the held casts: the same losses and the same saved weights; the steps saw
    bf16 base weights, the checkpoint and the model after the loop fp32 ones."""
    from pointalign.training import loop
    from pointalign.training.precision import FrozenCasts

    seen: list[set[torch.dtype]] = []
    attention: list[str] = []
    step = loop.train_step

    def recording_step(run, forward):
        seen.append({w.dtype for w in run.casts.weights} if run.casts is not None else set())
        attention.append(run.model.llm.get_base_model().config._attn_implementation)
        return step(run, forward)

    import dataclasses

    from pointalign.training import run as run_module

    monkeypatch.setitem(run_module.KINDS, "instruct", dataclasses.replace(loop.INSTRUCT, step=recording_step))
    args = ["train", str(CONFIGS / "stage1b.yaml"), f"data.root={tiny_data}", "init_from=null", "preset=tiny"]
    args += ["precision=bf16", "optim.steps=3", "checkpoint_every=2"]
    assert main([*args, "--out", str(tmp_path / "held")]) == 0
    assert seen == [{torch.bfloat16}] * 3
    assert attention == ["eager"] * 3  # bf16 on a CPU: explicit attention (llm_attention)
    monkeypatch.setattr(FrozenCasts, "hold", lambda self: None)
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    from safetensors.torch import load_file

    def losses(out: str) -> list[float]:
        lines = (tmp_path / out / "logs" / "stage1b" / "metrics.jsonl").read_text().splitlines()
        return [json.loads(x)["loss"] for x in lines]

    assert losses("held") == losses("plain") and len(losses("held")) == 3
    held = load_file(tmp_path / "held" / "stage1b" / "model.safetensors")
    plain = load_file(tmp_path / "plain" / "stage1b" / "model.safetensors")
    assert held.keys() == plain.keys() and all(torch.equal(held[k], plain[k]) for k in held)
    assert {v.dtype for v in held.values() if v.is_floating_point()} == {torch.float32}
