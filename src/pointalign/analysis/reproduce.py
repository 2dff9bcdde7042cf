"""``pointalign reproduce`` and ``pointalign sweep``: the paper's comparison and data-fraction study in one command.

``reproduce`` runs: the embedded dataset -> stage 0 -> stages 1a-1c -> for each seed, stage 2 baseline and stage 2
PointAlign (same data, same seed, same stage-1 model) -> one stage 2 with the reference's legacy alignment span ->
every evaluation task and prompt (greedy decoding, the offline judge and the caption metrics) -> the layer probe ->
``report.md``, ``report.json`` and plots. Every step is skipped when its output is already complete (evaluation
results and probe accuracies are kept in each checkpoint's ``evaluation/`` folder), so re-running continues where it
stopped, and ``--seeds N`` after a run with fewer seeds trains and evaluates only the new seeds.

``sweep`` trains baseline and PointAlign stage 2 on fractions of the data (from the same stage 1c) and plots the
captioning metrics against the fraction (the paper's Figure 4).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from pointalign.analysis.probe import ProbeResult, ProbeSettings, probe, probe_checkpoint
from pointalign.config import GenerationConfig
from pointalign.errors import ConfigError

EVAL_RUNS = [("cls-closed", 0), ("cls-closed", 1), ("cls-open", 0), ("cls-open", 1), ("caption", 2)]
STAGE1 = ["stage0", "stage1a", "stage1b", "stage1c"]
DECODE = "decode_l"  # score key prefix of the fitted-projector loss at a layer: decode_l{layer}
TRACE_LAST = 10  # the report's final alignment loss: the mean of this many last logged steps


@dataclass
class Plan:
    """Sizes of a reproduction for one preset (what fits its machine)."""

    objects_per_class: int
    val_per_class: int
    test_per_class: int
    points: int
    eval_limit: int | None  # objects per evaluation task (None = all)
    max_new_tokens: int
    probe_train_per_class: int
    probe_test_limit: int | None  # test objects for the probe (None = the whole test split)
    eval_batch_size: int = 8


PLANS = {
    "tiny": Plan(4, 1, 1, 256, 8, 8, 2, 8),
    "cpu-small": Plan(40, 5, 5, 2048, 40, 24, 8, None),
}


def config_path(preset: str, stage: str) -> Path:
    path = Path(str(resources.files("pointalign") / "configs" / preset / f"{stage}.yaml"))
    if not path.is_file():
        raise ConfigError(f"no shipped config for preset {preset!r}, stage {stage!r} ({path})")
    return path


def _train(preset: str, stage: str, out: Path, overrides: list[str], print_fn) -> Path:
    from pointalign.training.config import load_train_config
    from pointalign.training.run import run_stage

    return run_stage(load_train_config(config_path(preset, stage), overrides), out, resume=True, print_fn=print_fn)


def ensure_data(preset: str, out: Path, data_root: Path | None, print_fn) -> tuple[Path, int]:
    plan = PLANS[preset]
    if data_root is not None:
        return data_root, 8192
    root = out / "data"
    if not (root / "dataset_card.json").is_file():
        from pointalign.data.synth import synthesize

        card = synthesize(
            root,
            plan.objects_per_class,
            plan.points,
            seed=0,
            val_per_class=plan.val_per_class,
            test_per_class=plan.test_per_class,
            overwrite=True,
        )
        print_fn(f"data: {card['objects']} objects at {plan.points} points in {root}")
    return root, plan.points


def train_stage1(preset: str, out: Path, common: list[str], print_fn) -> None:
    for stage in STAGE1:
        _train(preset, stage, out, common, print_fn)


def _run_task(model, task: str, prompt: int, root: Path, ckpt: Path, plan: Plan, file_points: int) -> Path:
    """One task with the plan's settings (greedy, its object limit); results under ``ckpt/evaluation``."""
    from pointalign.eval.tasks import evaluate

    generation = GenerationConfig.greedy(plan.max_new_tokens)
    return evaluate(model, task, prompt, root, ckpt, generation, plan.eval_batch_size, file_points, plan.eval_limit)


def evaluate_model(ckpt: Path, root: Path, file_points: int, plan: Plan, print_fn) -> dict:
    """Every task and prompt on one checkpoint: offline judge scores and caption metrics (cached in the folder)."""
    from pointalign.eval.judge import run_judge
    from pointalign.eval.metrics import caption_metrics
    from pointalign.eval.offline_judge import offline_replies
    from pointalign.eval.tasks import result_name

    summary_path = ckpt / "evaluation" / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    from pointalign.checkpoint import load_model

    model, _ = load_model(ckpt, for_inference=True)
    scores: dict[str, float] = {}
    for task, prompt in EVAL_RUNS:
        path = _run_task(model, task, prompt, root, ckpt, plan, file_points)
        report = json.loads(run_judge(path, offline_replies(), "offline", print_fn=lambda *_: None).read_text())
        if task == "cls-closed":
            scores[f"modelnet40_p{prompt}"] = report["clean_accuracy"]
        elif task == "cls-open":
            scores[f"objaverse_p{prompt}"] = report["accuracy"]
        else:
            scores["caption_judge"] = report["average_score"]
            rows = json.loads(path.read_text())["results"]
            for k, v in caption_metrics([r["ground_truth"] for r in rows], [r["model_output"] for r in rows]).items():
                scores[f"caption_{k}"] = v
        print_fn(f"{ckpt.name}: {result_name(task, prompt)} done")
    summary_path.write_text(json.dumps(scores, indent=1))
    return scores


