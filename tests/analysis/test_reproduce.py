import json

import pytest

from pointalign.analysis.probe import ProbeResult, ProbeSettings
from pointalign.analysis.reproduce import alignment_trace, probe_scores, probe_summary
from pointalign.cli import main


def test_probe_summary_by_hand():
    by_k = {1: [90.0, 80.0, 70.0, 60.0]}
    assert probe_summary(by_k, align_layer=2) == {1: {"input": 90.0, "align": 70.0, "last": 60.0, "after": 65.0}}
    assert probe_scores(ProbeResult(by_k, 2, {0: 0.01, 3: 0.5}), align_layer=2) == {
        "probe_k1": 65.0,
        "probe_loss_k1": 25.0,
        "decode_l0": 0.01,
        "decode_l3": 0.5,
    }


def test_alignment_trace_reads_the_run_log(tmp_path):
    ckpt = tmp_path / "stage2-seed0"
    assert alignment_trace(ckpt) is None  # no log
    log = tmp_path / "logs" / "stage2-seed0" / "metrics.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("".join(json.dumps({"step": i, "loss": 1.0, "align_loss": 1.0 / i}) + "\n" for i in range(1, 13)))
    trace = alignment_trace(ckpt, last=2)
    assert trace == {"first": 1.0, "last": pytest.approx((1 / 11 + 1 / 12) / 2)}
    log.write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")  # a baseline run: no alignment loss
    assert alignment_trace(ckpt) is None


@pytest.mark.slow
def test_reproduce_tiny_end_to_end_and_rerun(tmp_path, capsys):
    out = tmp_path / "rp"
    assert main(["reproduce", "--preset", "tiny", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    metrics = {r["metric"] for r in report["rows"]}
    assert {"modelnet40_p0", "objaverse_p1", "caption_sbert", "probe_k1", "probe_k10"} <= metrics
    assert all(r["legacy_span"] is not None for r in report["rows"])
    md = (out / "report.md").read_text()
    assert "| metric | baseline | PointAlign | delta |" in md.replace(" | PointAlign, legacy span (seed 0) |", " |")
    for name in ("stage0", "stage1c", "stage2-seed0", "stage2-baseline-seed0", "stage2-legacy-seed0"):
        assert (out / name / "model.safetensors").is_file()
    assert (out / "probe" / "probe.png").is_file()
    assert set(report["probe"]["summary"]) == {"baseline", "pointalign", "legacy-span"}
    assert "| pointalign | 10 |" in md and "input embeddings" in md
    assert report["alignment_loss"]["runs"] == 1 and "Alignment loss (1 - cos)" in md
    assert {"probe_loss_k1", "probe_loss_k10", "decode_l0", "decode_l2"} <= metrics  # tiny: alignment layer 2
    assert (out / "probe" / "decode.csv").is_file()
    stamp = (out / "stage2-seed0" / "model.safetensors").stat().st_mtime
    assert main(["reproduce", "--preset", "tiny", "--out", str(out)]) == 0  # reuses every finished step
    assert (out / "stage2-seed0" / "model.safetensors").stat().st_mtime == stamp
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


def test_cached_probe_reuses_results_while_the_settings_match(tmp_path, monkeypatch):
    import pointalign.analysis.reproduce as reproduce_module

    calls = []

    def fake(ckpt, root, settings):
        calls.append(settings.train_per_class)
        return ProbeResult({k: [50.0 + k, 40.0] for k in settings.ks}, 1, {0: 0.25})

    monkeypatch.setattr(reproduce_module, "probe_checkpoint", fake)
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    settings = ProbeSettings(train_per_class=8, file_points=2048, decode_layers=(0,))
    first = reproduce_module.cached_probe(ckpt, tmp_path, settings)
    assert first == ProbeResult({1: [51.0, 40.0], 10: [60.0, 40.0]}, 1, {0: 0.25})
    assert reproduce_module.cached_probe(ckpt, tmp_path, settings) == first
    assert calls == [8]
    reproduce_module.cached_probe(
        ckpt, tmp_path, ProbeSettings(train_per_class=4, file_points=2048)
    )  # other settings: again
    assert calls == [8, 4]
    assert not list((ckpt / "evaluation").glob("*.tmp"))
