import dataclasses
import json

import numpy as np
import pytest

import pointalign.analysis.reproduce as rm
from pointalign.analysis.facts_probe import FactsProbeResult
from pointalign.analysis.probe import ProbeResult, ProbeSettings
from pointalign.analysis.reproduce import EVAL_RUNS, PLANS, Plan, alignment_trace, probe_scores, probe_summary
from pointalign.checkpoint import save_checkpoint
from pointalign.cli import main
from pointalign.errors import ConfigError
from pointalign.eval.metrics import COLUMNS
from pointalign.eval.tasks import result_name
from pointalign.training.stages import STAGES, apply_trainable


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
    caption = next(r for r in report["rows"] if r["metric"] == "caption_sbert")
    assert caption["kind"] == "per_object" and caption["objects"] == 8 and len(caption["delta_ci"]) == 2
    assert caption["baseline_ci"][0] <= caption["baseline_mean"] <= caption["baseline_ci"][1]
    assert 0 < caption["p_value"] <= 1 and caption["legacy_span_ci"] is not None
    md = (out / "report.md").read_text()
    facts = sorted(m for m in metrics if m.startswith("facts_"))
    assert facts == ["facts_colour_l2", "facts_colour_l4"]  # tiny: only the main colour has enough fit objects
    assert md.split("\n")[2].startswith("**Verdict.** Of 11 evaluation metrics")  # 9 + the facts probe's 2
    assert "| metric | objects | baseline | PointAlign | delta [95 % CI] | p | PointAlign, legacy span (seed 0) |" in md
    assert "| metric | baseline | PointAlign | delta | PointAlign, legacy span (seed 0) |" in md  # the probe rows
    summary = json.loads((out / "stage2-seed0" / "evaluation" / "summary.json").read_text())
    assert summary["objects"]["modelnet40_p0"]["ids"] == [str(i) for i in range(0, 40, 5)]
    for name in ("stage0", "stage1c", "stage2-seed0", "stage2-baseline-seed0", "stage2-legacy-seed0"):
        assert (out / name / "model.safetensors").is_file()
    assert (out / "probe" / "probe.png").is_file()
    assert set(report["probe"]["summary"]) == {"baseline", "pointalign", "legacy-span"}
    assert "| pointalign | 10 |" in md and "input embeddings" in md
    assert report["alignment_loss"]["runs"] == 1 and "Alignment loss (1 - cos)" in md
    assert {"probe_loss_k1", "probe_loss_k10", "decode_l0", "decode_l2"} <= metrics  # tiny: alignment layer 2
    assert (out / "probe" / "decode.csv").is_file() and (out / "probe" / "facts.png").is_file()
    assert (out / "stage2-seed0" / "evaluation" / "facts.json").is_file()
    parts = [p["part"] for p in report["run"]["parts"]]
    assert parts[:5] == ["data", "stage0", "stage1a", "stage1b", "stage1c"]
    assert parts[5:8] == ["stage2-baseline-seed0", "stage2-seed0", "stage2-legacy-seed0"]
    assert "evaluation of stage2-legacy-seed0" in parts and parts[-2:] == ["class probe", "facts probe"]
    assert "## This call's host and time" in md and "| stage0 |" in md
    stamp = (out / "stage2-seed0" / "model.safetensors").stat().st_mtime
    assert main(["reproduce", "--preset", "tiny", "--out", str(out)]) == 0  # reuses every finished step
    assert (out / "stage2-seed0" / "model.safetensors").stat().st_mtime == stamp
    calls = (out / "logs" / "reproduce.jsonl").read_text().splitlines()
    assert len(calls) == 2 and json.loads(calls[0])["parts"] == report["run"]["parts"]
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


