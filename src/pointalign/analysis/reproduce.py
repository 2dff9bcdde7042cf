"""``pointalign reproduce`` and ``pointalign sweep``: the paper's comparison and data-fraction study in one command.

``reproduce`` runs: the embedded dataset -> stage 0 -> stages 1a-1c -> for each seed, stage 2 baseline and stage 2
PointAlign (same data, same seed, same stage-1 model) -> one stage 2 with the reference's legacy alignment span (when
the plan asks for it) -> the plan's evaluation tasks and prompts on every object of each split (greedy decoding, the
offline judge and the caption metrics, kept per object) -> the layer probe -> ``report.md``, ``report.json`` and
plots. The report gives every per-object score a bootstrap CI over objects and every PointAlign - baseline delta a
paired CI and sign-flip p-value over the same objects (``pointalign.analysis.stats``), and opens with a verdict.
Every step is skipped when its output is already complete (evaluation results and probe accuracies are kept in each
checkpoint's ``evaluation/`` folder), so re-running continues where it stopped, and ``--seeds N`` after a run with
fewer seeds trains and evaluates only the new seeds.

``sweep`` trains baseline and PointAlign stage 2 on fractions of the data (from the same stage 1c) and plots the
captioning metrics against the fraction (the paper's Figure 4).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np

from pointalign.analysis.facts_probe import FactsProbeResult, FactsProbeSettings, facts_probe, facts_probe_checkpoint
from pointalign.analysis.probe import ProbeResult, ProbeSettings, probe, probe_checkpoint
from pointalign.analysis.runtime import RunClock, append_record, host_info
from pointalign.analysis.runtime import markdown as runtime_markdown
from pointalign.config import GenerationConfig
from pointalign.errors import ConfigError, DataError
from pointalign.eval.metrics import DEFAULT_SBERT, sbert_label
from pointalign.training.precision import PrecisionChoice, inference_autocast, requested_precision

EVAL_RUNS: tuple[tuple[str, int], ...] = (
    ("cls-closed", 0),
    ("cls-closed", 1),
    ("cls-open", 0),
    ("cls-open", 1),
    ("caption", 2),
)  # every evaluation task and prompt: what ``--full`` runs
STAGE1 = ["stage0", "stage1a", "stage1b", "stage1c"]
DECODE = "decode_l"  # score key prefix of the fitted-projector loss at a layer: decode_l{layer}
TRACE_LAST = 10  # the report's final alignment loss: the mean of this many last logged steps
SUMMARY_FORMAT = 2  # of <ckpt>/evaluation/summary.json: 2 keeps per-object scores (1, aggregates only, is recomputed)
# The caption metrics' recipe, kept in each summary's settings: a summary computed with another one is recomputed.
CAPTION_STACK = "pointllm-traditional"  # NLTK BLEU/METEOR, the rouge package, per-pair Sentence-BERT
N_BOOT = 10_000  # bootstrap resamples and sign flips per CI and p-value
LEVEL = 0.95  # confidence level of every CI; the tests' alpha is 1 - LEVEL


@dataclass
class Plan:
    """Sizes of a reproduction for one preset (what fits its machine).

    A time budget is met by dropping evaluation runs or the legacy-span model, never objects: every run scores
    every object of its split unless ``eval_limit`` (or ``reproduce --limit``) asks for fewer.
    """

    objects_per_class: int
    val_per_class: int
    test_per_class: int
    points: int
    probe_train_per_class: int
    probe_test_limit: int | None  # test objects for the probe (None = the whole test split)
    facts_fit_per_class: int | None = None  # train objects per class the facts probe fits on (None = all)
    eval_limit: int | None = None  # objects per evaluation task, spread over its list (None = all of them)
    eval_runs: tuple[tuple[str, int], ...] = EVAL_RUNS  # (task, prompt index) evaluated on every checkpoint
    legacy_span: bool = True  # also train and evaluate one stage 2 with the reference's legacy alignment span
    class_probe: bool = True  # the per-layer class KNN probe (Figure 3) and the fitted-projector losses
    max_new_tokens_cls: int = 24  # generation limit of the classification tasks (short answers)
    max_new_tokens_caption: int = 24  # generation limit of captioning
    eval_batch_size: int = 8
    sbert: str = DEFAULT_SBERT  # Sentence-BERT model of the caption metrics: "mpnet", "minilm" or a folder
    # What generation and the probes run in: "fp32", "bf16" (autocast) or "auto" (bf16 where this host measures it
    # faster, as the training stages' `precision: auto`; fp32 elsewhere).
    precision: str = "fp32"

    def __post_init__(self) -> None:
        from pointalign.eval.tasks import TASK_PROMPTS

        self.eval_runs = tuple((str(t), int(p)) for t, p in self.eval_runs)
        if not self.eval_runs:
            raise ConfigError("Plan.eval_runs: needs at least one (task, prompt) to evaluate")
        for task, prompt in self.eval_runs:
            if prompt not in TASK_PROMPTS.get(task, ()):
                raise ConfigError(f"Plan.eval_runs: ({task!r}, {prompt}) is no evaluation run (known: {EVAL_RUNS})")
        if len(set(self.eval_runs)) != len(self.eval_runs):
            raise ConfigError(f"Plan.eval_runs: {self.eval_runs} lists a run twice")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ConfigError(f"Plan.eval_limit: {self.eval_limit} objects; at least 1, or None for all")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ConfigError(f"Plan.precision: 'fp32', 'bf16' or 'auto', got {self.precision!r}")
        for name in ("max_new_tokens_cls", "max_new_tokens_caption", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"Plan.{name}: must be at least 1, got {getattr(self, name)}")

    def max_new_tokens(self, task: str) -> int:
        """The generation limit of ``task``."""
        return self.max_new_tokens_caption if task == "caption" else self.max_new_tokens_cls


PLANS = {
    "tiny": Plan(
        objects_per_class=4,
        val_per_class=1,
        test_per_class=1,
        points=256,
        probe_train_per_class=2,
        facts_fit_per_class=4,
        probe_test_limit=8,
        eval_limit=8,
        max_new_tokens_cls=8,
        max_new_tokens_caption=8,
        sbert="minilm",  # the tests' preset: the small packaged model (the report names it)
    ),
    "cpu-small": Plan(
        objects_per_class=40,
        val_per_class=5,
        test_per_class=5,
        points=2048,
        probe_train_per_class=8,
        probe_test_limit=None,
        facts_fit_per_class=12,
        # Every object of each split; to hold the 30-minute budget the quickstart evaluates prompt 0 of both
        # classification tasks and the captioning prompt, trains no legacy-span model and runs the facts probe but
        # not the class probe (1.5 min a model; its KNN accuracy did not differ between the models at this scale:
        # README, "Measured (cpu-small)"). `--full` runs them all.
        eval_runs=(("cls-closed", 0), ("cls-open", 0), ("caption", 2)),
        legacy_span=False,
        class_probe=False,
        max_new_tokens_cls=12,  # "This is a tall grey flight of stairs." is 9 tokens
        max_new_tokens_caption=32,
        eval_batch_size=32,  # 1.4-1.9x the objects/s of batch 8 on a 2-core CPU (benchmarks/eval_throughput.py)
        # As its training stages: on a host where bf16 is faster, the models trained under bf16 autocast are
        # evaluated under it (README, "Measured (cpu-small)": the same model's answers in fp32 and bf16).
        precision="auto",
    ),
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


def train_stage1(preset: str, out: Path, common: list[str], print_fn, clock: RunClock | None = None) -> None:
    clock = clock or RunClock()
    for stage in STAGE1:
        with clock.part(stage):
            _train(preset, stage, out, common, print_fn)


def eval_precision(plan: Plan) -> PrecisionChoice:
    """What the plan's generation and probes run in (the checkpoints load on the CPU; ``auto`` is measured once per
    process)."""
    import torch

    return requested_precision(plan.precision, torch.device("cpu"))


def _run_task(model, task: str, prompt: int, root: Path, ckpt: Path, plan: Plan, file_points: int) -> Path:
    """One task with the plan's settings (greedy, its object limit, its precision); results under
    ``ckpt/evaluation``."""
    from pointalign.eval.tasks import evaluate

    generation = GenerationConfig.greedy(plan.max_new_tokens(task))
    with inference_autocast(eval_precision(plan).chosen, "cpu", model):
        return evaluate(model, task, prompt, root, ckpt, generation, plan.eval_batch_size, file_points, plan.eval_limit)


def run_key(task: str, prompt: int) -> str:
    """The score key of an evaluation run's judge figure (``caption_judge`` for captioning)."""
    if task == "cls-closed":
        return f"modelnet40_p{prompt}"
    if task == "cls-open":
        return f"objaverse_p{prompt}"
    return "caption_judge"


