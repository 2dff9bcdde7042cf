"""The ``pointalign`` command line. Every entry point is ``main(argv=None)`` so tests call it in-process."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pointalign.config import PRESETS, CheckpointError, ConfigError, preset

# Errors a user can cause and fix: reported as one line, no traceback (POINTALIGN_DEBUG=1 shows it).
USER_ERRORS = (ConfigError, CheckpointError, FileNotFoundError)


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except USER_ERRORS as exc:
        if os.environ.get("POINTALIGN_DEBUG"):
            raise
        print(f"pointalign: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