def _summary(name: str, plan: Plan, rng: np.random.Generator) -> dict:
    """An ``evaluate_model`` summary: PointAlign right on 90 % of the objects, the baseline on 30 %."""
    n = plan.eval_limit or 20
    good = name.startswith("stage2-seed")
    summary: dict = {"settings": {}, "scores": {}, "objects": {}, "judge": {}}
    for task, prompt in plan.eval_runs:
        keys = [rm.run_key(task, prompt)]
        if task == "caption":
            keys += ["caption_sbert", "caption_bleu1", "caption_rougeL", "caption_meteor"]
        for key in keys:
            if task == "caption":
                values, scale = list(40.0 + 10.0 * np.sin(np.arange(n) + len(key))), 1.0  # the same for every model
            else:
                values, scale = list((rng.random(n) < (0.9 if good else 0.3)).astype(float)), 100.0
            summary["objects"][key] = {"ids": [str(i) for i in range(n)], "values": values, "scale": scale}
            summary["scores"][key] = scale * float(np.mean(values))
        if task != "caption":
            summary["judge"][keys[0]] = {"accuracy": 50.0, "clean_accuracy": 55.0, "invalid": 2, "total": n}
    return summary


@pytest.fixture
def fake_pipeline(tmp_path, monkeypatch):
    """``reproduce`` with training, evaluation and the probe replaced by records of what they were asked."""
    asked: dict = {"trained": [], "plans": []}
    rng = np.random.default_rng(0)

    def train(preset, stage, out, overrides, print_fn):
        name = next(o for o in overrides if o.startswith("run_name=")).removeprefix("run_name=")
        asked["trained"].append(name)
        (out / name).mkdir(exist_ok=True)
        return out / name

    def evaluate_model(ckpt, root, file_points, plan, print_fn):
        asked["plans"].append(plan)
        return _summary(ckpt.name, plan, rng)

    monkeypatch.setattr(rm, "ensure_data", lambda preset, out, data_root, print_fn: (tmp_path / "data", 256))
    monkeypatch.setattr(rm, "train_stage1", lambda *args: None)
    monkeypatch.setattr(rm, "_train", train)
    monkeypatch.setattr(rm, "evaluate_model", evaluate_model)
    monkeypatch.setattr(rm, "_align_layer", lambda ckpt: 1)
    monkeypatch.setattr(
        rm, "cached_probe", lambda ckpt, root, settings: ProbeResult({1: [50.0, 40.0, 45.0]}, 1, {0: 0.1, 2: 0.3})
    )
    monkeypatch.setattr(rm, "probe", lambda *args, **kwargs: None)
    pairs = [(str(i), "counts", "chair/legs", "4") for i in range(20)]
    correct = [[i % 2 for i in range(20)], [i % 3 == 0 for i in range(20)], [1] * 20]  # layers 0, 1, 2
    facts = FactsProbeResult(1, "the val split", pairs, [[int(v) for v in row] for row in correct], [0] * 20)
    monkeypatch.setattr(rm, "cached_facts_probe", lambda ckpt, root, settings: facts)
    monkeypatch.setattr(rm, "facts_probe", lambda *args, **kwargs: None)
    return asked


def test_reproduce_limit_reaches_every_evaluation_and_the_report(tmp_path, fake_pipeline, capsys):
    out = tmp_path / "rp"
    args = ["reproduce", "--preset", "cpu-small", "--out", str(out), "--limit", "50", "--seeds", "2", "--full"]
    assert main(args) == 0
    assert {p.eval_limit for p in fake_pipeline["plans"]} == {50}
    assert "stage2-legacy-seed0" in fake_pipeline["trained"] and len(fake_pipeline["plans"]) == 5
    report = json.loads((out / "report.json").read_text())
    rows = {r["metric"]: r for r in report["rows"]}
    closed = rows["modelnet40_p0"]
    assert closed["kind"] == "per_object" and closed["objects"] == 50 and closed["direction"] == "higher"
    assert closed["delta_ci"][0] > 0 and closed["p_value"] < 0.001 and len(closed["per_seed_delta"]) == 2
    assert closed["pointalign_ci"][0] <= closed["pointalign_mean"] <= closed["pointalign_ci"][1]
    assert rows["caption_sbert"]["direction"] == "indistinguishable"  # both models drawn from the same scores
    assert rows["probe_k1"]["kind"] == "per_layer" and "delta_ci" not in rows["probe_k1"]
    assert rows["decode_l2"]["kind"] == "per_layer"
    md = (out / "report.md").read_text()
    head = md.split("\n## ")[0]
    assert "PointAlign is better on 4 (ModelNet40 close-set accuracy, prompt 0 (I);" in head
    assert "worse on none" in head and "indistinguishable on 7" in head  # 5 + the facts probe at layers 1 and 2
    assert rows["facts_counts_l1"]["kind"] == "per_object" and rows["facts_counts_l1"]["objects"] == 20
    assert rows["facts_counts_l1"]["baseline_mean"] == pytest.approx(35.0)  # 7 of 20 objects right at layer 1
    assert rows["facts_counts_l2"]["pointalign_mean"] == pytest.approx(100.0)
    assert "Facts probe, counts (held-out objects' facts right, %), LLM layer 2" in md
    assert "- ModelNet40 close-set accuracy, prompt 0 (I): PointAlign is higher than the baseline by" in md
    assert "is indistinguishable from zero (95 % CI [" in md
    assert "50 objects per task spread over each split" in md
    assert "## Probe: per-layer aggregates, no CI" in md and "correct among valid replies (%)" in md
    assert " +- " in closed_line(md, "ModelNet40 close-set accuracy, prompt 0 (I) | 50 |")  # two seeds: +- std
    parts = [p["part"] for p in report["run"]["parts"]]  # train_stage1 is faked: it times no stage
    assert parts[:5] == ["data", "stage2-baseline-seed0", "stage2-seed0", "stage2-baseline-seed1", "stage2-seed1"]
    assert parts[5] == "stage2-legacy-seed0" and parts[6] == "evaluation of stage2-baseline-seed0"
    assert report["run"]["host"]["threads"] >= 1 and "## This call's host and time" in md
    capsys.readouterr()