def eval_settings(plan: Plan, root: Path, file_points: int) -> dict:
    """What a checkpoint's ``summary.json`` was computed with; a summary with other settings is recomputed."""
    return {
        "format": SUMMARY_FORMAT,
        "root": str(root),
        "file_points": file_points,
        "limit": plan.eval_limit,
        "runs": [list(r) for r in plan.eval_runs],
        "max_new_tokens": {"cls": plan.max_new_tokens_cls, "caption": plan.max_new_tokens_caption},
        "precision": eval_precision(plan).chosen,
        "caption_metrics": {"stack": CAPTION_STACK, "sbert": sbert_label(plan.sbert)},
    }


def _judged_rows(evaluated: Path, ids: list[str]) -> tuple[dict, list[dict]]:
    """The judged file's report and its rows of ``ids``, in that order (DataError when one is missing)."""
    report = json.loads(evaluated.read_text())
    by_id = {str(r["object_id"]): r for r in report["results"]}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(f"{evaluated}: no result for {len(missing)} of {len(ids)} objects (e.g. {missing[0]!r})")
    return report, [by_id[i] for i in ids]


def _drop_stale_results(ckpt: Path, old: dict | None, plan: Plan) -> None:
    """Remove generated answers made with another ``max_new_tokens`` or precision than the plan's, so they are
    generated anew (a summary without a precision was made in fp32)."""
    from pointalign.eval.tasks import result_name

    if not old or "settings" not in old:
        return  # no record of the generation limit: the answers are kept
    before = old["settings"]["max_new_tokens"]
    other_precision = old["settings"].get("precision", "fp32") != eval_precision(plan).chosen
    for task, prompt in plan.eval_runs:
        kind = "caption" if task == "caption" else "cls"
        if other_precision or before[kind] != plan.max_new_tokens(task):
            path = ckpt / "evaluation" / result_name(task, prompt)
            for stale in (path, path.with_name(f"{path.stem}_evaluated_offline.json")):
                stale.unlink(missing_ok=True)


