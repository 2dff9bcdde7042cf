"""``pointalign import minigpt3d`` against the reference fixture (tests/fixtures/minigpt3d_tiny, see its README.md).

The imported MiniGPT-3D (stage 3) and PointAlign (pretrain + finetune) models must reproduce the reference code's
tensors: Point-BERT tokens, MLP and Q-Former outputs, point tokens, and the LLM's inputs, logits and hidden states at
the attended positions of its evaluation and training sequences, with the reference's token ids; and its losses.
"""

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pointalign.checkpoint import WEIGHTS, load_model, read_checkpoint_meta
from pointalign.cli import main
from pointalign.config import GenerationConfig
from pointalign.data.prompts import IGNORE_INDEX, PromptBatch
from pointalign.importer import import_minigpt3d
from pointalign.models.pointalign import position_ids

FIXTURE = Path(__file__).parent / "fixtures" / "minigpt3d_tiny"
# What the fixture's weights do not fix, where the paper preset's values do not fit its tiny sizes
TINY_SIZES = [
    "encoder.num_heads=4",
    "qformer.num_heads=4",
    "encoder.num_groups=16",
    "encoder.group_size=8",
    "encoder.num_points=128",
    "align.layer=1",  # the fixture's PointAlign aligns hidden_states[1]
    "llm.dtype=float32",
]
RUNS = {"mg3": ["MiniGPT_3D_stage_3.pth"], "pa": ["MiniGPT_3D_stage_3.pth", "finetune.pth"]}
TOLERANCE = 1e-4  # max |ours - reference| / max |reference| (over the attended positions for the LLM)
BOS = 415  # <|endoftext|>: bos = eos = pad of the fixture's tokenizer
QUERIES = 8


@pytest.fixture(scope="module")
def reference():
    return load_file(FIXTURE / "reference_outputs.safetensors")


@pytest.fixture(scope="module")
def token_ids():
    return json.loads((FIXTURE / "reference_outputs.json").read_text())["token_ids"]


def phi_folder(layout, split_folder):
    return FIXTURE / "Phi_2" if layout == "fused" else split_folder


@pytest.fixture(scope="module")
def imported(tmp_path_factory, split_folder):
    """(layout, run) -> the folder of that run imported from that Phi-2 layout (each imported once)."""
    done: dict[tuple[str, str], Path] = {}

    def get(layout: str, run: str) -> Path:
        if (layout, run) not in done:
            out = tmp_path_factory.mktemp("imported") / f"{run}-{layout}"
            import_minigpt3d(
                phi_folder(layout, split_folder),
                FIXTURE / "point_model.pth",
                FIXTURE / "blip2_pretrained_flant5xxl.pth",
                [FIXTURE / name for name in RUNS[run]],
                out,
                TINY_SIZES,
            )
            done[(layout, run)] = out
        return done[(layout, run)]

    return get


def relative_error(ours, ref, mask=None):
    if mask is not None:
        ours, ref = ours[mask], ref[mask]
    return float((ours - ref).abs().max() / ref.abs().max())