def closed_line(md: str, start: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| {start}"))


def test_reproduce_plan_drops_runs_and_full_restores_them(tmp_path, fake_pipeline, monkeypatch, capsys):
    lean = dataclasses.replace(PLANS["cpu-small"], eval_runs=(("caption", 2),), legacy_span=False)
    assert not lean.class_probe  # cpu-small's quickstart leaves the class probe to --full
    monkeypatch.setitem(PLANS, "cpu-small", lean)
    probed = []
    monkeypatch.setattr(
        rm,
        "cached_probe",
        lambda ckpt, root, settings: probed.append(ckpt.name) or ProbeResult({1: [50.0, 40.0, 45.0]}, 1, {0: 0.1}),
    )
    out = tmp_path / "lean"
    assert main(["reproduce", "--preset", "cpu-small", "--out", str(out)]) == 0
    assert [p.eval_runs for p in fake_pipeline["plans"]] == [(("caption", 2),)] * 2
    assert "stage2-legacy-seed0" not in fake_pipeline["trained"]
    assert fake_pipeline["plans"][0].eval_limit is None  # every object by default
    report = json.loads((out / "report.json").read_text())
    assert {r["metric"] for r in report["rows"] if r["kind"] == "per_object"} == {
        "caption_judge",
        "caption_sbert",
        "caption_bleu1",
        "caption_rougeL",
        "caption_meteor",
        "facts_counts_l1",
        "facts_counts_l2",
    }
    assert all(r["legacy_span"] is None for r in report["rows"]) and report["legacy_span_trained"] is False
    md = (out / "report.md").read_text()
    assert "legacy span (not run)" in md and "every object of each split" in md
    assert probed == [] and "probe" not in report and not any(r["metric"].startswith("probe_") for r in report["rows"])
    assert "Layer probe (Figure 3): not run by this plan; `reproduce --full` runs it." in md
    sbert_row = next(r for r in report["rows"] if r["metric"] == "caption_sbert")
    assert sbert_row["label"] == "Captioning, Sentence-BERT (all-mpnet-base-v2)"  # cpu-small: the paper's model
    fake_pipeline["plans"].clear()
    assert main(["reproduce", "--preset", "cpu-small", "--out", str(out), "--full"]) == 0
    assert [p.eval_runs for p in fake_pipeline["plans"]] == [EVAL_RUNS] * 3  # baseline, PointAlign, legacy span
    assert "stage2-legacy-seed0" in fake_pipeline["trained"]
    assert sorted(probed) == ["stage2-baseline-seed0", "stage2-legacy-seed0", "stage2-seed0"]
    report = json.loads((out / "report.json").read_text())
    assert set(report["probe"]["summary"]) == {"baseline", "pointalign", "legacy-span"}
    assert "probe_k1" in {r["metric"] for r in report["rows"]}
    capsys.readouterr()


def test_reproduce_bad_limit_writes_nothing(tmp_path, fake_pipeline, capsys):
    out = tmp_path / "never"
    assert main(["reproduce", "--preset", "tiny", "--out", str(out), "--limit", "0"]) == 2
    assert "--limit 0: objects per evaluation task must be at least 1" in capsys.readouterr().err
    assert not out.exists() and fake_pipeline["trained"] == []
    with pytest.raises(SystemExit) as exit_info:
        main(["reproduce", "--preset", "tiny", "--out", str(out), "--limit", "x"])
    assert exit_info.value.code == 2 and "--limit: invalid int value" in capsys.readouterr().err
    assert not out.exists()


def test_plan_fields_are_checked():
    plan = PLANS["cpu-small"]
    assert plan.eval_limit is None and not plan.legacy_span  # every object; the quickstart's budget drops the rest
    assert plan.eval_runs == (("cls-closed", 0), ("cls-open", 0), ("caption", 2))
    assert plan.max_new_tokens("cls-closed") == plan.max_new_tokens_cls == 12
    assert dataclasses.replace(plan, max_new_tokens_caption=60).max_new_tokens("caption") == 60
    with pytest.raises(ConfigError, match=r"\('caption', 0\) is no evaluation run"):
        dataclasses.replace(plan, eval_runs=(("caption", 0),))
    with pytest.raises(ConfigError, match="at least one"):
        dataclasses.replace(plan, eval_runs=())
    with pytest.raises(ConfigError, match="lists a run twice"):
        dataclasses.replace(plan, eval_runs=(("caption", 2), ("caption", 2)))
    with pytest.raises(ConfigError, match="Plan.eval_limit"):
        dataclasses.replace(plan, eval_limit=0)
    with pytest.raises(ConfigError, match="Plan.max_new_tokens_cls"):
        dataclasses.replace(plan, max_new_tokens_cls=0)
    assert plan.precision == "auto" and PLANS["tiny"].precision == "fp32"
    with pytest.raises(ConfigError, match="Plan.precision: 'fp32', 'bf16' or 'auto', got 'fp16'"):
        dataclasses.replace(plan, precision="fp16")


def test_evaluate_model_keeps_per_object_scores_and_recomputes_old_summaries(
    tiny_model, tiny_config, tiny_data, tmp_path, monkeypatch
):
    apply_trainable(tiny_model, STAGES["stage2"])
    ckpt = save_checkpoint(tiny_model, tmp_path / "ckpt", tiny_config, what="full")
    plan = dataclasses.replace(
        PLANS["tiny"], eval_limit=3, eval_runs=(("cls-closed", 0), ("caption", 2)), max_new_tokens_caption=4
    )
    summary_path = ckpt / "evaluation" / "summary.json"
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps({"modelnet40_p0": 12.5}))  # an older run's aggregates only
    summary = rm.evaluate_model(ckpt, tiny_data, 256, plan, print_fn=lambda *_: None)
    assert set(summary["objects"]) == {
        "modelnet40_p0",
        "caption_judge",
        *(f"caption_{k}" for k in COLUMNS if k != "simcse"),
    }
    assert summary["settings"]["caption_metrics"] == {"stack": rm.CAPTION_STACK, "sbert": "all-MiniLM-L6-v2"}
    closed = summary["objects"]["modelnet40_p0"]
    assert closed["ids"] == ["0", "13", "26"] and set(closed["values"]) <= {0.0, 1.0} and closed["scale"] == 100.0
    assert summary["scores"]["modelnet40_p0"] == pytest.approx(100 * np.mean(closed["values"]))
    assert {"clean_accuracy", "accuracy", "invalid", "total"} <= set(summary["judge"]["modelnet40_p0"])
    sbert = summary["objects"]["caption_sbert"]
    assert len(sbert["values"]) == 3 and summary["scores"]["caption_sbert"] == pytest.approx(np.mean(sbert["values"]))
    assert json.loads(summary_path.read_text()) == summary

    def no_model(*args, **kwargs):
        raise AssertionError("the summary should have been reused")

    monkeypatch.setattr("pointalign.checkpoint.load_model", no_model)
    assert rm.evaluate_model(ckpt, tiny_data, 256, plan, print_fn=lambda *_: None) == summary
    monkeypatch.undo()
    # an older caption-metrics stack (the hand-written ROUGE-L, MiniLM only): recomputed from the same answers
    older = json.loads(summary_path.read_text())
    del older["settings"]["caption_metrics"]
    summary_path.write_text(json.dumps({**older, "scores": {}}))
    assert rm.evaluate_model(ckpt, tiny_data, 256, plan, print_fn=lambda *_: None) == summary
    # fewer objects from the same answers: the summary is recomputed over the first two of the spread
    fewer = rm.evaluate_model(ckpt, tiny_data, 256, dataclasses.replace(plan, eval_limit=2), print_fn=lambda *_: None)
    assert fewer["objects"]["modelnet40_p0"]["ids"] == ["0", "20"]
    assert fewer["judge"]["modelnet40_p0"]["total"] == 2
    caption_file = ckpt / "evaluation" / result_name("caption", 2)
    closed_file = ckpt / "evaluation" / result_name("cls-closed", 0)
    assert len(json.loads(caption_file.read_text())["results"]) == 4  # 0, 13, 26, then 20
    # another caption length: the captions are generated anew, the close-set answers kept
    longer = dataclasses.replace(plan, eval_limit=2, max_new_tokens_caption=5)
    rm.evaluate_model(ckpt, tiny_data, 256, longer, print_fn=lambda *_: None)
    assert [r["object_id"] for r in json.loads(caption_file.read_text())["results"]] == fewer["objects"][
        "caption_sbert"
    ]["ids"]
    assert len(json.loads(closed_file.read_text())["results"]) == 4
    # another precision: every answer is generated anew under it, and the summary records it
    assert fewer["settings"]["precision"] == "fp32"
    calls = []
    real_autocast = rm.inference_autocast
    monkeypatch.setattr(
        rm,
        "inference_autocast",
        lambda chosen, device, model: calls.append(chosen) or real_autocast(chosen, device, model),
    )
    in_bf16 = rm.evaluate_model(
        ckpt, tiny_data, 256, dataclasses.replace(longer, precision="bf16"), print_fn=lambda *_: None
    )
    assert in_bf16["settings"]["precision"] == "bf16" and calls == ["bf16", "bf16"]
    assert len(json.loads(closed_file.read_text())["results"]) == 2  # the fp32 answers were dropped