def evaluate_model(ckpt: Path, root: Path, file_points: int, plan: Plan, print_fn) -> dict:
    """The plan's tasks and prompts on one checkpoint: offline judge and caption metrics, per object and averaged.

    Returns (and keeps in ``<ckpt>/evaluation/summary.json``, reused while ``eval_settings`` match) a dict with
    ``settings``; ``scores`` (score key -> the mean of its per-object values x scale: accuracy in %, caption scores
    as the metric gives them); ``objects`` (score key -> ``ids``, per-object ``values`` in the ids' order, the same
    order for every checkpoint, and their ``scale``); ``judge`` (run key -> the judge's own aggregates over those
    objects: ``accuracy``, ``clean_accuracy``, ``invalid``, ...). Classification values are correct = 1, wrong or
    invalid = 0 (``pointalign.eval.judge.object_scores``). A summary from an older run (aggregates only) or other
    settings is recomputed; generated answers are reused unless their ``max_new_tokens`` or precision changed.
    """
    from pointalign.eval.judge import account, object_scores, run_judge
    from pointalign.eval.metrics import caption_scores
    from pointalign.eval.offline_judge import offline_replies
    from pointalign.eval.tasks import object_ids, result_name

    summary_path = ckpt / "evaluation" / "summary.json"
    settings = eval_settings(plan, root, file_points)
    old = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    if old is not None and old.get("settings") == settings:
        return old
    _drop_stale_results(ckpt, old, plan)
    from pointalign.checkpoint import load_model

    model, _ = load_model(ckpt, for_inference=True)
    summary: dict = {"settings": settings, "scores": {}, "objects": {}, "judge": {}}

    def keep(key: str, ids: list[str], values: list[float], scale: float = 1.0) -> None:
        summary["objects"][key] = {"ids": ids, "values": values, "scale": scale}
        summary["scores"][key] = scale * statistics.fmean(values)

    for task, prompt in plan.eval_runs:
        path = _run_task(model, task, prompt, root, ckpt, plan, file_points)
        ids = object_ids(task, root, file_points, plan.eval_limit)
        evaluated = run_judge(path, offline_replies(), "offline", print_fn=lambda *_: None)
        report, rows = _judged_rows(evaluated, ids)
        acc = account(report["kind"], rows, [r["judge_reply"] for r in rows], report["num_classes"])
        key = run_key(task, prompt)
        keep(key, ids, object_scores(report["kind"], acc.pop("rows")), 1.0 if task == "caption" else 100.0)
        summary["judge"][key] = acc
        if task == "caption":
            per = caption_scores(
                [str(r["ground_truth"]) for r in rows], [r["model_output"] for r in rows], sbert=plan.sbert
            )
            for metric, values in per.items():
                keep(f"caption_{metric}", ids, values)
        print_fn(f"{ckpt.name}: {result_name(task, prompt)} done ({len(ids)} objects)")
    tmp = summary_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(summary_path)
    return summary


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


