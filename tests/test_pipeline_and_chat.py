import numpy as np
import pytest
import torch

from pointalign import PointAlignPipeline
from pointalign.chat import chat
from pointalign.checkpoint import save_checkpoint
from pointalign.cli import main
from pointalign.config import GenerationConfig
from pointalign.errors import DataError
from tests.conftest import clouds


@pytest.fixture
def ckpt(tiny_model, tiny_config, tmp_path):
    return save_checkpoint(tiny_model, tmp_path / "ckpt", tiny_config, what="full")


@pytest.fixture
def pipe(ckpt):
    return PointAlignPipeline.from_pretrained(ckpt, GenerationConfig.greedy(6))


def test_pipeline_accepts_arrays_tensors_and_files(pipe, tmp_path):
    assert pipe.model.align_projector is None
    xyz = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    a = pipe(xyz, "What is this?")
    assert isinstance(a, str)
    assert pipe(torch.from_numpy(xyz), "What is this?") == a  # same cloud, same greedy answer
    np.save(tmp_path / "c.npy", xyz)
    assert pipe(tmp_path / "c.npy", "What is this?") == a
    import trimesh

    trimesh.creation.box(extents=(1, 2, 1)).export(tmp_path / "box.stl")
    assert isinstance(pipe(str(tmp_path / "box.stl")), str)
    both = pipe([xyz, clouds(1, 256)[0].numpy()], ["What is this?", "Colour?"])
    assert isinstance(both, list) and len(both) == 2 and both[0] == a  # batch answers equal single ones


def test_pipeline_history_and_errors(pipe):
    xyz = clouds(1, 256)[0].numpy()
    assert isinstance(pipe(xyz, "And its colour?", history=[("What is this?", "A sphere.")]), str)
    with pytest.raises(DataError, match="NaN"):
        pipe(np.full((300, 3), np.nan))
    with pytest.raises(DataError, match="the model needs at least 16"):
        pipe(np.random.rand(10, 3))
    with pytest.raises(ValueError, match="2 inputs but 3 questions"):
        pipe([xyz, xyz], ["a", "b", "c"])


def test_chat_multi_turn(ckpt, tmp_path):
    np.save(tmp_path / "c.npy", clouds(1, 256)[0].numpy())
    script = iter(["What is this?", "reset", "What colour is it?", "And the shape?", "exit"])
    printed = []
    history = chat(
        ckpt,
        tmp_path / "c.npy",
        generation=GenerationConfig.greedy(4),
        input_fn=lambda _: next(script),
        print_fn=printed.append,
    )
    assert [q for q, _ in history] == ["What colour is it?", "And the shape?"]
    assert sum(line.startswith("model> ") for line in printed) == 3
    ended = chat(
        ckpt,
        tmp_path / "c.npy",
        generation=GenerationConfig.greedy(4),
        input_fn=lambda _: (_ for _ in ()).throw(EOFError),
        print_fn=lambda *_: None,
    )
    assert ended == []


def test_chat_cli_ask_and_bad_file(ckpt, tmp_path, capsys):
    np.save(tmp_path / "c.npy", clouds(1, 256)[0].numpy())
    assert (
        main(
            [
                "chat",
                "--checkpoint",
                str(ckpt),
                "--points",
                str(tmp_path / "c.npy"),
                "--ask",
                "What is this?",
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() != ""
    np.save(tmp_path / "bad.npy", np.zeros((4, 7)))
    assert main(["chat", "--checkpoint", str(ckpt), "--points", str(tmp_path / "bad.npy"), "--ask", "x"]) == 2
    err = capsys.readouterr().err
    assert "expected shape" in err and "Traceback" not in err


def test_pipeline_runs_in_its_precision_and_puts_the_model_back(ckpt, monkeypatch):
    seen = []
    pipe = PointAlignPipeline.from_pretrained(ckpt, GenerationConfig.greedy(4), precision="bf16")
    assert pipe.choice.chosen == "bf16"
    generate = pipe.model.generate
    llm = pipe.model.llm.get_base_model() if hasattr(pipe.model.llm, "get_base_model") else pipe.model.llm

    def recording(*args, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), llm.config._attn_implementation))
        return generate(*args, **kwargs)

    monkeypatch.setattr(pipe.model, "generate", recording)
    marks = [p.requires_grad for p in pipe.model.parameters()]
    xyz = clouds(1, 256)[0].numpy()
    assert isinstance(pipe(xyz), str)
    assert seen == [(True, "eager")] and llm.config._attn_implementation == "sdpa"
    assert [p.requires_grad for p in pipe.model.parameters()] == marks  # inference_autocast's marks undone
    fp32 = PointAlignPipeline.from_pretrained(ckpt, GenerationConfig.greedy(4))
    assert fp32.choice.chosen == "fp32"


def test_chat_cli_precision(ckpt, tmp_path, capsys):
    np.save(tmp_path / "c.npy", clouds(1, 256)[0].numpy())
    args = ["chat", "--checkpoint", str(ckpt), "--points", str(tmp_path / "c.npy"), "--ask", "What is this?"]
    assert main([*args, "--max-new-tokens", "4", "--precision", "auto"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() != "" and "chat: precision auto -> " in err and "precision" not in out
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--precision", "fp16"])
    assert exit_info.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err
