"""Evaluation throughput on cpu-small: objects/s at batch 1 and batch 8, in one run.

    python benchmarks/eval_throughput.py [--objects 16] [--new-tokens 32]

Every object generates exactly ``--new-tokens`` tokens (greedy, min = max), so both batch sizes do the same work;
the data is a small embedded dataset generated into a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from pointalign.config import GenerationConfig, preset
from pointalign.data.synth import synthesize
from pointalign.eval.tasks import load_items
from pointalign.models.builders import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--objects", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args()
    cfg = preset(args.preset)
    model = build_model(cfg, for_inference=True).eval()
    gen = GenerationConfig(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, num_beams=1, do_sample=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        synthesize(root, objects_per_class=3, points=cfg.encoder.num_points, val_per_class=1, test_per_class=1)
        items = load_items("caption", root, cfg.encoder.num_points, cfg.encoder.num_points)[: args.objects]
        clouds = torch.stack([it.points() for it in items])
    model.generate(clouds[:2], ["Caption this 3D model in detail."] * 2, config=gen)  # warm-up
    rates = {}
    for bs in (1, 8):
        t = time.perf_counter()
        for i in range(0, len(clouds), bs):
            chunk = clouds[i : i + bs]
            model.generate(chunk, ["Caption this 3D model in detail."] * len(chunk), config=gen)
        rates[bs] = len(clouds) / (time.perf_counter() - t)
    print(
        f"preset {args.preset}, {len(clouds)} objects, {args.new_tokens} new tokens each, greedy, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"  batch 1: {rates[1]:.2f} objects/s   batch 8: {rates[8]:.2f} objects/s   speed-up {rates[8] / rates[1]:.2f}x"
    )


if __name__ == "__main__":
    main()