def reproduce(
    preset: str,
    out: Path,
    seeds: int = 1,
    data_root: Path | None = None,
    print_fn=print,
    limit: int | None = None,
    full: bool = False,
    precision: str | None = None,
) -> dict:
    """Run the whole comparison into ``out``; returns the report dict.

    Args:
        preset: a key of ``PLANS``.
        out: the run folder; re-running reuses every finished step in it.
        seeds: stage-2 seeds (42, 43, ...) of baseline and PointAlign.
        data_root: a dataset folder to use instead of generating the embedded one.
        print_fn: progress output.
        limit: objects per evaluation task, spread over its list (a quick look; None = the plan's, all objects).
        full: every task and prompt, the legacy-span model and the class probe, whatever the plan drops.
        precision: "fp32", "bf16" or "auto" for every stage, the evaluation and the probes (None = the shipped
            configs' and the plan's); a finished stage in ``out`` trained in another precision is an error.
    """
    if preset not in PLANS:
        raise ConfigError(
            f"--preset {preset!r}: reproduce runs {', '.join(PLANS)} (the paper preset: train and "
            "evaluate its stages with real data, `pointalign train configs/paper/...`)"
        )
    if seeds < 1:
        raise ConfigError("--seeds: needs at least 1")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: objects per evaluation task must be at least 1 (omit it for all)")
    plan = PLANS[preset]
    if limit is not None:
        plan = replace(plan, eval_limit=limit)
    if full:
        plan = replace(plan, eval_runs=EVAL_RUNS, legacy_span=True, class_probe=True)
    if precision is not None:
        plan = replace(plan, precision=precision)  # checks the name
        check_finished_precision(out, precision)
    out.mkdir(parents=True, exist_ok=True)
    clock = RunClock()
    with clock.part("data"):
        root, file_points = ensure_data(preset, out, data_root, print_fn)
    common = [f"data.root={root}", f"data.file_points={file_points}"]
    if precision is not None:
        common.append(f"precision={precision}")
    train_stage1(preset, out, common, print_fn, clock)
    runs: dict[str, list[Path]] = {"baseline": [], "pointalign": []}
    for s in range(seeds):
        for name, stage in (("baseline", "stage2-baseline"), ("pointalign", "stage2")):
            with clock.part(f"{stage}-seed{s}"):
                runs[name].append(
                    _train(preset, stage, out, [*common, f"seed={42 + s}", f"run_name={stage}-seed{s}"], print_fn)
                )
    legacy = None
    if plan.legacy_span:
        with clock.part("stage2-legacy-seed0"):
            legacy_overrides = [*common, "seed=42", "loss.span=legacy", "run_name=stage2-legacy-seed0"]
            legacy = _train(preset, "stage2", out, legacy_overrides, print_fn)
    precision = eval_precision(plan)
    print_fn(f"evaluation and probes: {precision.chosen} ({precision.reason})")
    summaries: dict[str, list[dict]] = {k: [] for k in runs}
    for k, ckpts in runs.items():
        for ckpt in ckpts:
            with clock.part(f"evaluation of {ckpt.name}"):
                summaries[k].append(evaluate_model(ckpt, root, file_points, plan, print_fn))
    legacy_summary = None
    if legacy is not None:
        with clock.part(f"evaluation of {legacy.name}"):
            legacy_summary = evaluate_model(legacy, root, file_points, plan, print_fn)
    align_layer = _align_layer(runs["pointalign"][0])
    probed = [*runs["baseline"], *runs["pointalign"], *([legacy] if legacy is not None else [])]
    seed0 = {"baseline": runs["baseline"][0], "pointalign": runs["pointalign"][0]}
    if legacy is not None:
        seed0["legacy-span"] = legacy
    curves = []  # seed 0's curves: probe.csv / probe.png, facts.csv / facts_objects.csv / facts_targets.csv / facts.png
    probe_table = None
    if plan.class_probe:
        settings = ProbeSettings(
            train_per_class=plan.probe_train_per_class,
            test_limit=plan.probe_test_limit,
            file_points=file_points,
            decode_layers=(0, align_layer, -1),  # input embeddings, the alignment layer, the last layer
            precision=precision.chosen,
        )
        with clock.part("class probe"):
            results = {ckpt: cached_probe(ckpt, root, settings) for ckpt in probed}
        for name in runs:  # the probe of every seed's models, for the mean and spread over seeds
            for ckpt, summary in zip(runs[name], summaries[name]):
                summary["scores"].update(probe_scores(results[ckpt], align_layer))
        if legacy_summary is not None:
            legacy_summary["scores"].update(probe_scores(results[legacy], align_layer))
        probe_table = {name: probe_summary(results[ckpt].accuracy, align_layer) for name, ckpt in seed0.items()}
        curves.append((probe, settings, results))
    facts_settings = FactsProbeSettings(
        fit_per_class=plan.facts_fit_per_class, file_points=file_points, precision=precision.chosen
    )
    with clock.part("facts probe"):
        facts = {ckpt: cached_facts_probe(ckpt, root, facts_settings) for ckpt in probed}
    for name in runs:
        for ckpt, summary in zip(runs[name], summaries[name]):
            add_facts_scores(summary, facts[ckpt], align_layer)
    if legacy_summary is not None:
        add_facts_scores(legacy_summary, facts[legacy], align_layer)
    curves.append((facts_probe, facts_settings, facts))
    for write_curves, curve_settings, got in curves:
        write_curves(
            list(seed0.values()),
            root,
            out / "probe",
            curve_settings,
            names=list(seed0),
            print_fn=print_fn,
            probe_fn=lambda ckpt, *_, got=got: got[ckpt],
        )
    report = build_report(preset, seeds, summaries, legacy_summary, align_layer, plan)
    if probe_table is not None:
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
    report["run"] = clock.record(host_info(), f"{precision.chosen} ({precision.reason})")
    append_record(out, report["run"])
    write_report(out, report)
    print_fn((out / "report.md").read_text())
    return report


