"""Stage-2 training-step cost on cpu-small: PointAlign vs baseline, and the vision side's share.

    python benchmarks/train_step.py [--preset cpu-small] [--steps 8] [--warmup 2]

Prints, measured in one run (median of ``--steps`` steps after ``--warmup``):
- train-step time (forward, backward, AdamW step) of PointAlign / baseline (target <= 1.05), steps alternating
  between the two so that machine noise hits both alike;
- peak memory (max RSS) of a process that trains PointAlign / one that trains the baseline (target <= 1.05);
- a stage-2 step (feature cache warm) / an LLM-only step on the same batch of tokens (the same LoRA training
  without any vision side or point tokens spliced in) (target <= 1.10).
The data is a small embedded dataset generated into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pointalign.config import preset
from pointalign.data.synth import synthesize
from pointalign.losses import next_token_loss
from pointalign.models.llm import decoder_stack
from pointalign.training.config import DataConfig, DataSource, OptimConfig, TrainConfig
from pointalign.training.distributed import DistInfo
from pointalign.training.loop import setup, train_step
from pointalign.training.stages import STAGES

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def make_run(root: Path, points: int, name: str, align: bool, steps: int):
    cfg = TrainConfig(
        stage="stage2" if align else "stage2-baseline",
        preset=name,
        trainable=STAGES["stage2" if align else "stage2-baseline"],
        data=DataConfig(root=str(root), file_points=points, mixture=(DataSource("single_round", 4),)),
        optim=OptimConfig(steps=steps, lr=1e-4, warmup_steps=0),
    )
    cfg.loss.align = align
    run = setup(cfg, root.parent / "out", CPU)
    run.model.train()
    return run


def warm_cache(run) -> None:
    for _, records in run.data.sources:
        run.cache.qformer_outputs([r.object_id for r in records], run.store.batch)


def llm_only_step(run, batch, embeds, opt) -> float:
    t = time.perf_counter()
    # the decoder and the output head at the supervised positions, as PointAlignModel.forward runs them
    hidden = decoder_stack(run.model.llm)(
        inputs_embeds=embeds, attention_mask=batch.attention_mask, use_cache=False
    ).last_hidden_state
    loss, _ = next_token_loss(hidden, batch.labels, run.model.llm.get_output_embeddings())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t


def child(args) -> None:
    """Train one variant and print its median step time and peak RSS as JSON."""
    run = make_run(Path(args.root), args.points, args.preset, args.variant == "pointalign", 1000)
    warm_cache(run)
    train_step(run, run.model)
    reset = reset_peak_rss()  # measure the training phase, not the model loading before it
    times = []
    for i in range(args.warmup + args.steps):
        t = time.perf_counter()
        train_step(run, run.model)
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    peak_mb = peak_rss_mb() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"median_s": statistics.median(times), "peak_mb": peak_mb, "training_phase_only": reset}))


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--variant", choices=["pointalign", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--points", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        child(args)
        return
    points = preset(args.preset).encoder.num_points
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        synthesize(root, objects_per_class=3, points=points, seed=0, val_per_class=1, test_per_class=1)
        runs = {
            "pointalign": make_run(root, points, args.preset, True, 1000),
            "baseline": make_run(root, points, args.preset, False, 1000),
        }
        for run in runs.values():
            warm_cache(run)
        times: dict[str, list[float]] = {k: [] for k in [*runs, "llm_only"]}
        base = runs["baseline"]
        lora = [p for p in base.model.llm.parameters() if p.requires_grad]
        llm_opt = torch.optim.AdamW(lora, lr=1e-4)
        for i in range(args.warmup + args.steps):
            for name, run in runs.items():
                t = time.perf_counter()
                train_step(run, run.model)
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - t)
            # the LLM-only step on the batch the baseline just trained on: same tokens, no vision side
            _, records = base.data.next_batch()
            batch = base.model.builder.collate([base.model.builder.encode(r.turns) for r in records], "right")
            embeds = base.model.llm.get_input_embeddings()(batch.input_ids).detach()
            elapsed = llm_only_step(base, batch, embeds, llm_opt)
            # and the stage-2 step on exactly that batch, for the ratio
            queries = base.cache.qformer_outputs([r.object_id for r in records], base.store.batch)
            t = time.perf_counter()
            out = base.model(batch, qformer_out=queries)
            base.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            base.optimizer.step()
            stage2_same = time.perf_counter() - t
            if i >= args.warmup:
                times["llm_only"].append(elapsed)
                times.setdefault("stage2_same_batch", []).append(stage2_same)
        med = {k: statistics.median(v) for k, v in times.items()}
        mem = {}
        for variant in ("pointalign", "baseline"):
            cmd = [
                sys.executable,
                __file__,
                "--variant",
                variant,
                "--root",
                str(root),
                "--points",
                str(points),
                "--preset",
                args.preset,
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
            ]
            mem[variant] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    print(
        f"preset {args.preset}, stage 2 (single_round batches of 4), {torch.get_num_threads()} threads, "
        f"median of {args.steps} steps"
    )
    print(
        f"  PointAlign train step {med['pointalign'] * 1000:8.1f} ms   baseline {med['baseline'] * 1000:8.1f} ms   "
        f"ratio {med['pointalign'] / med['baseline']:.3f} (target <= 1.05)"
    )
    pa, bl = mem["pointalign"]["peak_mb"], mem["baseline"]["peak_mb"]
    phase = "training phase" if mem["pointalign"]["training_phase_only"] else "whole process"
    print(
        f"  peak memory ({phase}) PointAlign {pa:8.0f} MB   baseline {bl:8.0f} MB   ratio {pa / bl:.3f} "
        "(target <= 1.05)"
    )
    print(
        f"  stage-2 step {med['stage2_same_batch'] * 1000:8.1f} ms   LLM-only step {med['llm_only'] * 1000:8.1f} ms   "
        f"ratio {med['stage2_same_batch'] / med['llm_only']:.3f} (target <= 1.10)"
    )


if __name__ == "__main__":
    main()
