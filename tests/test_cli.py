import json
from pathlib import Path

import pytest

import pointalign
from pointalign.cli import main


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("model", "quickstart", "data", "train"))


def test_model_summary_table_and_json(capsys):
    assert main(["model", "summary", "--preset", "tiny", "--stage", "stage2"]) == 0
    out = capsys.readouterr().out
    assert "align_projector" in out and "total" in out
    assert main(["model", "summary", "--preset", "tiny", "--stage", "inference", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parts"]["align_projector"]["params"] == 0 and report["trainable"] == 0


def test_model_summary_of_a_stage_file_counts_its_trainable_changes(capsys):
    # cpu-small's stage1a.yaml also trains the projector, which stage 1a's default policy freezes
    assert main(["model", "summary", "--preset", "tiny", "--stage", "stage1a", "--json"]) == 0
    default = json.loads(capsys.readouterr().out)
    stage_file = Path(pointalign.__file__).parent / "configs" / "cpu-small" / "stage1a.yaml"
    assert main(["model", "summary", "--preset", "tiny", "--stage", str(stage_file), "--json"]) == 0
    changed = json.loads(capsys.readouterr().out)
    assert default["parts"]["projector"]["trainable"] == 0
    assert changed["parts"]["projector"]["trainable"] == changed["parts"]["projector"]["params"] > 0
    assert main(["model", "summary", "--preset", "tiny", "--stage", "nowhere/stage1a.yaml"]) == 2
    assert "no such config file" in capsys.readouterr().err


def test_bad_stage_and_override(capsys):
    assert main(["model", "summary", "--preset", "tiny", "--stage", "stage9"]) == 2
    assert "--stage 'stage9': unknown" in capsys.readouterr().err
    assert main(["model", "summary", "--set", "align.lyer=3"]) == 2
    assert "align.lyer: unknown key" in capsys.readouterr().err


def test_paper_preset_names_missing_weights(capsys, tmp_path):
    assert main(["model", "summary", "--preset", "paper"]) == 2
    err = capsys.readouterr().err
    assert "llm.source='phi-2'" in err and "qformer.init_from='bert-base'" in err
    assert "Traceback" not in err


def test_quickstart_tiny(capsys, tmp_path):
    out = tmp_path / "qs"
    assert main(["quickstart", "--preset", "tiny", "--steps", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "step 2/2" in text and "red sphere:" in text
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model.safetensors"]


def test_quickstart_bad_input_writes_nothing(capsys, tmp_path):
    out = tmp_path / "qs"
    assert main(["quickstart", "--preset", "paper", "--out", str(out)]) == 2
    assert "needs local weights" in capsys.readouterr().err
    assert not out.exists()