def check_finished_precision(out: Path, precision: str) -> None:
    """Refuse a run folder whose finished or started stages ran in another precision than ``precision`` forces
    (``reproduce`` reuses finished stages as they are); "auto" accepts either."""
    from pointalign.training.loop import read_trainer_state

    if precision == "auto" or not out.is_dir():
        return
    other = sorted(
        d.name
        for d in out.iterdir()
        if d.is_dir()
        and (state := read_trainer_state(d)) is not None
        and state.get("precision", precision) != precision
    )
    if other:
        raise ConfigError(
            f"--precision {precision}: {out} has stages trained in another precision ({', '.join(other)}); "
            "use another --out, or remove them"
        )


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


def cached_facts_probe(ckpt: Path, root: Path, settings: FactsProbeSettings) -> FactsProbeResult:
    """``facts_probe_checkpoint``, kept in ``<ckpt>/evaluation/facts.json`` and reused while its settings match."""
    path = ckpt / "evaluation" / "facts.json"
    key = {"root": str(root), **json.loads(json.dumps(asdict(settings)))}
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["settings"] == key:
            return FactsProbeResult.from_dict(saved["result"])
    result = facts_probe_checkpoint(ckpt, root, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"settings": key, "result": result.to_dict()}))
    tmp.replace(path)
    return result


FACTS = "facts_"  # score key prefix of the facts probe: facts_{family}_l{layer}


def add_facts_scores(summary: dict, result: FactsProbeResult, align_layer: int) -> None:
    """Per-object facts-probe scores into an ``evaluate_model`` summary, so that the report gives them CIs and paired
    tests like the evaluation's: for each family, at the alignment layer and at the last layer, each held-out
    object's share (%) of that family's facts the probe gets right."""
    last = len(result.correct) - 1
    for layer in sorted({align_layer, last}):
        for family in result.families:
            per_object: dict[str, list[int]] = {}
            for (oid, _, _), ok in result.correctness(layer, family).items():
                per_object.setdefault(oid, []).append(ok)
            ids = sorted(per_object)
            values = [statistics.fmean(per_object[o]) for o in ids]
            key = f"{FACTS}{family.replace(' ', '_')}_l{layer}"
            summary["objects"][key] = {"ids": ids, "values": values, "scale": 100.0}
            summary["scores"][key] = 100.0 * statistics.fmean(values)


def _facts_label(key: str) -> str:
    family, layer = key.removeprefix(FACTS).rsplit("_l", 1)
    return f"Facts probe, {family.replace('_', ' ')} (held-out objects' facts right, %), LLM layer {layer}"


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


