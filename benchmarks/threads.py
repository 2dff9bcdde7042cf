"""How cpu-small's work in fp32 slows from two threads to one: a way to stand in for a slower host.

    python benchmarks/threads.py [--steps 3]

On this project's 2-core host, one thread runs the probe Linear's fp32 forward pass (``auto``'s matmul, 680 x 576 ->
1536) in about the time the slower host of the same kind needs with two (13.5 ms there). Each thread count runs in a
process of its own (``OMP_NUM_THREADS``), two threads first, then one: the probe forward, then the median of ``--steps``
(after one warm-up) of three kinds of work the quickstart spends its time on, all in fp32 with random weights
(the LLM is the packaged SmolLM2-135M):
- a stage-0 step: encoder, Q-Former, both contrastive losses and backward, 32 random clouds;
- an LLM step: a stage-2 forward and backward (LoRA), 8 dialogues of a caption and a short answer;
- generation: 32 greedy tokens for 16 clouds.
Prints each time per thread count and the ratio one thread / two threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from pointalign.config import GenerationConfig, preset
from pointalign.data.shapes import SHAPES, caption, sample_shape
from pointalign.models.builders import build_model
from pointalign.training.contrastive import ContrastiveHead, ContrastiveModule, QueryHead, clip_loss
from pointalign.training.precision import PROBE_IN, PROBE_OUT, PROBE_ROWS
from pointalign.training.stages import STAGES, apply_trainable


def median_time(fn, steps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(steps: int) -> dict[str, float]:
    """The four timings (s) at this process's thread count."""
    torch.manual_seed(0)
    layer, x = torch.nn.Linear(PROBE_IN, PROBE_OUT), torch.randn(PROBE_ROWS, PROBE_IN)  # (L, D)
    with torch.no_grad():
        probe = min(median_time(lambda: layer(x), 1) for _ in range(20))  # the fastest, as auto's probe
    cfg = preset("cpu-small")
    model = build_model(cfg)
    head, query_head = ContrastiveHead(cfg.encoder.trans_dim, 384, 0.07), QueryHead(cfg.qformer.hidden_size, 384, 0.07)
    contrastive = ContrastiveModule(model, head, query_head).train()
    clouds = torch.rand(32, cfg.encoder.num_points, 6)  # (B, N, 6)
    texts = torch.nn.functional.normalize(torch.randn(32, 384), dim=-1)  # (B, 384)

    def stage0_step() -> None:
        emb, queries, _ = contrastive(clouds)
        loss = clip_loss(emb, texts, head.logit_scale) + clip_loss(queries, texts, query_head.logit_scale)
        contrastive.zero_grad(set_to_none=True)
        loss.backward()

    stage0 = median_time(stage0_step, steps)  # before stage 2's freezing, which leaves the vision side no gradient
    apply_trainable(model, STAGES["stage2"])
    model.train()
    objects = [(SHAPES[i % 4], colour) for i, colour in enumerate(["red", "blue", "green", "yellow"] * 2)]
    points = torch.stack(
        [torch.from_numpy(sample_shape(s, c, cfg.encoder.num_points, seed=i)) for i, (s, c) in enumerate(objects)]
    )  # (8, N, 6)
    dialogues = [[("Caption this 3D model in detail.", caption(s, c))] for s, c in objects]
    batch = model.builder.collate([model.builder.encode(d) for d in dialogues], "right")

    def llm_step() -> None:
        model.zero_grad(set_to_none=True)
        model(batch, points=points).loss.backward()

    model.eval()
    generation = GenerationConfig(max_new_tokens=32, min_new_tokens=32, num_beams=1, do_sample=False)
    with torch.no_grad():
        generate = median_time(lambda: model.generate(clouds[:16], ["What is this?"] * 16, config=generation), steps)
    model.train()
    return {
        "probe forward (ms)": probe * 1000,
        "stage-0 step (s)": stage0,
        "LLM step (s)": median_time(llm_step, steps),
        "generation, 16 x 32 tokens (s)": generate,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.steps)))
        return
    results = {}
    for threads in (2, 1):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--steps", str(args.steps)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results[threads] = json.loads(out.strip().splitlines()[-1])
    print(f"cpu-small in fp32, one thread against two (median of {args.steps})")
    for key in results[2]:
        one, two = results[1][key], results[2][key]
        print(f"  {key:32s} 2 threads {two:8.2f}   1 thread {one:8.2f}   1 / 2 = {one / two:.2f}x")


if __name__ == "__main__":
    main()
