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
    from pointalign.training.stages import STAGES, apply_trainable, parameter_summary

    cfg = preset(args.preset, args.overrides)
    if args.stage not in STAGES:
        raise ConfigError(f"--stage {args.stage!r}: unknown (known: {', '.join(STAGES)})")
    stage = STAGES[args.stage]
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
    from pointalign.training.loop import run_stage

    overrides = list(args.overrides)
    if args.data_fraction is not None:
        overrides.append(f"data.fraction={args.data_fraction}")
    cfg = load_train_config(args.config, overrides)
    stage_dir = run_stage(cfg, args.out, resume=args.resume)
    print(f"{cfg.stage}: {stage_dir}")
    return 0


def _progress():
    """A tqdm factory: bars with ETA on a terminal, nothing when stderr is not one (logs, tests)."""
    import functools

    from tqdm import tqdm

    return functools.partial(tqdm, disable=None)


def data_synth(args: argparse.Namespace) -> int:
    from pointalign.data.synth import synthesize

    if args.objects_per_class < args.val_per_class + args.test_per_class + 1:
        raise ConfigError(
            f"--objects-per-class {args.objects_per_class}: needs at least val ({args.val_per_class}) + test "
            f"({args.test_per_class}) + 1 train object per class"
        )
    if args.points < 64:
        raise ConfigError(f"--points {args.points}: use at least 64 points per cloud")
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
        args.mesh_dir, args.out, args.points, args.seed, overwrite=args.overwrite, progress=_progress()
    )
    print(f"wrote {args.out}: {info['objects']} objects in {len(info['classes'])} classes ({info['points']} points)")
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
    convert.set_defaults(func=data_convert)


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
        "--stage", default="stage2", help="training stage whose trainable parameters are counted (default: stage2)"
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