JUDGE_FIGURES = {  # run key -> the offline judge's own aggregates the report also shows (no CI)
    **{
        f"modelnet40_p{i}": [
            ("clean_accuracy", "correct among valid replies (%)"),
            ("accuracy", "the reference's: an invalid reply draws a random class (%)"),
            ("invalid", "invalid replies"),
        ]
        for i in (0, 1)
    },
    **{
        f"objaverse_p{i}": [("accuracy", "correct among valid replies (%)"), ("invalid", "invalid replies")]
        for i in (0, 1)
    },
}


def _object_values(summary: dict, key: str) -> tuple[list[str], np.ndarray]:
    entry = summary["objects"][key]
    return entry["ids"], entry["scale"] * np.asarray(entry["values"], dtype=np.float64)  # (N,) in report units


def _per_object_row(key: str, summaries: dict, legacy: dict | None, seeds: list[int]) -> dict:
    """CIs over objects for baseline, PointAlign and the legacy span, and the pooled paired delta."""
    from pointalign.analysis.stats import bootstrap_ci, direction, paired_bootstrap, pooled_paired, verdict

    arms = {name: [_object_values(s, key) for s in summaries[name]] for name in ("baseline", "pointalign")}
    ids = arms["baseline"][0][0]
    others = [i for name in arms for i, _ in arms[name]] + ([_object_values(legacy, key)[0]] if legacy else [])
    if any(i != ids for i in others):
        raise DataError(
            f"report: {key} was scored on different objects for different checkpoints; delete their "
            "evaluation/summary.json files and run again"
        )
    values = {name: [v for _, v in arms[name]] for name in arms}  # per seed, (N,)
    row: dict = {"kind": "per_object", "objects": len(ids)}
    for name, per_seed in values.items():
        seed_means = [float(v.mean()) for v in per_seed]
        _, low, high = bootstrap_ci(np.mean(per_seed, axis=0), N_BOOT, 0, LEVEL)  # (S, N) -> (N,) over seeds
        row[f"{name}_mean"], row[f"{name}_std"] = _mean_std(seed_means)
        row[f"{name}_ci"] = [low, high]
    pooled = pooled_paired(list(zip(values["baseline"], values["pointalign"])), N_BOOT, 0, LEVEL)
    row.update(
        delta=pooled.delta,
        delta_ci=[pooled.low, pooled.high],
        p_value=pooled.p_value,
        direction=direction(pooled),
        verdict=verdict(pooled),
        per_seed_delta=[
            {"seed": seed, **asdict(paired_bootstrap(a, b, N_BOOT, 0, LEVEL))}
            for seed, a, b in zip(seeds, values["baseline"], values["pointalign"])
        ],
    )
    if legacy is not None:
        mean, low, high = bootstrap_ci(_object_values(legacy, key)[1], N_BOOT, 0, LEVEL)
        row.update(legacy_span=mean, legacy_span_ci=[low, high])
    else:
        row.update(legacy_span=None, legacy_span_ci=None)
    return row


def _judge_rows(summaries: dict, legacy: dict | None) -> list[dict]:
    rows = []
    for key, figures in JUDGE_FIGURES.items():
        if not all(key in s["judge"] for name in summaries for s in summaries[name]):
            continue
        for figure, what in figures:
            row = {"metric": key, "figure": figure, "what": what}
            for name in summaries:
                row[f"{name}_mean"], row[f"{name}_std"] = _mean_std([s["judge"][key][figure] for s in summaries[name]])
            row["legacy_span"] = legacy["judge"][key][figure] if legacy is not None else None
            rows.append(row)
    return rows


