import json
import time

import pytest

from pointalign.cli import main


@pytest.mark.slow
def test_reproduce_tiny_end_to_end_and_rerun(tmp_path, capsys):
    out = tmp_path / "rp"
    t = time.perf_counter()
    assert main(["reproduce", "--preset", "tiny", "--out", str(out)]) == 0
    first = time.perf_counter() - t
    report = json.loads((out / "report.json").read_text())
    metrics = {r["metric"] for r in report["rows"]}
    assert {"modelnet40_p0", "objaverse_p1", "caption_sbert", "probe_k1", "probe_k10"} <= metrics
    assert all(r["legacy_span"] is not None for r in report["rows"])
    md = (out / "report.md").read_text()
    assert "| metric | baseline | PointAlign | delta |" in md.replace(" | PointAlign, legacy span (seed 0) |", " |")
    for name in ("stage0", "stage1c", "stage2-seed0", "stage2-baseline-seed0", "stage2-legacy-seed0"):
        assert (out / name / "model.safetensors").is_file()
    assert (out / "probe" / "probe.png").is_file()
    stamp = (out / "stage2-seed0" / "model.safetensors").stat().st_mtime
    t = time.perf_counter()
    assert main(["reproduce", "--preset", "tiny", "--out", str(out)]) == 0  # reuses every finished step
    again = time.perf_counter() - t
    assert (out / "stage2-seed0" / "model.safetensors").stat().st_mtime == stamp
    assert again < first
    capsys.readouterr()


def test_reproduce_and_sweep_argument_errors(tmp_path, capsys):
    assert main(["reproduce", "--preset", "tiny", "--out", str(tmp_path / "x"), "--seeds", "0"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["sweep", "--preset", "tiny", "--out", str(tmp_path / "y"), "--data-fraction", "0.5,abc"]) == 2
    assert "expected numbers" in capsys.readouterr().err
    assert main(["sweep", "--preset", "tiny", "--out", str(tmp_path / "y"), "--data-fraction", "1.5"]) == 2
    assert "fractions in (0, 1]" in capsys.readouterr().err


@pytest.mark.slow
def test_sweep_tiny(tmp_path, capsys):
    out = tmp_path / "sw"
    assert main(["sweep", "--preset", "tiny", "--out", str(out), "--data-fraction", "0.5,1.0"]) == 0
    rows = json.loads((out / "sweep.json").read_text())
    assert sorted((r["fraction"], r["variant"]) for r in rows) == [
        (0.5, "baseline"),
        (0.5, "pointalign"),
        (1.0, "baseline"),
        (1.0, "pointalign"),
    ]
    assert all({"sbert", "bleu1", "rougeL", "meteor"} <= set(r) for r in rows)
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    state = json.loads((out / "stage2-frac0.5" / "trainer_state.json").read_text())
    assert state["train_config"]["data"]["fraction"] == 0.5
    capsys.readouterr()
