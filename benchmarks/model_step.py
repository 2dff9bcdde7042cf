"""Forward + backward time of one stage-2 training step, PointAlign vs baseline (no alignment loss).

    python benchmarks/model_step.py [--preset cpu-small] [--batch-size 4] [--steps 8] [--warmup 2]

Both models are built from the same seed; steps alternate between them so that machine noise hits both alike.
Prints the median step time of each and their ratio (the alignment overhead; target <= 1.05).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pointalign.config import preset
from pointalign.data.shapes import SHAPES, caption, sample_shape
from pointalign.models.builders import build_model
from pointalign.training.stages import STAGES, apply_trainable

QUESTIONS = ["What is this?", "Caption this 3D model in detail.", "Describe the object.", "What colour is it?"]
ANSWER_TAIL = " It has a smooth surface, a uniform colour and no other parts attached to it."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)

    models = {}
    for name, overrides in (("pointalign", []), ("baseline", ["align.enabled=false"])):
        model = build_model(preset(args.preset, overrides))
        apply_trainable(model, STAGES["stage2" if name == "pointalign" else "stage2-baseline"])
        model.train()
        models[name] = model
    cfg = models["pointalign"].config
    colours = ["red", "blue", "green", "yellow"]
    objects = [(SHAPES[i % 4], colours[i % 4]) for i in range(args.batch_size)]
    points = torch.stack(
        [torch.from_numpy(sample_shape(s, c, cfg.encoder.num_points, seed=i)) for i, (s, c) in enumerate(objects)]
    )
    builder = models["pointalign"].builder
    dialogues = [[(QUESTIONS[i % 4], caption(s, c) + ANSWER_TAIL)] for i, (s, c) in enumerate(objects)]
    batch = builder.collate([builder.encode(d) for d in dialogues], "right")

    times: dict[str, list[float]] = {name: [] for name in models}
    for step in range(args.warmup + args.steps):
        for name, model in models.items():
            model.zero_grad(set_to_none=True)
            t = time.perf_counter()
            out = model(batch, points=points)
            out.loss.backward()
            elapsed = time.perf_counter() - t
            if step >= args.warmup:
                times[name].append(elapsed)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(
        f"preset {args.preset}, batch {args.batch_size}, {batch.input_ids.shape[1]} tokens/sample, "
        f"{torch.get_num_threads()} threads, median of {args.steps} steps"
    )
    for name in models:
        print(f"  {name:<11} forward+backward {med[name] * 1000:8.1f} ms")
    print(f"  alignment overhead (pointalign / baseline): {med['pointalign'] / med['baseline']:.3f}")


if __name__ == "__main__":
    main()