def build_report(preset: str, seeds: int, summaries: dict, legacy: dict | None, align_layer: int, plan: Plan) -> dict:
    """The comparison's numbers: one row per metric, with CIs and paired tests where scores are per object.

    Args:
        preset: the plan's preset name.
        seeds: stage-2 seeds run (42, 43, ...).
        summaries: ``{"baseline": [...], "pointalign": [...]}``, one ``evaluate_model`` summary per seed, whose
            ``scores`` also hold the probe's (``probe_scores``).
        legacy: the legacy-span model's summary (seed 0), or None when the plan does not train it.
        align_layer: the LLM layer of the alignment loss.
        plan: the plan the runs were evaluated with.

    Returns:
        The report dict: ``rows`` (per-object rows carry ``*_ci``, ``delta_ci``, ``p_value``, ``direction`` and
        ``verdict``; per-layer probe rows carry mean +- std only), ``judge`` (the offline judge's own aggregates),
        ``per_seed`` (every checkpoint's aggregate scores) and the settings.
    """
    seed_list = [42 + s for s in range(seeds)]
    rows = []
    first = summaries["baseline"][0]
    layers = sorted({int(k.removeprefix(DECODE)) for k in first["scores"] if k.startswith(DECODE)})
    facts = sorted(k for k in first["scores"] if k.startswith(FACTS))
    for key, label in [
        *[(k, f"{label} ({sbert_label(plan.sbert)})" if k == "caption_sbert" else label) for k, label in METRICS],
        *[(k, _facts_label(k)) for k in facts],
        *[(f"{DECODE}{layer}", _decode_label(layer)) for layer in layers],
    ]:
        b = [s["scores"][key] for s in summaries["baseline"] if key in s["scores"]]
        p = [s["scores"][key] for s in summaries["pointalign"] if key in s["scores"]]
        if not b or not p:
            continue
        if key in first["objects"]:
            rows.append({"metric": key, "label": label, **_per_object_row(key, summaries, legacy, seed_list)})
            continue
        (bm, bs), (pm, ps) = _mean_std(b), _mean_std(p)
        rows.append(
            {
                "metric": key,
                "label": label,
                "kind": "per_layer",  # one number per checkpoint: no CI, no test
                "baseline_mean": bm,
                "baseline_std": bs,
                "pointalign_mean": pm,
                "pointalign_std": ps,
                "delta": pm - bm,
                "legacy_span": legacy["scores"].get(key) if legacy is not None else None,
            }
        )
    objects = {k: len(v["ids"]) for k, v in first["objects"].items()}
    return {
        "preset": preset,
        "seeds": seed_list,
        "align_layer": align_layer,
        "eval_objects_per_task": plan.eval_limit,
        "eval_objects": objects,
        "eval_runs": [list(r) for r in plan.eval_runs],
        "legacy_span_trained": legacy is not None,
        "max_new_tokens": {"cls": plan.max_new_tokens_cls, "caption": plan.max_new_tokens_caption},
        "precision": eval_precision(plan).chosen,
        "statistics": {"level": LEVEL, "n_boot": N_BOOT, "seed": 0},
        "rows": rows,
        "judge": _judge_rows(summaries, legacy),
        "per_seed": {name: [s["scores"] for s in summaries[name]] for name in summaries},
        "legacy_span_seed0": legacy["scores"] if legacy is not None else None,
    }


def _cell(mean: float, std: float, seeds: int, ci: list[float] | None, f: str) -> str:
    text = f.format(mean) + (f" +- {f.format(std)}" if seeds > 1 else "")
    return text + (f" [{f.format(ci[0])}, {f.format(ci[1])}]" if ci is not None else "")


def verdict_paragraph(report: dict) -> str:
    """The verdict at the top of report.md: the metrics on which PointAlign is better, worse or indistinguishable."""
    rows = [r for r in report["rows"] if r["kind"] == "per_object"]
    groups = {
        way: [r["label"] for r in rows if r["direction"] == way] for way in ("higher", "lower", "indistinguishable")
    }
    level = report["statistics"]["level"]
    sizes = sorted(set(report["eval_objects"].values()))
    seeds = len(report["seeds"])
    parts = [
        f"better on {len(groups['higher'])} ({'; '.join(groups['higher'])})" if groups["higher"] else "better on none",
        f"worse on {len(groups['lower'])} ({'; '.join(groups['lower'])})" if groups["lower"] else "worse on none",
        f"indistinguishable on {len(groups['indistinguishable'])}"
        + (f" ({'; '.join(groups['indistinguishable'])})" if groups["indistinguishable"] else ""),
    ]
    return (
        f"**Verdict.** Of {len(rows)} evaluation metrics, scored on {' / '.join(map(str, sizes))} objects per task "
        f"and {seeds} seed{'s' if seeds > 1 else ''}, PointAlign is {', '.join(parts)}. Better or worse means the "
        f"{100 * level:g} % bootstrap CI of the paired difference excludes zero and the sign-flip test gives "
        f"p < {1 - level:.2f}; indistinguishable means no difference is detectable at this scale, not that there is "
        f"none. No correction for the {len(rows)} comparisons: with no true difference anywhere, about one metric in "
        f"{round(1 / (1 - level))} would still come out better or worse by chance. The CIs are over objects for these "
        "trained models; the spread between seeds is the +- std. The probe rows are per-layer aggregates without CI "
        "and are not part of this verdict."
    )