def reference_batch(run, part, token_ids, reference):
    """The reference's sequence of ``run.part`` as a PromptBatch, from its token ids: evaluation ``[seg0, points,
    seg1]`` left-padded; training ``[<|endoftext|>, seg0, points, seg1, answer + ###]`` right-padded (to the
    reference's width: it pads prompts and answers separately, so its batch can end in a column of padding)."""
    labels_ref = reference[f"{run}.{part}.labels"] if part == "train" else None
    rows = []
    segments = token_ids[f"{run}.eval_segments" if part == "eval" else f"{run}.train_prompt_segments"]
    for b, (seg0, seg1) in enumerate(segments):
        prompt = ([] if part == "eval" else [BOS]) + seg0 + [BOS] * QUERIES + seg1
        answer = [] if labels_ref is None else labels_ref[b][labels_ref[b] != IGNORE_INDEX].tolist()
        rows.append((prompt + answer, [IGNORE_INDEX] * len(prompt) + answer, len(prompt) - len(seg1) - QUERIES))
    length = reference[f"{run}.{part}.attention_mask"].shape[1]
    ids = torch.full((len(rows), length), BOS)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE_INDEX)
    points = torch.empty(len(rows), QUERIES, dtype=torch.long)
    starts = torch.empty(len(rows), dtype=torch.long)
    for b, (row, lab, point_start) in enumerate(rows):
        off = length - len(row) if part == "eval" else 0
        ids[b, off : off + len(row)] = torch.tensor(row)
        mask[b, off : off + len(row)] = 1
        labels[b, off : off + len(row)] = torch.tensor(lab)
        points[b] = off + point_start + torch.arange(QUERIES)
        starts[b] = off + next(i for i, x in enumerate(lab + [0]) if x != IGNORE_INDEX)
    return PromptBatch(ids, mask, labels, points, starts)


def parity_errors(model, run, token_ids, reference):
    """Relative error of every compared tensor of ``run`` (the LLM's at attended positions only)."""
    pc = reference["input.pc"]
    errors = {}
    with torch.no_grad():
        tokens = model.point_encoder(pc)  # (B, G+1, C)
        mlp = model.bridge(tokens)
        qformer = model.qformer(mlp)
        ours = {
            "pointbert_tokens": tokens,
            "mlp_out": mlp,
            "qformer_out": qformer,
            "llama_proj_out": model.projector.fc1(qformer),
            "point_embeds": model.projector(qformer),
        }
        errors |= {name: relative_error(t, reference[f"{run}.{name}"]) for name, t in ours.items()}
        for part in ("eval", "train"):
            batch = reference_batch(run, part, token_ids, reference)
            mask = reference[f"{run}.{part}.attention_mask"].long()
            assert torch.equal(batch.attention_mask, mask), f"{run}.{part}: our layout differs from the reference's"
            if part == "train":
                assert torch.equal(batch.labels, reference[f"{run}.train.labels"])
            embeds = model.embed(batch, ours["point_embeds"])  # (B, L, D)
            out = model.llm(
                inputs_embeds=embeds,
                attention_mask=batch.attention_mask,
                position_ids=position_ids(batch.attention_mask),
                output_hidden_states=True,
            )
            llm = {
                "inputs_embeds": embeds,
                "logits": out.logits,
                "hidden_states_1": out.hidden_states[1],
                "hidden_states_last": out.hidden_states[-1],
            }
            attended = mask.bool()
            errors |= {
                f"{part}.{name}": relative_error(t, reference[f"{run}.{part}.{name}"], attended)
                for name, t in llm.items()
            }
    return errors


@pytest.mark.parametrize("run", sorted(RUNS))
@pytest.mark.parametrize("layout", ["fused", "split"])
def test_imported_model_reproduces_the_reference(imported, reference, token_ids, layout, run):
    model, _ = load_model(imported(layout, run), for_inference=True)  # LoRA merged into the base weights
    errors = parity_errors(model, run, token_ids, reference)
    assert len(errors) == 13
    bad = {k: f"{v:.1e}" for k, v in errors.items() if not v < TOLERANCE}
    assert not bad, f"{run} ({layout} Phi-2): relative errors over {TOLERANCE}: {bad}"