METRICS = [
    ("modelnet40_p0", "ModelNet40 close-set accuracy, prompt 0 (I)"),
    ("modelnet40_p1", "ModelNet40 close-set accuracy, prompt 1 (C)"),
    ("objaverse_p0", "Objaverse-style open-vocabulary accuracy, prompt 0 (I)"),
    ("objaverse_p1", "Objaverse-style open-vocabulary accuracy, prompt 1 (C)"),
    ("caption_judge", "Captioning, offline judge score"),
    ("caption_sbert", "Captioning, Sentence-BERT"),
    ("caption_bleu1", "Captioning, BLEU-1"),
    ("caption_rougeL", "Captioning, ROUGE-L"),
    ("caption_meteor", "Captioning, METEOR"),
    ("probe_k1", "Probe KNN accuracy at and after the alignment layer, K=1"),
    ("probe_k10", "Probe KNN accuracy at and after the alignment layer, K=10"),
    ("probe_loss_k1", "Probe accuracy lost since the input embeddings (input minus the mean above), K=1"),
    ("probe_loss_k10", "Probe accuracy lost since the input embeddings (input minus the mean above), K=10"),
]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def reproduce(preset: str, out: Path, seeds: int = 1, data_root: Path | None = None, print_fn=print) -> dict:
    """Run the whole comparison into ``out``; returns the report dict."""
    if preset not in PLANS:
        raise ConfigError(
            f"--preset {preset!r}: reproduce runs {', '.join(PLANS)} (the paper preset: train and "
            "evaluate its stages with real data, `pointalign train configs/paper/...`)"
        )
    if seeds < 1:
        raise ConfigError("--seeds: needs at least 1")
    plan = PLANS[preset]
    out.mkdir(parents=True, exist_ok=True)
    root, file_points = ensure_data(preset, out, data_root, print_fn)
    common = [f"data.root={root}", f"data.file_points={file_points}"]
    train_stage1(preset, out, common, print_fn)
    runs: dict[str, list[Path]] = {"baseline": [], "pointalign": []}
    for s in range(seeds):
        runs["baseline"].append(
            _train(
                preset,
                "stage2-baseline",
                out,
                [*common, f"seed={42 + s}", f"run_name=stage2-baseline-seed{s}"],
                print_fn,
            )
        )
        runs["pointalign"].append(
            _train(preset, "stage2", out, [*common, f"seed={42 + s}", f"run_name=stage2-seed{s}"], print_fn)
        )
    legacy = _train(
        preset, "stage2", out, [*common, "seed=42", "loss.span=legacy", "run_name=stage2-legacy-seed0"], print_fn
    )
    scores = {k: [evaluate_model(p, root, file_points, plan, print_fn) for p in v] for k, v in runs.items()}
    legacy_scores = evaluate_model(legacy, root, file_points, plan, print_fn)
    align_layer = _align_layer(runs["pointalign"][0])
    settings = ProbeSettings(
        train_per_class=plan.probe_train_per_class,
        test_limit=plan.probe_test_limit,
        file_points=file_points,
        decode_layers=(0, align_layer, -1),  # input embeddings, the alignment layer, the last layer
    )
    results = {ckpt: cached_probe(ckpt, root, settings) for ckpt in [*runs["baseline"], *runs["pointalign"], legacy]}
    for name in runs:  # the probe of every seed's models, for the mean and spread over seeds
        for ckpt, score in zip(runs[name], scores[name]):
            score.update(probe_scores(results[ckpt], align_layer))
    legacy_scores.update(probe_scores(results[legacy], align_layer))
    seed0 = {"baseline": runs["baseline"][0], "pointalign": runs["pointalign"][0], "legacy-span": legacy}
    probe(  # seed 0's curves: probe.csv and probe.png, from the accuracies above
        list(seed0.values()),
        root,
        out / "probe",
        settings,
        names=list(seed0),
        print_fn=print_fn,
        probe_fn=lambda ckpt, *_: results[ckpt],
    )
    probe_table = {name: probe_summary(results[ckpt].accuracy, align_layer) for name, ckpt in seed0.items()}
    report = build_report(preset, seeds, scores, legacy_scores, align_layer, plan)
    report["probe"] = {
        "train_per_class": plan.probe_train_per_class,
        "test_objects": plan.probe_test_limit or "all",
        "summary": probe_table,
    }
    traces = [t for t in (alignment_trace(c, TRACE_LAST) for c in runs["pointalign"]) if t is not None]
    if traces:
        report["alignment_loss"] = {
            "runs": len(traces),
            "last_steps": TRACE_LAST,
            "first": _mean_std([t["first"] for t in traces]),
            "last": _mean_std([t["last"] for t in traces]),
        }
    write_report(out, report)
    print_fn((out / "report.md").read_text())
    return report