def write_report(out: Path, report: dict) -> None:
    """``report.json`` and ``report.md`` (verdict, per-object table with CIs, judge figures, probe tables)."""
    (out / "report.json").write_text(json.dumps(report, indent=1))
    seeds = report["seeds"]
    n = len(seeds)
    limit = report["eval_objects_per_task"]
    level = f"{100 * report['statistics']['level']:g} %"
    per_object = [r for r in report["rows"] if r["kind"] == "per_object"]
    lines = [f"# PointAlign vs baseline ({report['preset']})", ""]
    if per_object:
        lines += [verdict_paragraph(report), ""]
    lines += [
        f"Seeds {seeds} (stage 2 trained once per seed from the same stage-1 model, on the same data); greedy "
        f"decoding (at most {report['max_new_tokens']['cls']} new tokens for classification, "
        f"{report['max_new_tokens']['caption']} for captions) in {report.get('precision', 'fp32')}; offline judge; "
        + ("every object of each split" if limit is None else f"{limit} objects per task spread over each split")
        + f"; runs {', '.join(f'{t} p{p}' for t, p in report['eval_runs'])}. Alignment layer {report['align_layer']}.",
    ]
    legacy_head = "PointAlign, legacy span (seed 0)" if report["legacy_span_trained"] else "legacy span (not run)"
    if per_object:
        lines += [
            "",
            f"## Evaluation: per-object scores, {level} CIs",
            "",
            "Classification accuracy scores each object 1 (correct) or 0 (wrong or an invalid reply), so it is "
            "correct / total; the judge's own figures (invalid replies dropped, or given a random class) follow "
            "below. Captioning scores are per-object means. Baseline, PointAlign and legacy-span cells: mean "
            + ("+- std over seeds " if n > 1 else "")
            + f"[{level} percentile-bootstrap CI over objects"
            + (", of each object's mean over seeds]" if n > 1 else "]")
            + ". Delta: PointAlign - baseline paired over the same objects"
            + (
                " (each object's difference averaged over the seeds, objects resampled with their seeds)"
                if n > 1
                else ""
            )
            + f", with its {level} bootstrap CI; p: two-sided paired sign-flip permutation test.",
            "",
            f"| metric | objects | baseline | PointAlign | delta [{level} CI] | p | {legacy_head} |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        from pointalign.analysis.stats import format_p

        f = "{:.2f}"
        for r in per_object:
            legacy = _cell(r["legacy_span"], 0.0, 1, r["legacy_span_ci"], f) if r["legacy_span"] is not None else "-"
            base = _cell(r["baseline_mean"], r["baseline_std"], n, r["baseline_ci"], f)
            lines.append(
                f"| {r['label']} | {r['objects']} | {base} | "
                f"{_cell(r['pointalign_mean'], r['pointalign_std'], n, r['pointalign_ci'], f)} | "
                f"{r['delta']:+.2f} [{f.format(r['delta_ci'][0])}, {f.format(r['delta_ci'][1])}] | "
                f"{format_p(r['p_value'], bare=True)} | {legacy} |"
            )
        lines += [""] + [f"- {r['label']}: {r['verdict']}" for r in per_object]
    if report["judge"]:
        lines += [
            "",
            "The offline judge's own classification figures over the same objects (aggregates, no CI):",
            "",
            f"| metric | figure | baseline | PointAlign | {legacy_head} |",
            "|---|---|---:|---:|---:|",
        ]
        labels = dict(METRICS)
        for r in report["judge"]:
            f = "{:.0f}" if r["figure"] == "invalid" else "{:.2f}"
            legacy = f.format(r["legacy_span"]) if r["legacy_span"] is not None else "-"
            lines.append(
                f"| {labels[r['metric']]} | {r['what']} | {_cell(r['baseline_mean'], r['baseline_std'], n, None, f)} | "
                f"{_cell(r['pointalign_mean'], r['pointalign_std'], n, None, f)} | {legacy} |"
            )
    per_layer = [r for r in report["rows"] if r["kind"] == "per_layer"]
    if per_layer:
        lines += [
            "",
            "## Probe: per-layer aggregates, no CI",
            "",
            "One number per checkpoint (a probe accuracy or a fitted projector's loss over the test objects), not "
            "one per object: "
            + ("mean +- std over seeds, " if n > 1 else "")
            + "and a bare delta; these rows carry no CI and no p-value.",
            "",
            f"| metric | baseline | PointAlign | delta | {legacy_head} |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in per_layer:
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
    else:
        lines += ["", "Layer probe (Figure 3): not run by this plan; `reproduce --full` runs it."]
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
    if "run" in report:
        lines += ["", *runtime_markdown(report["run"])]
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
            m = caption_metrics([r["ground_truth"] for r in res], [r["model_output"] for r in res], sbert=plan.sbert)
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
