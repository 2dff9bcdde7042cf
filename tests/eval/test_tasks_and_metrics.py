import json

import pytest

from pointalign.checkpoint import save_checkpoint
from pointalign.cli import main
from pointalign.config import GenerationConfig
from pointalign.errors import ConfigError
from pointalign.eval.tasks import evaluate, object_ids, result_name
from pointalign.training.stages import STAGES, apply_trainable


@pytest.fixture
def tiny_ckpt(tiny_model, tiny_config, tmp_path):
    apply_trainable(tiny_model, STAGES["stage2"])
    return save_checkpoint(tiny_model, tmp_path / "ckpt", tiny_config, what="full")


def test_result_names_are_pointllms():
    assert result_name("cls-closed", 1) == "ModelNet_classification_prompt1.json"
    assert result_name("cls-open", 0) == "PointLLM_brief_description_val_200_GT_Objaverse_classification_prompt0.json"
    assert result_name("caption", 2) == "PointLLM_brief_description_val_200_GT_Objaverse_captioning_prompt2.json"


def test_closed_set_results_and_resume(tiny_model, tiny_data, tmp_path, monkeypatch):
    tiny_model.eval()
    greedy = GenerationConfig.greedy(4)
    calls = []
    original = tiny_model.generate

    def generate(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == 2 and not hasattr(generate, "interrupted"):
            generate.interrupted = True
            raise KeyboardInterrupt  # the run is stopped during its second batch
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_model, "generate", generate)
    with pytest.raises(KeyboardInterrupt):
        evaluate(tiny_model, "cls-closed", 0, tiny_data, tmp_path, greedy, batch_size=2, file_points=256, limit=5)
    path = tmp_path / "evaluation" / result_name("cls-closed", 0)
    assert len(json.loads(path.read_text())["results"]) == 2  # the finished batch was kept
    calls.clear()
    evaluate(tiny_model, "cls-closed", 0, tiny_data, tmp_path, greedy, batch_size=2, file_points=256, limit=5)
    assert calls == [2, 1]  # only the three unfinished objects were generated
    data = json.loads(path.read_text())
    assert data["prompt"] == "What is this?"
    ids = [r["object_id"] for r in data["results"]]
    assert ids == [0, 8, 16, 24, 32]  # evenly spaced over the 40 test objects
    assert object_ids("cls-closed", tiny_data, 256, limit=5) == ["0", "8", "16", "24", "32"]
    assert len(object_ids("cls-closed", tiny_data, 256)) == 40
    assert len({r["label_name"] for r in data["results"]}) == 5
    row = data["results"][0]
    assert isinstance(row["ground_truth"], int) and row["label_name"]


def test_open_and_caption_tasks(tiny_model, tiny_data, tmp_path):
    tiny_model.eval()
    for task, prompt in (("cls-open", 1), ("caption", 2)):
        path = evaluate(
            tiny_model, task, prompt, tiny_data, tmp_path, GenerationConfig.greedy(3), file_points=256, limit=2
        )
        rows = json.loads(path.read_text())["results"]
        assert len(rows) == 2 and isinstance(rows[0]["ground_truth"], str) and len(rows[0]["object_id"]) == 32
    with pytest.raises(ConfigError, match="uses prompts"):
        evaluate(tiny_model, "caption", 0, tiny_data, tmp_path)


def test_eval_judge_metrics_cli(tiny_ckpt, tiny_data, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                "eval",
                "--checkpoint",
                str(tiny_ckpt),
                "--task",
                "caption",
                "--prompt-index",
                "2",
                "--greedy",
                "--data-root",
                str(tiny_data),
                "--file-points",
                "256",
                "--limit",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = out / "evaluation" / result_name("caption", 2)
    assert len(json.loads(result.read_text())["results"]) == 3
    assert main(["judge", str(result)]) == 0
    assert "average_score" in capsys.readouterr().out
    assert main(["metrics", str(result), "--sbert", "minilm"]) == 0
    scores = json.loads((out / "evaluation" / f"{result.stem}_evaluated_traditional.json").read_text())
    assert {"bleu1", "rougeL", "meteor", "sbert"} <= set(scores) and scores["sbert_model"] == "all-MiniLM-L6-v2"
    assert main(["metrics", str(result), "--sbert", "minilm", "--simcse", str(tmp_path / "nope")]) == 2
    assert "SimCSE model folder" in capsys.readouterr().err


def test_eval_cli_precision_auto_logs_its_choice_and_runs_under_it(tiny_ckpt, tiny_data, tmp_path, capsys, monkeypatch):
    from pointalign.training import precision

    monkeypatch.setattr(precision, "_MEASURED", {})
    monkeypatch.setattr(precision, "time_probe", lambda device: (20.0, 10.0))  # bf16 twice as fast here
    seen = []
    real = precision.inference_autocast
    monkeypatch.setattr(
        precision,
        "inference_autocast",
        lambda chosen, device, model: seen.append(chosen) or real(chosen, device, model),
    )
    args = ["eval", "--checkpoint", str(tiny_ckpt), "--task", "cls-closed", "--prompt-index", "0", "--greedy"]
    args += ["--data-root", str(tiny_data), "--file-points", "256", "--limit", "2", "--out", str(tmp_path)]
    assert main([*args, "--precision", "auto"]) == 0
    assert "eval: precision auto -> bf16: bf16 is 2.00x faster than fp32" in capsys.readouterr().out
    assert seen == ["bf16"]
    assert len(json.loads((tmp_path / "evaluation" / result_name("cls-closed", 0)).read_text())["results"]) == 2
    with pytest.raises(SystemExit):
        main([*args, "--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