def cached_probe(ckpt: Path, root: Path, settings: ProbeSettings) -> ProbeResult:
    """``probe_checkpoint``, kept in ``<ckpt>/evaluation/probe.json`` and reused while its settings match."""
    path = ckpt / "evaluation" / "probe.json"
    key = {"root": str(root), **json.loads(json.dumps(asdict(settings)))}  # tuples as lists, as read back
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["settings"] == key:
            return ProbeResult(
                {int(k): v for k, v in saved["accuracy"].items()},
                saved["align_layer"],
                {int(k): v for k, v in saved["decode"].items()},
            )
    result = probe_checkpoint(ckpt, root, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"settings": key, **asdict(result)}, indent=1))
    tmp.replace(path)
    return result


def mean_from(accs: list[float], align_layer: int) -> float:
    """Mean probe accuracy over the alignment layer and every layer after it."""
    return statistics.fmean(accs[align_layer:])


def probe_scores(result: ProbeResult, align_layer: int) -> dict[str, float]:
    """The report's probe metrics of one checkpoint: for each K, ``probe_k{K}`` = ``mean_from`` and
    ``probe_loss_k{K}`` = the accuracy at the input embeddings minus that mean (> 0: the LLM loses class information
    the point tokens had when they entered it); for each decode layer, ``decode_l{layer}`` = the held-out loss of an
    alignment projector fitted there."""
    scores = {}
    for k, accs in result.accuracy.items():
        scores[f"probe_k{k}"] = mean_from(accs, align_layer)
        scores[f"probe_loss_k{k}"] = accs[0] - scores[f"probe_k{k}"]
    for layer, loss in result.decode.items():
        scores[f"{DECODE}{layer}"] = loss
    return scores


def alignment_trace(ckpt: Path, last: int = TRACE_LAST) -> dict[str, float] | None:
    """The alignment loss of a PointAlign run from its metrics log: the first logged value and the mean of the last
    ``last`` ones; None when the run left no log with an alignment loss."""
    log = ckpt.parent / "logs" / ckpt.name / "metrics.jsonl"
    if not log.is_file():
        return None
    values = [r["align_loss"] for r in map(json.loads, log.read_text().splitlines()) if "align_loss" in r]
    if not values:
        return None
    return {"first": values[0], "last": statistics.fmean(values[-last:])}


def probe_summary(by_k: dict[int, list[float]], align_layer: int) -> dict[int, dict[str, float]]:
    """Per K: accuracy at the input embeddings, at the alignment layer, at the last layer, and ``mean_from``."""
    return {
        k: {"input": a[0], "align": a[align_layer], "last": a[-1], "after": mean_from(a, align_layer)}
        for k, a in by_k.items()
    }


def _decode_label(layer: int) -> str:
    where = "the input embeddings" if layer == 0 else f"layer {layer}"
    return f"Alignment loss (1 - cos, held out) of a projector fitted to the point tokens of {where}"


def _align_layer(ckpt: Path) -> int:
    from pointalign.checkpoint import read_checkpoint_meta

    return int(read_checkpoint_meta(ckpt)["model"]["align"]["layer"])


def build_report(preset: str, seeds: int, scores: dict, legacy: dict, align_layer: int, plan: Plan) -> dict:
    rows = []
    layers = sorted({int(k.removeprefix(DECODE)) for s in scores["baseline"] for k in s if k.startswith(DECODE)})
    for key, label in [*METRICS, *[(f"{DECODE}{layer}", _decode_label(layer)) for layer in layers]]:
        b = [s[key] for s in scores["baseline"] if key in s]
        p = [s[key] for s in scores["pointalign"] if key in s]
        if not b or not p:
            continue
        (bm, bs), (pm, ps) = _mean_std(b), _mean_std(p)
        rows.append(
            {
                "metric": key,
                "label": label,
                "baseline_mean": bm,
                "baseline_std": bs,
                "pointalign_mean": pm,
                "pointalign_std": ps,
                "delta": pm - bm,
                "legacy_span": legacy.get(key),
            }
        )
    return {
        "preset": preset,
        "seeds": [42 + s for s in range(seeds)],
        "align_layer": align_layer,
        "eval_objects_per_task": plan.eval_limit,
        "rows": rows,
        "per_seed": scores,
        "legacy_span_seed0": legacy,
    }


