"""The feature cache's encoding: clouds one at a time (as steps first draw them) against fixed batches
(``cache.prefill``), under the precision a run would choose, with the largest difference between the two.

    python benchmarks/feature_cache.py [--preset cpu-small] [--clouds 64] [--batch 32] [--precision auto]

Runs a freshly initialised model's point encoder, bridge and Q-Former (eval mode, as the cache runs them) on random
coloured clouds of the preset's size; prints milliseconds a cloud for each way and the ratio single / batched.
"""

from __future__ import annotations

import argparse
import time

import torch

from pointalign.config import preset
from pointalign.models.builders import build_model
from pointalign.training.distributed import DistInfo
from pointalign.training.precision import autocast, resolve_precision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--clouds", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--precision", default="auto", choices=["fp32", "bf16", "auto"])
    args = ap.parse_args()
    cfg = preset(args.preset)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    choice = resolve_precision(args.precision, DistInfo(0, 1, 0, torch.device("cpu")))
    print(f"{args.preset}: {args.clouds} clouds of {cfg.encoder.num_points} points, precision {choice.chosen}")
    xyz = torch.randn(args.clouds, cfg.encoder.num_points, 3)
    clouds = torch.cat([xyz / xyz.norm(dim=-1).amax(dim=1, keepdim=True)[..., None], torch.rand_like(xyz)], dim=-1)
    with torch.no_grad(), autocast(choice.chosen, "cpu"):
        model.query_outputs(clouds[:2])  # warm-up
        start = time.perf_counter()
        single = torch.cat([model.query_outputs(clouds[i : i + 1]) for i in range(args.clouds)])
        one = (time.perf_counter() - start) / args.clouds
        start = time.perf_counter()
        batched = torch.cat(
            [model.query_outputs(clouds[i : i + args.batch]) for i in range(0, args.clouds, args.batch)]
        )
        many = (time.perf_counter() - start) / args.clouds
    diff = (single.float() - batched.float()).abs().max().item()
    print(f"one at a time {one * 1000:.1f} ms a cloud, batches of {args.batch} {many * 1000:.1f} ms a cloud")
    print(f"one / batched {one / many:.2f}; largest difference of the outputs {diff:.3g}")


if __name__ == "__main__":
    main()
