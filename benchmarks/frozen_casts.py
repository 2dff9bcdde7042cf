"""A bf16 LLM training step with the frozen base weights held in bf16 (``FrozenCasts``) against autocast's cast of
every frozen weight at every step, on cpu-small's stage 2 (PointAlign), one batch.

    python benchmarks/frozen_casts.py [--preset cpu-small] [--steps 8] [--warmup 2] [--batch 8]

Prints the median time of a step (forward, backward, AdamW step) each way, their ratio, and whether the two give
the same loss and the same gradients of the trainable weights bit for bit (they should: the held weight is the
cast autocast would make). The two ways alternate step by step, on the same batch and from the same weights (the
optimizer's update is undone after each step), so that machine noise hits both alike. The data is a small embedded
dataset generated into a temporary folder.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pointalign.config import preset
from pointalign.data.synth import synthesize
from pointalign.training.config import DataConfig, DataSource, OptimConfig, TrainConfig
from pointalign.training.distributed import DistInfo
from pointalign.training.loop import autocast, setup
from pointalign.training.precision import FrozenCasts, PrecisionChoice
from pointalign.training.stages import STAGES

CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    points = preset(args.preset).encoder.num_points
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        synthesize(root, objects_per_class=3, points=points, seed=0, val_per_class=1, test_per_class=1)
        cfg = TrainConfig(
            stage="stage2",
            preset=args.preset,
            trainable=STAGES["stage2"],
            data=DataConfig(root=str(root), file_points=points, mixture=(DataSource("single_round", args.batch),)),
            optim=OptimConfig(steps=1000, lr=1e-4, warmup_steps=0),
        )
        cfg.loss.align = True
        bf16 = PrecisionChoice("bf16", None, None, "benchmark")
        run = setup(cfg, Path(tmp) / "out", CPU, bf16)
        model = run.model
        model.train()
        casts = FrozenCasts(model.llm)
        _, records = run.data.next_batch()
        batch = model.builder.collate([model.builder.encode(r.turns) for r in records], padding_side="right")
        queries = run.cache.qformer_outputs([r.object_id for r in records], run.store.batch)
        trainable = [p for p in model.parameters() if p.requires_grad]
        start = [p.detach().clone() for p in trainable]
        opt_state = copy.deepcopy(run.optimizer.state_dict())

        def step() -> tuple[float, float, list[torch.Tensor]]:
            t = time.perf_counter()
            with autocast(run):
                out = model(batch, qformer_out=queries)
            run.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            grads = [p.grad.detach().clone() for p in trainable]
            run.optimizer.step()
            elapsed = time.perf_counter() - t
            with torch.no_grad():  # back to the same weights for the next step
                for p, s in zip(trainable, start):
                    p.copy_(s)
            run.optimizer.load_state_dict(opt_state)
            return elapsed, float(out.loss), grads

        times: dict[str, list[float]] = {"autocast": [], "held": []}
        results = {}
        for i in range(args.warmup + args.steps):
            for way in ("autocast", "held"):
                if way == "held":
                    casts.hold()
                elapsed, loss, grads = step()
                casts.release()
                if i >= args.warmup:
                    times[way].append(elapsed)
                results[way] = (loss, grads)
        same_loss = results["autocast"][0] == results["held"][0]
        same_grads = all(torch.equal(a, b) for a, b in zip(results["autocast"][1], results["held"][1]))
        held = sum(w.numel() for w in casts.weights)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{args.preset} stage 2 (PointAlign), batch {args.batch} x {batch.input_ids.shape[1]} tokens, bf16:")
        print(f"  frozen Linear weights held in bf16: {len(casts.weights)} tensors, {held / 1e6:.1f} M values")
        print(f"  step, autocast casting every frozen weight: {med['autocast'] * 1e3:.0f} ms (median of {args.steps})")
        print(f"  step, frozen weights held in bf16:         {med['held'] * 1e3:.0f} ms")
        print(f"  ratio autocast / held: {med['autocast'] / med['held']:.3f}")
        print(f"  same loss: {same_loss}; same gradients of the {len(trainable)} trainable tensors: {same_grads}")


if __name__ == "__main__":
    main()
