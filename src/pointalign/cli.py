"""The ``pointalign`` command line. Every entry point is ``main(argv=None)`` so tests call it in-process."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pointalign.config import PRESETS, preset
from pointalign.errors import USER_ERRORS, ConfigError
from pointalign.eval.metrics import DEFAULT_SBERT


def _add_model_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default=default, help="model preset (default: %(default)s)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model config field, e.g. --set llm.source=/models/phi-2 --set align.layer=12",
    )


def model_summary(args: argparse.Namespace) -> int:
    from pointalign.models.builders import build_model
    from pointalign.training.config import load_train_config
    from pointalign.training.stages import STAGES, apply_trainable, parameter_summary

    cfg = preset(args.preset, args.overrides)
    if args.stage.endswith((".yaml", ".yml")):  # a stage file: its own trainable policy, changes included
        stage = load_train_config(args.stage).trainable
    elif args.stage in STAGES:
        stage = STAGES[args.stage]
    else:
        raise ConfigError(f"--stage {args.stage!r}: unknown (known: {', '.join(STAGES)}, or a stage .yaml file)")
    model = build_model(cfg, for_inference=args.stage == "inference")
    apply_trainable(model, stage)
    rows = parameter_summary(model)
    total = sum(r[1] for r in rows)
    trainable = sum(r[2] for r in rows)
    if args.json:
        parts = {name: {"params": n, "trainable": t} for name, n, t in rows}
        report = {"preset": args.preset, "stage": args.stage, "parts": parts, "total": total, "trainable": trainable}
        print(json.dumps(report))
        return 0
    print(f"preset {args.preset}, stage {args.stage}")
    print(f"{'part':<16}{'parameters':>14}{'trainable':>14}")
    for name, n, t in rows:
        print(f"{name:<16}{n:>14,}{t:>14,}")
    print(f"{'total':<16}{total:>14,}{trainable:>14,}")
    return 0


def quickstart(args: argparse.Namespace) -> int:
    from pointalign.quickstart import run_quickstart

    cfg = preset(args.preset, args.overrides)
    run_quickstart(cfg, steps=args.steps, lr=args.lr, out=Path(args.out))
    return 0


def train(args: argparse.Namespace) -> int:
    from pointalign.training.config import load_train_config
    from pointalign.training.run import run_stage

    overrides = list(args.overrides)
    if args.data_fraction is not None:
        overrides.append(f"data.fraction={args.data_fraction}")
    cfg = load_train_config(args.config, overrides)
    stage_dir = run_stage(cfg, args.out, resume=args.resume)
    print(f"{cfg.name}: {stage_dir}")
    return 0


def evaluate_cmd(args: argparse.Namespace) -> int:
    from pointalign.checkpoint import load_model
    from pointalign.config import GenerationConfig
    from pointalign.eval.tasks import MAX_NEW_TOKENS, evaluate
    from pointalign.training.precision import inference_autocast, requested_precision

    model, cfg = load_model(args.checkpoint, for_inference=True)
    gen = GenerationConfig.greedy(MAX_NEW_TOKENS[args.task]) if args.greedy else None
    out = Path(args.out) if args.out else Path(args.checkpoint)
    device = next(model.parameters()).device
    precision = requested_precision(args.precision, device)
    if args.precision == "auto":
        print(f"eval: {precision.describe()}")
    with inference_autocast(precision.chosen, device.type, model):
        path = evaluate(
            model,
            args.task,
            args.prompt_index,
            Path(args.data_root),
            out,
            gen,
            args.batch_size,
            args.file_points,
            args.limit,
            progress=_progress(),
        )
    print(f"results: {path}")
    return 0


def judge_cmd(args: argparse.Namespace) -> int:
    from pointalign.eval.judge import run_judge

    if args.judge == "offline":
        from pointalign.eval.offline_judge import offline_replies

        run_judge(args.results, offline_replies(args.sbert), "offline")
        return 0
    from pointalign.eval.openai_judge import OpenAIJudge, openai_replies

    if not args.base_url or not args.model:
        raise ConfigError("--judge openai needs --base-url and --model (any OpenAI-compatible endpoint)")
    judge = OpenAIJudge(
        args.base_url,
        args.model,
        os.environ.get(args.api_key_env),
        args.temperature,
        timeout=args.timeout,
        retries=args.retries,
        backoff=args.backoff,
        workers=args.workers,
    )
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in args.model)
    results = Path(args.results)
    cache = results.with_name(f".{results.stem}_judge_cache_{safe}.jsonl")
    run_judge(results, openai_replies(judge, cache), safe)
    return 0


def metrics_cmd(args: argparse.Namespace) -> int:
    from pointalign.eval.judge import read_results
    from pointalign.eval.metrics import caption_scores, metrics_table, sbert_label

    _, results = read_results(args.results)
    refs = [str(r["ground_truth"]) for r in results]
    hyps = [r["model_output"] for r in results]
    per = caption_scores(refs, hyps, sbert=args.sbert, simcse=args.simcse)
    means = {k: sum(v) / len(v) for k, v in per.items()}
    path = Path(args.results)
    out = path.with_name(f"{path.stem}_evaluated_traditional.json")
    rows = [
        {
            "object_id": r.get("object_id"),
            "ground_truth": ref,
            "model_output": hyp,
            "scores": {k: v[i] for k, v in per.items()},
        }
        for i, (r, ref, hyp) in enumerate(zip(results, refs, hyps))
    ]
    report = {"total": len(results), "sbert_model": sbert_label(args.sbert), "simcse_model": args.simcse, **means}
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps({**report, "results": rows}, indent=1))
    tmp.replace(out)
    print(metrics_table(means, args.sbert))
    print(f"written: {out}")
    return 0


def probe_cmd(args: argparse.Namespace) -> int:
    from pointalign.analysis.probe import ProbeSettings, probe

    settings = ProbeSettings(
        ks=tuple(args.k),
        train_per_class=args.train_per_class,
        test_limit=args.test_limit,
        file_points=args.file_points,
        decode_layers=tuple(args.decode_layers),
    )
    checkpoints, root, out = [Path(c) for c in args.checkpoint], Path(args.data_root), Path(args.out)
    if args.facts:
        from pointalign.analysis.facts_probe import FactsProbeSettings, facts_probe, load_facts

        given = {"heldout": args.facts_heldout, "fit_per_class": args.facts_fit_per_class, "seed": args.facts_seed}
        facts_settings = FactsProbeSettings(
            file_points=args.file_points, **{k: v for k, v in given.items() if v is not None}
        )
        load_facts(root)  # a root without facts: an error before anything is computed or written
    probe(checkpoints, root, out, settings)
    written = ["probe.csv", "probe.png", *(["decode.csv"] if args.decode_layers else [])]
    if args.facts:
        facts_probe(checkpoints, root, out, facts_settings)
        written += ["facts.csv", "facts_objects.csv", "facts_targets.csv", "facts.png"]
    print("written: " + ", ".join(str(Path(args.out) / name) for name in written))
    return 0


def diagnose_cmd(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from pointalign.analysis.seams import SeamSettings, diagnose, format_report
    from pointalign.checkpoint import load_model

    settings = SeamSettings(
        train_per_class=args.train_per_class, test_limit=args.test_limit, file_points=args.file_points
    )
    reports = {}
    for ckpt in args.checkpoint:
        model, _ = load_model(ckpt, for_inference=True)
        reports[ckpt] = diagnose(model, Path(args.data_root), settings)
        print(format_report(ckpt, reports[ckpt]))
    if args.json:
        out = {c: {**asdict(r), "caption_gap": r.caption_gap} for c, r in reports.items()}
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"written: {args.json}")
    return 0


def reproduce_cmd(args: argparse.Namespace) -> int:
    from pointalign.analysis.reproduce import reproduce

    reproduce(
        args.preset,
        Path(args.out),
        args.seeds,
        Path(args.data_root) if args.data_root else None,
        limit=args.limit,
        full=args.full,
        precision=args.precision,
    )
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def sweep_cmd(args: argparse.Namespace) -> int:
    from pointalign.analysis.reproduce import sweep

    try:
        fractions = [float(x) for x in args.data_fraction.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--data-fraction {args.data_fraction!r}: expected numbers separated by commas") from None
    sweep(args.preset, Path(args.out), fractions, Path(args.data_root) if args.data_root else None)
    print(f"written: {Path(args.out) / 'sweep.json'}, {Path(args.out) / 'sweep.png'}")
    return 0


def chat_cmd(args: argparse.Namespace) -> int:
    from pointalign.chat import chat
    from pointalign.config import GenerationConfig

    chat(args.checkpoint, args.points, args.ask, GenerationConfig.greedy(args.max_new_tokens), precision=args.precision)
    return 0


def import_minigpt3d_cmd(args: argparse.Namespace) -> int:
    from pointalign.importer import import_minigpt3d

    result = import_minigpt3d(
        args.llm,
        args.point_encoder,
        args.qformer,
        args.checkpoint,
        args.out,
        overrides=args.overrides,
        fresh=args.fresh,
    )
    for line in result.report:
        print(line)
    print(f"written: {result.out}")
    return 0


def demo_cmd(args: argparse.Namespace) -> int:
    from pointalign.demo.app import launch

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: serving on {args.host}, reachable from other machines", file=sys.stderr)
    launch(args.checkpoint, args.host, args.port, Path(args.data_root) if args.data_root else None, args.max_upload_mb)
    return 0


def _progress():
    """A tqdm factory: bars with ETA on a terminal, nothing when stderr is not one (logs, tests)."""
    import functools

    from tqdm import tqdm

    return functools.partial(tqdm, disable=None)


def data_synth(args: argparse.Namespace) -> int:
    from pointalign.data.synth import synthesize

    card = synthesize(
        args.out,
        args.objects_per_class,
        args.points,
        args.seed,
        args.val_per_class,
        args.test_per_class,
        overwrite=args.overwrite,
        progress=_progress(),
    )
    total = sum(card["objects"].values())
    print(f"wrote {args.out}: {card['objects']} objects, records {card['records']}")
    print(f"{total} objects in {card['seconds']:.1f}s ({total / card['seconds']:.0f} objects/s)")
    return 0


def data_inspect(args: argparse.Namespace) -> int:
    from pointalign.data.inspect import inspect_path

    for line in inspect_path(args.path, args.png):
        print(line)
    return 0


def data_convert(args: argparse.Namespace) -> int:
    from pointalign.data.convert import convert_meshes

    info = convert_meshes(
        args.mesh_dir,
        args.out,
        args.points,
        args.seed,
        overwrite=args.overwrite,
        progress=_progress(),
        workers=args.workers,
        strict=args.strict,
    )
    skipped = f"; {len(info['skipped'])} skipped (see convert_manifest.json)" if info["skipped"] else ""
    print(
        f"wrote {args.out}: {info['objects']} objects in {len(info['classes'])} classes ({info['points']} points)"
        f"{skipped}"
    )
    return 0


def _add_data_commands(sub) -> None:
    data = sub.add_parser("data", help="make, convert and inspect 3D data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser(
        "synth", help="write the embedded procedural dataset (40 ModelNet40 classes) in PointLLM's layout"
    )
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--objects-per-class", type=int, default=40, help="objects per class (default: %(default)s)")
    synth.add_argument("--points", type=int, default=8192, help="points per cloud (default: %(default)s)")
    synth.add_argument("--seed", type=int, default=0, help="generator seed (default: %(default)s)")
    synth.add_argument("--val-per-class", type=int, default=5, help="val objects per class (default: %(default)s)")
    synth.add_argument("--test-per-class", type=int, default=5, help="test objects per class (default: %(default)s)")
    synth.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    synth.set_defaults(func=data_synth)

    inspect = data_sub.add_parser("inspect", help="summarise a cloud, mesh, annotation file or dataset folder")
    inspect.add_argument("path")
    inspect.add_argument("--png", default=None, help="also render it to this PNG file")
    inspect.set_defaults(func=data_inspect)

    convert = data_sub.add_parser(
        "convert", help="sample a folder of meshes (class = sub-folder) into the PointLLM layout"
    )
    convert.add_argument("mesh_dir")
    convert.add_argument("--out", required=True, help="output folder")
    convert.add_argument("--points", type=int, default=8192, help="points per cloud (default: %(default)s)")
    convert.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    convert.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    convert.add_argument(
        "--workers", type=int, default=None, help="processes sampling meshes (default: the machine's cores)"
    )
    convert.add_argument(
        "--strict", action="store_true", help="stop at the first unreadable mesh and write nothing (default: skip it)"
    )
    convert.set_defaults(func=data_convert)


def _add_import_commands(sub) -> None:
    imp = sub.add_parser("import", help="turn released weights into a pointalign checkpoint folder")
    imp_sub = imp.add_subparsers(dest="import_command", required=True)
    mg = imp_sub.add_parser(
        "minigpt3d",
        help="MiniGPT-3D / PointAlign's released files (Phi-2, Point-BERT, BLIP-2, stage checkpoints)",
        description="Import MiniGPT-3D's or PointAlign's released weights. Files are read with "
        "torch.load(weights_only=True) and apply in the reference's order (point encoder, Q-Former, then each "
        "--checkpoint as given); where several hold a tensor the last one wins. Sizes come from the tensors' "
        "shapes; the rest from the paper preset or --set. The Phi-2 folder is referenced, not copied.",
    )
    mg.add_argument("--llm", required=True, help="Phi-2 folder (transformers 4.36's fused layout or today's)")
    mg.add_argument("--point-encoder", required=True, help="ULIP-2 Point-BERT file (point_model.pth)")
    mg.add_argument("--qformer", required=True, help="BLIP-2 Q-Former file (blip2_pretrained_flant5xxl.pth)")
    mg.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        help="a runner checkpoint; repeat in load order, e.g. MiniGPT_3D_stage_3.pth, or pretrain.pth then "
        "finetune.pth",
    )
    mg.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model config field the weights do not fix, e.g. --set encoder.num_groups=512 --set llm.dtype=float32",
    )
    mg.add_argument(
        "--fresh",
        action="append",
        default=[],
        choices=["bridge"],
        help="a part no file supplies that starts from a seeded random init, for a stage to train: --fresh bridge "
        "with TinyGPT-V_for_Stage3.pth as the only --checkpoint gives the model MiniGPT-3D's stage 1 starts from",
    )
    mg.add_argument("--out", required=True, help="the checkpoint folder to write (must not exist)")
    mg.set_defaults(func=import_minigpt3d_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pointalign",
        description="Build, train, evaluate, probe and chat with 3D vision-language models (PointAlign).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    model = sub.add_parser("model", help="inspect model presets")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    summary = model_sub.add_parser("summary", help="parameter counts per part, total and trainable")
    _add_model_args(summary, default="tiny")
    summary.add_argument(
        "--stage",
        default="stage2",
        help="training stage whose trainable parameters are counted: a stage name (its default policy) or a stage "
        ".yaml file (its policy with the file's trainable changes) (default: %(default)s)",
    )
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summary.set_defaults(func=model_summary)

    qs = sub.add_parser("quickstart", help="train a few stage-2 steps on primitives, save, reload and generate")
    _add_model_args(qs, default="cpu-small")
    qs.add_argument("--steps", type=int, default=4, help="training steps (default: %(default)s)")
    qs.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: %(default)s)")
    qs.add_argument("--out", default="runs/quickstart", help="inference checkpoint folder (default: %(default)s)")
    qs.set_defaults(func=quickstart)
    _add_data_commands(sub)

    tr = sub.add_parser(
        "train",
        help="train one stage from a stage config (configs/<preset>/<stage>.yaml)",
        description="Train one stage. Stages chain through --out: a stage writes <out>/<stage>/ and starts from "
        "<out>/<init_from>/. Any config field can be overridden with key=value, e.g. data.root=/data/pointllm "
        "optim.steps=200 loss.weight=0.2.",
    )
    tr.add_argument("config", help="stage YAML file")
    tr.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    tr.add_argument(
        "--out", default="runs/train", help="run folder shared by the chained stages (default: %(default)s)"
    )
    tr.add_argument("--resume", action="store_true", help="continue an interrupted run of this stage exactly")
    tr.add_argument(
        "--data-fraction", type=float, default=None, help="train on this deterministic fraction of the data"
    )
    tr.set_defaults(func=train)

    ev = sub.add_parser("eval", help="generate answers for a benchmark into a PointLLM-format result file")
    ev.add_argument("--checkpoint", required=True, help="checkpoint folder (a trained stage)")
    ev.add_argument("--task", required=True, choices=["cls-closed", "cls-open", "caption"])
    ev.add_argument("--prompt-index", type=int, required=True, help="0/1 for classification, 2 for captioning")
    ev.add_argument("--data-root", default="data/synth", help="PointLLM-layout data folder (default: %(default)s)")
    ev.add_argument("--out", default=None, help="results go to <out>/evaluation/ (default: the checkpoint folder)")
    ev.add_argument("--greedy", action="store_true", help="deterministic greedy decoding instead of the paper's")
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--file-points", type=int, default=8192, help="points in the data files (default: %(default)s)")
    ev.add_argument("--limit", type=int, default=None, help="only the first N objects")
    ev.add_argument(
        "--precision",
        choices=["fp32", "bf16", "auto"],
        default="fp32",
        help="fp32, bf16 autocast, or auto: bf16 where this host measures it faster (default: %(default)s)",
    )
    ev.set_defaults(func=evaluate_cmd)

    jd = sub.add_parser("judge", help="score a result file: offline rules or an OpenAI-compatible LLM judge")
    jd.add_argument("results", help="a result JSON written by `pointalign eval` (or PointLLM's scripts)")
    jd.add_argument("--judge", choices=["offline", "openai"], default="offline")
    jd.add_argument("--base-url", default=None, help="e.g. http://127.0.0.1:8000/v1 (vLLM), .../v1 (Ollama)")
    jd.add_argument("--model", default=None, help="the judge model name, e.g. qwen2-72b-instruct")
    jd.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    jd.add_argument("--temperature", type=float, default=None)
    jd.add_argument("--workers", type=int, default=8, help="parallel requests (default: %(default)s)")
    jd.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default: %(default)s)")
    jd.add_argument("--retries", type=int, default=5, help="retries per request (default: %(default)s)")
    jd.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubling")
    jd.add_argument("--sbert", default="minilm", help="sentence-transformers folder for the offline judge")
    jd.set_defaults(func=judge_cmd)

    mt = sub.add_parser(
        "metrics",
        help="caption metrics of a result file as PointLLM computes them: SBERT, SimCSE, BLEU-1..4, ROUGE-1/2/L, "
        "METEOR",
    )
    mt.add_argument("results")
    mt.add_argument(
        "--sbert",
        default=DEFAULT_SBERT,
        help="Sentence-BERT model: 'mpnet' (all-mpnet-base-v2, the paper's; from its PyPI parts), 'minilm' "
        "(all-MiniLM-L6-v2, the small fallback) or a local sentence-transformers folder (default: %(default)s)",
    )
    mt.add_argument(
        "--simcse",
        default=None,
        help="a local SimCSE model folder (princeton-nlp/sup-simcse-roberta-large); none is packaged",
    )
    mt.set_defaults(func=metrics_cmd)

    pr = sub.add_parser("probe", help="per-layer KNN probe of the point tokens (the paper's Figure 3)")
    pr.add_argument("--checkpoint", action="append", required=True, help="a checkpoint folder; repeat to compare")
    pr.add_argument("--data-root", default="data/synth", help="PointLLM-layout data folder (default: %(default)s)")
    pr.add_argument("--out", default="runs/probe", help="where probe.csv and probe.png go (default: %(default)s)")
    pr.add_argument("--k", type=int, nargs="+", default=[1, 10], help="neighbours (default: 1 10)")
    pr.add_argument("--train-per-class", type=int, default=10, help="labelled train objects per class")
    pr.add_argument(
        "--test-limit", type=int, default=None, help="N test objects spread evenly over the test split (default: all)"
    )
    pr.add_argument("--file-points", type=int, default=8192, help="points in the data files (default: %(default)s)")
    pr.add_argument(
        "--decode-layers",
        type=int,
        nargs="+",
        default=[],
        help="also fit a fresh alignment projector at these layers (0 = input embeddings, -1 = last) and write its "
        "held-out loss 1 - cos to decode.csv: how much of PointAlign's target the point tokens still carry",
    )
    pr.add_argument(
        "--facts",
        action="store_true",
        help="also probe the embedded dataset's object facts (part counts, main and part colours, variants, "
        "proportions, optional parts) per layer with a ridge linear probe fitted on train objects and scored on "
        "held-out coloured objects: facts.csv, facts_objects.csv (per object 0/1), facts_targets.csv, facts.png",
    )
    pr.add_argument(
        "--facts-heldout",
        choices=["val", "train"],
        default=None,
        help="objects the facts probe is scored on: the val split (default) or a seeded part of the train split",
    )
    pr.add_argument("--facts-fit-per-class", type=int, default=None, help="fit objects per class (default: all)")
    pr.add_argument("--facts-seed", type=int, default=None, help="seed of the held-out part of --facts-heldout train")
    pr.set_defaults(func=probe_cmd)

    dg = sub.add_parser("diagnose", help="where class information stops reaching the answer: probes at every seam")
    dg.add_argument("--checkpoint", action="append", required=True, help="a checkpoint folder; repeat to compare")
    dg.add_argument("--data-root", default="data/synth", help="PointLLM-layout data folder (default: %(default)s)")
    dg.add_argument("--train-per-class", type=int, default=10, help="labelled train objects per class")
    dg.add_argument("--test-limit", type=int, default=None, help="N test objects spread over the split (default: all)")
    dg.add_argument("--file-points", type=int, default=8192, help="points in the data files (default: %(default)s)")
    dg.add_argument("--json", default=None, help="also write the figures to this JSON file")
    dg.set_defaults(func=diagnose_cmd)

    rp = sub.add_parser("reproduce", help="the paper's comparison end to end: data, stages, eval, probe, report")
    rp.add_argument("--preset", choices=["tiny", "cpu-small"], default="cpu-small")
    rp.add_argument("--out", default="runs/reproduce", help="run folder (default: %(default)s); re-running reuses it")
    rp.add_argument("--seeds", type=int, default=1, help="stage-2 seeds for mean +- std (default: %(default)s)")
    rp.add_argument("--data-root", default=None, help="use this data folder instead of generating the embedded one")
    rp.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="a quick look: N objects per evaluation task, spread over its list (default: every object)",
    )
    rp.add_argument(
        "--full",
        action="store_true",
        help="evaluate every task and prompt and train the legacy-span model, whatever the preset's plan drops",
    )
    rp.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default=None,
        help="run every stage, the evaluation and the probes in this precision (default: the preset's, auto for "
        "cpu-small: bf16 where this host measures it faster); reproduce a run made on another host",
    )
    rp.set_defaults(func=reproduce_cmd)

    sw = sub.add_parser("sweep", help="baseline vs PointAlign trained on fractions of the data (Figure 4)")
    sw.add_argument("--preset", choices=["tiny", "cpu-small"], default="cpu-small")
    sw.add_argument("--out", default="runs/reproduce", help="run folder; stages 0-1c are reused from it")
    sw.add_argument("--data-fraction", default="0.1,0.3,0.5,0.7,1.0", help="comma-separated fractions")
    sw.add_argument("--data-root", default=None)
    sw.set_defaults(func=sweep_cmd)

    ch = sub.add_parser("chat", help="a multi-turn terminal chat about one point cloud or mesh")
    ch.add_argument("--checkpoint", required=True)
    ch.add_argument("--points", required=True, help=".npy / .ply cloud or .obj / .stl / .off / .glb / .ply mesh")
    ch.add_argument("--ask", default=None, help="answer this one question and exit (scriptable)")
    ch.add_argument("--max-new-tokens", type=int, default=150)
    ch.add_argument(
        "--precision",
        choices=["fp32", "bf16", "auto"],
        default="fp32",
        help="fp32, bf16 autocast (as the cpu-small evaluation where bf16 is faster), or auto: bf16 where this host "
        "measures it faster (default: %(default)s)",
    )
    ch.set_defaults(func=chat_cmd)

    _add_import_commands(sub)

    dm = sub.add_parser("demo", help="a web page to view a cloud in 3D and chat about it (Gradio)")
    dm.add_argument("--checkpoint", required=True)
    dm.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    dm.add_argument("--port", type=int, default=None, help="port (default: Gradio's, 7860 or the next free one)")
    dm.add_argument("--data-root", default=None, help="embedded dataset folder for the example objects")
    dm.add_argument("--max-upload-mb", type=int, default=50, help="largest upload (default: %(default)s MB)")
    dm.set_defaults(func=demo_cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest:  # key=value overrides may follow options (pointalign train cfg.yaml --out d data.root=x)
        if getattr(args, "command", None) == "train" and all("=" in r and not r.startswith("-") for r in rest):
            args.overrides = [*args.overrides, *rest]
        else:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return int(args.func(args))
    except USER_ERRORS as exc:
        if os.environ.get("POINTALIGN_DEBUG"):
            raise
        print(f"pointalign: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