def write_report(out: Path, report: dict) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=1))
    seeds = report["seeds"]
    lines = [
        f"# PointAlign vs baseline ({report['preset']})",
        "",
        f"Seeds {seeds} (stage 2 trained once per seed from the same stage-1 model, on the same data); greedy "
        f"decoding; offline judge; {report['eval_objects_per_task'] or 'all'} objects per evaluation task. "
        f"Mean +- std over seeds. Alignment layer {report['align_layer']}.",
        "",
        "| metric | baseline | PointAlign | delta | PointAlign, legacy span (seed 0) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        f = "{:.4f}" if r["metric"].startswith(DECODE) else "{:.2f}"  # losses near 0 need more digits
        legacy = f.format(r["legacy_span"]) if r["legacy_span"] is not None else "-"
        lines.append(
            f"| {r['label']} | {f.format(r['baseline_mean'])} +- {f.format(r['baseline_std'])} | "
            f"{f.format(r['pointalign_mean'])} +- {f.format(r['pointalign_std'])} | "
            f"{'+' if r['delta'] >= 0 else '-'}{f.format(abs(r['delta']))} | {legacy} |"
        )
    if "probe" in report:
        p = report["probe"]
        lines += [
            "",
            "Layer probe of seed 0's models (Figure 3; `probe/probe.png`, `probe/probe.csv`): mean point token per "
            "layer, cosine KNN from "
            f"{p['train_per_class']} train objects per class to {p['test_objects']} test objects of the "
            "ModelNet40-format test split; accuracy (%).",
            "",
            f"| checkpoint | K | input embeddings | layer {report['align_layer']} | last layer | "
            f"mean, layer {report['align_layer']} on |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, by_k in p["summary"].items():
            for k, a in by_k.items():
                lines.append(
                    f"| {name} | {k} | {a['input']:.2f} | {a['align']:.2f} | {a['last']:.2f} | {a['after']:.2f} |"
                )
    if "alignment_loss" in report:
        a = report["alignment_loss"]
        lines += [
            "",
            f"Alignment loss (1 - cos) of the PointAlign runs ({a['runs']}; mean +- std): "
            f"{a['first'][0]:.3f} +- {a['first'][1]:.3f} at the first step, {a['last'][0]:.3f} +- {a['last'][1]:.3f} "
            f"over the last {a['last_steps']} logged steps. When this loss ends low and the baseline loses no probe "
            "accuracy, the point tokens at the alignment layer already carried the Q-Former outputs and the loss had "
            "little to correct.",
        ]
    lines.append("")
    (out / "report.md").write_text("\n".join(lines))


def sweep(preset: str, out: Path, fractions: list[float], data_root: Path | None = None, print_fn=print) -> list[dict]:
    """Baseline and PointAlign stage 2 per data fraction; captioning metrics per fraction, plotted."""
    from pointalign.eval.metrics import caption_metrics

    if preset not in PLANS:
        raise ConfigError(f"--preset {preset!r}: sweep runs {', '.join(PLANS)}")
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ConfigError(f"--data-fraction: fractions in (0, 1], got {fractions}")
    plan = PLANS[preset]
    out.mkdir(parents=True, exist_ok=True)
    root, file_points = ensure_data(preset, out, data_root, print_fn)
    common = [f"data.root={root}", f"data.file_points={file_points}"]
    train_stage1(preset, out, common, print_fn)
    rows = []
    from pointalign.checkpoint import load_model

    for f in fractions:
        for variant, stage in (("baseline", "stage2-baseline"), ("pointalign", "stage2")):
            ckpt = _train(preset, stage, out, [*common, f"data.fraction={f}", f"run_name={stage}-frac{f}"], print_fn)
            model, _ = load_model(ckpt, for_inference=True)
            path = _run_task(model, "caption", 2, root, ckpt, plan, file_points)
            res = json.loads(path.read_text())["results"]
            m = caption_metrics([r["ground_truth"] for r in res], [r["model_output"] for r in res])
            rows.append({"fraction": f, "variant": variant, **m})
            print_fn(f"fraction {f} {variant}: " + " ".join(f"{k} {v:.2f}" for k, v in m.items()))
    (out / "sweep.json").write_text(json.dumps(rows, indent=1))
    plot_sweep(rows, out / "sweep.png")
    return rows


def plot_sweep(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["sbert", "bleu1", "rougeL", "meteor"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), dpi=100)
    for ax, m in zip(axes, metrics):
        for variant in ("baseline", "pointalign"):
            pts = sorted((r["fraction"], r[m]) for r in rows if r["variant"] == variant)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=variant)
        ax.set_xlabel("fraction of training data")
        ax.set_title(m)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
