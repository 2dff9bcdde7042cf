"""Training-step time and loss with ``precision: bf16`` (autocast) against ``fp32``, on the same batches.

    python benchmarks/precision.py [--preset cpu-small] [--stage stage1a] [--steps 6] [--warmup 2]

Builds the stage's model twice from the same seed (vision side and LLM as the stage trains them, no feature
cache), trains both on the same sequence of batches with the two precisions alternating step by step, and prints
the median step time of each, their ratio, and the largest difference between the two runs' losses, then what
``precision: auto`` chooses on this host (its own short matmul probe, training/precision.py), and the same probe
Linear's forward pass alone in both precisions, the figure a user gets by timing ``layer(x)`` (the forward +
backward probe takes about three times as long: compare hosts on the same one). The data is a small embedded dataset
generated into a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pointalign.config import preset
from pointalign.data.synth import synthesize
from pointalign.training.config import CacheConfig, DataConfig, DataSource, OptimConfig, TrainConfig
from pointalign.training.distributed import DistInfo
from pointalign.training.loop import setup, train_step
from pointalign.training.precision import PROBE_IN, PROBE_OUT, PROBE_ROWS, auto_precision
from pointalign.training.stages import STAGES

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def forward_only_ms(repeats: int = 10) -> dict[str, float]:
    """Fastest forward time (ms) of ``auto``'s probe Linear without grad, fp32 and under bf16 autocast, alternating
    after two warm-up rounds each."""
    layer = torch.nn.Linear(PROBE_IN, PROBE_OUT)
    x = torch.randn(PROBE_ROWS, PROBE_IN, generator=torch.Generator().manual_seed(0))  # (L, D)
    best = {"fp32": float("inf"), "bf16": float("inf")}
    with torch.no_grad():
        for i in range(repeats + 2):
            for name in best:
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                    layer(x)  # (L, PROBE_OUT)
                if i >= 2:
                    best[name] = min(best[name], (time.perf_counter() - t) * 1000.0)
    return best


def make_run(root: Path, points: int, name: str, stage: str, precision: str):
    cfg = TrainConfig(
        stage=stage,
        preset=name,
        trainable=STAGES[stage],
        data=DataConfig(root=str(root), file_points=points, mixture=(DataSource("brief", 8),)),
        optim=OptimConfig(steps=1000, lr=1e-4, warmup_steps=0),
        cache=CacheConfig(kind="none"),
        precision=precision,
    )
    run = setup(cfg, root.parent / f"out-{precision}", CPU)
    run.model.eval()  # no dropout: the two runs differ by their precision alone
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--stage", default="stage1a", choices=["stage1a", "stage1b", "stage2"])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    points = preset(args.preset).encoder.num_points
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        synthesize(root, objects_per_class=3, points=points, seed=0, val_per_class=1, test_per_class=1)
        runs = {p: make_run(root, points, args.preset, args.stage, p) for p in ("fp32", "bf16")}
        times: dict[str, list[float]] = {p: [] for p in runs}
        losses: dict[str, list[float]] = {p: [] for p in runs}
        for i in range(args.warmup + args.steps):
            for p, run in runs.items():
                t = time.perf_counter()
                metrics = train_step(run, run.model)
                if i >= args.warmup:
                    times[p].append(time.perf_counter() - t)
                losses[p].append(metrics["loss"])
    med = {p: statistics.median(v) for p, v in times.items()}
    gap = max(abs(a - b) for a, b in zip(losses["fp32"], losses["bf16"]))
    print(
        f"preset {args.preset}, {args.stage} (brief batches of 8), {torch.get_num_threads()} threads, "
        f"median of {args.steps} steps"
    )
    print(
        f"  fp32 step {med['fp32'] * 1000:8.1f} ms   bf16 step {med['bf16'] * 1000:8.1f} ms   "
        f"fp32 / bf16 {med['fp32'] / med['bf16']:.2f}"
    )
    print(
        f"  losses over {len(losses['fp32'])} steps: fp32 {losses['fp32'][0]:.3f} -> {losses['fp32'][-1]:.3f}, "
        f"bf16 {losses['bf16'][0]:.3f} -> {losses['bf16'][-1]:.3f}, largest difference {gap:.3f}"
    )
    print(f"  {auto_precision(CPU.device).describe()}")
    fwd = forward_only_ms()
    print(
        f"  the probe Linear {PROBE_ROWS}x{PROBE_IN}->{PROBE_OUT}, forward only: fp32 {fwd['fp32']:.2f} ms, "
        f"bf16 {fwd['bf16']:.2f} ms"
    )


if __name__ == "__main__":
    main()