def test_imported_stage_4_mixes_query_experts_as_the_reference(tmp_path, reference):
    out = tmp_path / "mg4"
    files = [FIXTURE / "MiniGPT_3D_stage_3.pth", FIXTURE / "MiniGPT_3D_stage_4.pth"]
    pointbert, blip2 = FIXTURE / "point_model.pth", FIXTURE / "blip2_pretrained_flant5xxl.pth"
    result = import_minigpt3d(FIXTURE / "Phi_2", pointbert, blip2, files, out, TINY_SIZES)
    assert "query experts" in "".join(result.report)
    model, cfg = load_model(out)
    assert (cfg.experts.num_experts, cfg.experts.router, cfg.experts.top_k) == (8, "sparse", 2)
    pc = reference["input.pc"]
    with torch.no_grad():
        tokens = model.point_encoder(pc)  # (B, T, C)
        probs = model.query_experts.route(tokens)  # (B, E)
        ids, _ = model.query_experts.selection(probs)
        mixed = model.query_experts(tokens, model.bridge(tokens), model.qformer)  # (B, Q, D)
        embeds = model.encode_points(pc).point_tokens
    assert relative_error(probs, reference["mg4.router_weights"]) < TOLERANCE
    assert ids.tolist() == [[3, 6], [0, 4]]  # the reference's top-2 experts, in increasing id
    assert relative_error(mixed, reference["mg4.qformer_out_mixed"]) < TOLERANCE
    assert relative_error(embeds, reference["mg4.point_embeds"]) < TOLERANCE


@pytest.mark.parametrize("run", sorted(RUNS))
def test_training_forward_loss_matches_the_reference(imported, reference, token_ids, run):
    model, cfg = load_model(imported("fused", run), for_inference=False)  # LoRA as peft adapters
    batch = reference_batch(run, "train", token_ids, reference)
    with torch.no_grad():
        out = model(batch, points=reference["input.pc"])
    assert relative_error(out.ntp_loss, reference[f"{run}.train.ntp_loss"]) < TOLERANCE
    if run == "mg3":
        assert out.align_loss is None and not cfg.align.enabled
        assert relative_error(out.loss, reference["mg3.train.reference_forward_loss"]) < TOLERANCE
        return
    # PointAlign: the alignment loss on the true point-token span (ours) and on the reference's shifted slice
    assert relative_error(out.align_loss, reference["pa.align.loss_true_span"]) < TOLERANCE
    model.align_cfg = dataclasses.replace(model.align_cfg, span="legacy")
    with torch.no_grad():
        legacy = model(batch, points=reference["input.pc"])
    assert relative_error(legacy.align_loss, reference["pa.align.loss_reference_slice"]) < TOLERANCE
    assert relative_error(legacy.loss, reference["pa.train.reference_forward_loss"]) < TOLERANCE


def test_the_folder_points_at_phi2_and_holds_what_the_files_supplied(imported):
    folder = imported("fused", "pa")
    meta = read_checkpoint_meta(folder)
    assert meta["model"]["llm"]["source"] == str((FIXTURE / "Phi_2").resolve())
    assert meta["model"]["llm"]["architecture"] == "tinygptv-phi"
    sizes = {k: meta["model"]["qformer"][k] for k in ("num_queries", "num_layers", "encoder_width", "lora_r")}
    assert sizes == {"num_queries": 8, "num_layers": 2, "encoder_width": 96, "lora_r": 4}
    assert meta["model"]["qformer"]["lora_alpha"] == 8 and meta["model"]["llm"]["lora_alpha"] == 16
    assert meta["model"]["bridge"]["hidden"] == [80] and meta["model"]["align"]["projector_hidden"] == 64
    weights = load_file(folder / WEIGHTS)
    llm = [k for k in weights if k.startswith("llm.")]
    # the norms and LoRA the checkpoints supplied, never Phi-2's base weights (nor the q/k norm biases: zeros)
    assert llm and all(".lora_" in k or k.endswith("layernorm.weight") for k in llm)
    finetune = torch.load(FIXTURE / "finetune.pth", weights_only=True)["model"]
    key = "model.final_layernorm.weight"
    assert torch.equal(weights[f"llm.base_model.model.{key}"], finetune[f"llama_model.base_model.model.{key}"])
    model, _ = load_model(folder, for_inference=False)
    biases = [p for n, p in model.llm.named_parameters() if "_layernorm.bias" in n and "self_attn" in n]
    assert len(biases) == 4 and all(torch.equal(b, torch.zeros_like(b)) for b in biases)