def test_reproduce_precision_reaches_every_stage_and_the_evaluation(tmp_path, fake_pipeline, monkeypatch, capsys):
    overrides = []
    stage1 = []
    train = rm._train
    monkeypatch.setattr(rm, "_train", lambda p, s, o, ov, f: overrides.append(ov) or train(p, s, o, ov, f))
    monkeypatch.setattr(rm, "train_stage1", lambda preset, out, common, print_fn, clock: stage1.append(common))
    out = tmp_path / "fp32"
    assert main(["reproduce", "--preset", "cpu-small", "--out", str(out), "--precision", "fp32"]) == 0
    assert all("precision=fp32" in ov for ov in [*stage1, *overrides]) and len(overrides) == 2
    assert {p.precision for p in fake_pipeline["plans"]} == {"fp32"}
    fake_pipeline["plans"].clear()
    assert main(["reproduce", "--preset", "cpu-small", "--out", str(tmp_path / "default")]) == 0
    assert {p.precision for p in fake_pipeline["plans"]} == {"auto"}  # the plan's own
    assert not any("precision=" in o for o in stage1[-1])
    capsys.readouterr()


def test_reproduce_precision_refuses_stages_of_another_precision(tmp_path, fake_pipeline, capsys):
    out = tmp_path / "rp"
    (out / "stage0").mkdir(parents=True)
    (out / "stage0" / "trainer_state.json").write_text(json.dumps({"step": 3, "complete": True, "precision": "bf16"}))
    assert main(["reproduce", "--preset", "cpu-small", "--out", str(out), "--precision", "fp32"]) == 2
    err = capsys.readouterr().err
    assert "--precision fp32: " in err and "stages trained in another precision (stage0)" in err
    assert sorted(p.name for p in out.iterdir()) == ["stage0"] and fake_pipeline["trained"] == []
    assert main(["reproduce", "--preset", "cpu-small", "--out", str(out), "--precision", "bf16"]) == 0  # agrees
    capsys.readouterr()