def test_import_cli_prints_which_file_supplied_each_part(tmp_path, capsys):
    out = tmp_path / "mg3"
    assert main(cli_args(["MiniGPT_3D_stage_3.pth"], out)) == 0
    lines = capsys.readouterr().out.splitlines()
    by_part = {line[:22].strip(): line[22:] for line in lines}
    assert by_part["Q-Former"] == "blip2_pretrained_flant5xxl.pth (39 tensors), MiniGPT_3D_stage_3.pth (5 tensors)"
    assert by_part["point->Q-Former MLP"] == "MiniGPT_3D_stage_3.pth (4 tensors)"
    assert by_part["LLM LoRA"] == "MiniGPT_3D_stage_3.pth (8 tensors)"
    assert "not copied" in by_part["LLM base weights"] and "zeros" in by_part["LLM q/k norm biases"]
    assert lines[-1] == f"written: {out}"
    assert load_model(out)[1].qformer.num_queries == QUERIES


def cli_args(checkpoints, out, point_encoder="point_model.pth", qformer="blip2_pretrained_flant5xxl.pth", sets=()):
    args = ["import", "minigpt3d", "--llm", str(FIXTURE / "Phi_2"), "--out", str(out)]
    args += ["--point-encoder", str(FIXTURE / point_encoder), "--qformer", str(FIXTURE / qformer)]
    for name in checkpoints:
        args += ["--checkpoint", str(name if Path(name).is_absolute() else FIXTURE / name)]
    for s in [*TINY_SIZES, *sets]:
        args += ["--set", s]
    return args


class ArbitraryObject:
    """Anything but tensors and plain containers: torch.load(weights_only=True) must refuse to build it."""


def bad_files(tmp_path):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes((FIXTURE / "MiniGPT_3D_stage_3.pth").read_bytes()[:20000])
    code = tmp_path / "code.pth"
    torch.save({"model": {"query_tokens": torch.zeros(1)}, "hook": ArbitraryObject()}, code)
    llava = tmp_path / "llava.pth"
    torch.save({"model": {"model.mm_projector.0.weight": torch.zeros(2, 2)}}, llava)
    return truncated, code, llava


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "checkpoint not found"),
        ("truncated", "truncated"),
        ("pickled code", "holds more than tensors"),
        (
            "another model's checkpoint",
            r"not a MiniGPT-3D / PointAlign checkpoint; keys of another model: \['model\.mm_projector",
        ),
        ("Point-BERT as a checkpoint", r"point_model\.pth: not a MiniGPT-3D / TinyGPT-V / PointAlign checkpoint"),
        ("BLIP-2 as the point encoder", r"not a Point-BERT checkpoint; keys of another model: \['Qformer\.bert"),
        ("finetune as the Q-Former", r"finetune\.pth: not BLIP-2's Q-Former checkpoint; keys of another model"),
        ("no stage-3 file", r"no file supplies the point->Q-Former MLP \(point_2_Qformer_proj\.0\.weight\)"),
        (
            "a size that does not fit",
            r"do not fit the model.*MiniGPT_3D_stage_3\.pth: llama_proj\.weight \(128, 64\) vs \(32, 64\)",
        ),
        ("stage 4 alone", r"no file supplies the point->Q-Former MLP"),
        (
            "TinyGPT-V without --fresh bridge",
            r"no file supplies the point->Q-Former MLP \(point_2_Qformer_proj\.0\.weight\)",
        ),
        (
            "--fresh bridge with a stage-3 file",
            r"--fresh bridge: MiniGPT_3D_stage_3\.pth supplies the point->Q-Former MLP "
            r"\(point_2_Qformer_proj\.0\.\w+\); drop --fresh bridge to use it",
        ),
        ("out exists", "exists; an import writes a new folder"),
    ],
)
def test_bad_files_are_one_clear_line_and_nothing_is_written(tmp_path, capsys, case, message):
    truncated, code, llava = bad_files(tmp_path)
    out = tmp_path / "out"
    args = {
        "missing": cli_args([tmp_path / "nowhere.pth"], out),
        "truncated": cli_args([truncated], out),
        "pickled code": cli_args([code], out),
        "another model's checkpoint": cli_args(["MiniGPT_3D_stage_3.pth", llava], out),
        "Point-BERT as a checkpoint": cli_args(["point_model.pth"], out),
        "BLIP-2 as the point encoder": cli_args(
            ["MiniGPT_3D_stage_3.pth"], out, point_encoder=FIXTURE / "blip2_pretrained_flant5xxl.pth"
        ),
        "finetune as the Q-Former": cli_args(["MiniGPT_3D_stage_3.pth"], out, qformer="finetune.pth"),
        "no stage-3 file": cli_args(["finetune.pth"], out),
        "a size that does not fit": cli_args(["MiniGPT_3D_stage_3.pth"], out, sets=["projector.hidden=32"]),
        "stage 4 alone": cli_args(["MiniGPT_3D_stage_4.pth"], out),
        "TinyGPT-V without --fresh bridge": cli_args([TINYGPTV], out),
        "--fresh bridge with a stage-3 file": [*cli_args(["MiniGPT_3D_stage_3.pth"], out), "--fresh", "bridge"],
        "out exists": cli_args(["MiniGPT_3D_stage_3.pth"], out),
    }[case]
    if case == "out exists":
        out.mkdir()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pointalign: error: ") and "Traceback" not in err
    assert __import__("re").search(message, err), err
    assert out.exists() == (case == "out exists") and (case != "out exists" or not any(out.iterdir()))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["truncated.pth", "code.pth", "llava.pth", *(["out"] if case == "out exists" else [])]
    )


TINYGPTV = "TinyGPT-V_for_Stage3.pth"


def test_the_stage_1_start_imports_tinygptv_with_a_fresh_bridge_and_trains(tiny_data, tmp_path, capsys):
    """MiniGPT-3D's stage 1 starts from Phi-2, Point-BERT, BLIP-2 and TinyGPT-V's checkpoint, with a random MLP."""
    first, again = tmp_path / "start", tmp_path / "again"
    assert main([*cli_args([TINYGPTV], first), "--fresh", "bridge"]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_part = {line[:22].strip(): line[22:] for line in lines}
    assert by_part["point->Q-Former MLP"] == "no file (--fresh bridge): random init, torch seed 0"
    assert by_part["projector"] == f"{TINYGPTV} (4 tensors)" and by_part["LLM LoRA"] == f"{TINYGPTV} (8 tensors)"
    assert by_part["query tokens"] == "blip2_pretrained_flant5xxl.pth (1 tensor)"
    assert "Q-Former LoRA" in by_part and "fresh adapters" in by_part["Q-Former LoRA"]
    torch.manual_seed(123)  # the caller's RNG state does not change the fresh init
    assert main([*cli_args([TINYGPTV], again), "--fresh", "bridge"]) == 0
    capsys.readouterr()
    a, b = load_file(first / WEIGHTS), load_file(again / WEIGHTS)
    assert any(k.startswith("bridge.") for k in a) and all(torch.equal(a[k], b[k]) for k in a)
    model, cfg = load_model(first)
    tinygptv = torch.load(FIXTURE / TINYGPTV, weights_only=True)["model"]
    blip2 = torch.load(FIXTURE / "blip2_pretrained_flant5xxl.pth", weights_only=True)["model"]
    assert torch.equal(model.projector.fc1.weight, tinygptv["llama_proj.weight"].float())
    assert torch.equal(model.qformer.query_tokens, blip2["query_tokens"].float())
    assert cfg.prompt.style == "minigpt3d" and not cfg.align.enabled
    # the paper's stage 1a (the MLP only) runs from it, here with the tiny preset's data and schedule
    stage = Path(__file__).parents[1] / "src" / "pointalign" / "configs" / "tiny" / "stage1a.yaml"
    args = ["train", str(stage), f"init_from={first}", f"data.root={tiny_data}", "optim.steps=2", "checkpoint_every=2"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    trained = load_file(tmp_path / "run" / "stage1a" / WEIGHTS)
    assert any(k.startswith("bridge.") and not torch.equal(v, a[k]) for k, v in trained.items())


def test_a_bf16_import_keeps_the_files_lora_and_norms_in_fp32(tmp_path, capsys):
    out = tmp_path / "bf16"
    assert main(cli_args(["MiniGPT_3D_stage_3.pth"], out, sets=["llm.dtype=bfloat16"])) == 0
    capsys.readouterr()
    saved = load_file(out / WEIGHTS)
    stage3 = torch.load(FIXTURE / "MiniGPT_3D_stage_3.pth", weights_only=True)["model"]
    norm = "llm.base_model.model.model.layers.0.post_layernorm.weight"
    assert saved[norm].dtype == torch.float32
    assert torch.equal(saved[norm], stage3["llama_model." + norm.removeprefix("llm.")].float())
    lora = [k for k in saved if k.startswith("llm.") and ".lora_" in k]
    assert lora and all(saved[k].dtype == torch.float32 for k in lora)
    assert load_model(out)[1].llm.dtype == "bfloat16"


def test_fixture_files_are_the_reference_files():
    sums = json.loads((FIXTURE / "reference_outputs.json").read_text())["file_sha256"]
    files = [p for p in FIXTURE.rglob("*") if p.is_file() and p.name not in ("README.md", "reference_outputs.json")]
    assert len(files) == 16
    for path in files:
        name = str(path.relative_to(FIXTURE))
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sums[name], name


# -- the reference's prompts (prompt.style minigpt3d / pointalign) --------------------------------------------------

STYLES = {"mg3": "minigpt3d", "pa": "pointalign"}  # what an import picks: PointAlign's files hold its projector
END = 324  # "###" in the fixture's tokenizer


@pytest.fixture(scope="module")
def reference_meta():
    return json.loads((FIXTURE / "reference_outputs.json").read_text())


def eval_questions(reference_meta):
    asked = reference_meta["prompts"]["eval_texts_used"]
    return [q for q in reference_meta["prompts"]["eval_questions_objaverse"] if any(q in text for text in asked)]


@pytest.mark.parametrize("run", sorted(RUNS))
def test_reference_prompt_style_has_the_reference_token_ids(imported, reference, token_ids, reference_meta, run):
    model, cfg = load_model(imported("fused", run))
    assert cfg.prompt.style == STYLES[run]
    builder = model.builder
    questions = eval_questions(reference_meta)
    for question, (seg0, seg1), text in zip(
        questions, token_ids[f"{run}.eval_segments"], reference_meta["prompts"]["eval_texts_used"], strict=True
    ):
        item = builder.encode([], question)  # a generation prompt: the reference's evaluation string
        assert item.input_ids == seg0 + [BOS] * QUERIES + seg1 and item.point_start == len(seg0)
        pieces = builder._reference_pieces([], question)[1]
        assert "".join("<PointCloudHere>" if t is None else t for t, _ in pieces) == text
    samples = reference_meta["train_samples"][run]
    dialogues = [
        [(instruction.removeprefix("<PC><PointCloudHere></PC> ").removesuffix(" "), answer)]
        for instruction, answer in zip(samples["instruction_input"], samples["answer"], strict=True)
    ]
    batch = builder.collate([builder.encode(d) for d in dialogues], "right")
    expected = reference_batch(run, "train", token_ids, reference)
    width = batch.input_ids.shape[1]  # the reference's batch ends in one more column of padding
    for name in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(getattr(batch, name), getattr(expected, name)[:, :width]), name
    assert torch.equal(batch.point_positions, expected.point_positions)
    answers = [builder.tokenizer.decode(row[row != IGNORE_INDEX]) for row in batch.labels]
    assert (batch.input_ids[:, 0] == BOS).all() and answers == [a + "###" for _, a in (d[0] for d in dialogues)]
    with torch.no_grad():  # the training loss through our own prompt builder
        out = model(batch, points=reference["input.pc"])
    assert relative_error(out.ntp_loss, reference[f"{run}.train.ntp_loss"]) < TOLERANCE


@pytest.mark.parametrize("run", sorted(RUNS))
def test_greedy_generation_gives_the_reference_tokens(imported, reference, reference_meta, run):
    model, _ = load_model(imported("fused", run))
    questions = eval_questions(reference_meta)
    expected = reference[f"{run}.eval.greedy_new_tokens"][:, 1:]  # transformers 4.36 put a BOS column first
    greedy = GenerationConfig.greedy(expected.shape[1])
    assert torch.equal(model.generate_ids(reference["input.pc"], questions, config=greedy), expected)
    assert model.generate(reference["input.pc"], questions, config=greedy) == reference_meta["generate_text"][run]


def test_generation_stops_at_the_end_symbol_and_is_cut_there(imported, reference):
    model, cfg = load_model(imported("fused", "mg3"))
    with torch.no_grad():  # make "###" the likeliest token everywhere
        model.llm.lm_head.bias[END] += 100.0
    points, questions, greedy = reference["input.pc"], ["What is this?"] * 2, GenerationConfig.greedy(4)
    assert model.generate_ids(points, questions, config=greedy).tolist() == [[END], [END]]
    assert model.generate(points, questions, config=greedy) == ["", ""]
    model.builder.cfg = dataclasses.replace(cfg.prompt, style="chat")  # the chat style knows no end symbol
    assert model.generate_ids(points, questions, config=greedy).tolist() == [[END] * 4] * 2


# -- the other commands on an imported model ----------------------------------------------------------------------


def test_eval_chat_and_probe_run_on_an_imported_model(imported, tiny_data, tmp_path, capsys):
    ckpt = str(imported("fused", "pa"))
    out = tmp_path / "eval"
    eval_args = ["eval", "--checkpoint", ckpt, "--task", "cls-closed", "--prompt-index", "0", "--greedy"]
    eval_args += ["--data-root", str(tiny_data), "--file-points", "256", "--limit", "2", "--out", str(out)]
    assert main(eval_args) == 0
    results = json.loads(next((out / "evaluation").glob("*.json")).read_text())["results"]
    assert len(results) == 2 and all(isinstance(r["model_output"], str) for r in results)
    cloud = tmp_path / "c.npy"
    np.save(cloud, np.random.default_rng(0).random((256, 6), dtype=np.float32))
    assert (
        main(["chat", "--checkpoint", ckpt, "--points", str(cloud), "--ask", "What is this?", "--max-new-tokens", "3"])
        == 0
    )
    probe_args = ["probe", "--checkpoint", ckpt, "--data-root", str(tiny_data), "--out", str(tmp_path / "probe")]
    probe_args += ["--train-per-class", "1", "--test-limit", "4", "--file-points", "256", "--k", "1"]
    assert main(probe_args) == 0
    assert (tmp_path / "probe" / "probe.csv").is_file()
    capsys.readouterr()


def test_train_starts_from_an_imported_model(imported, tiny_data, tmp_path, capsys):
    stage = Path(__file__).parents[1] / "src" / "pointalign" / "configs" / "tiny" / "stage2.yaml"
    ckpt = imported("fused", "mg3")
    args = ["train", str(stage), f"init_from={ckpt}", f"data.root={tiny_data}", "optim.steps=2", "checkpoint_every=2"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    trained = tmp_path / "run" / "stage2"
    assert read_checkpoint_meta(trained)["checkpoint"]["parent"] == str(ckpt.resolve())
    model, cfg = load_model(trained)
    assert cfg.llm.architecture == "tinygptv-phi" and cfg.align.enabled  # the stage turns the alignment loss on
    assert model.qformer.cfg.num_queries == QUERIES
