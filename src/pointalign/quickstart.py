"""``pointalign quickstart``: the model stack end to end on a few coloured primitives.

Builds a preset, trains the bridge, Q-Former, projectors and LLM LoRA with the alignment loss for a few steps on
four captioned primitives, prints the losses, saves an inference checkpoint, reloads it and answers "What is
this?" for each shape. It is a smoke run of every part, not a training recipe.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from pointalign.checkpoint import load_model, save_checkpoint
from pointalign.config import GenerationConfig, ModelConfig
from pointalign.data.shapes import caption, sample_shape
from pointalign.models.builders import build_model
from pointalign.training.stages import STAGES, apply_trainable

_OBJECTS = [("sphere", "red"), ("cube", "blue"), ("cylinder", "green"), ("cone", "yellow")]
QUESTION = "What is this?"


def run_quickstart(cfg: ModelConfig, steps: int, lr: float, out: Path, print_fn=print) -> dict[str, object]:
    """Train ``steps`` stage-2 steps, save + reload for inference, generate; returns losses and answers."""
    t0 = time.perf_counter()
    model = build_model(cfg)
    # The bridge, the whole Q-Former (its cross-attention starts random), the projector, LLM LoRA + norms and the
    # alignment projector.
    align = "full" if cfg.align.enabled else "frozen"
    policy = dataclasses.replace(STAGES["stage1b"], qformer="full", align_projector=align)
    apply_trainable(model, policy)
    print_fn(f"built {cfg.preset} in {time.perf_counter() - t0:.1f}s")
    n = cfg.encoder.num_points
    points = torch.from_numpy(np.stack([sample_shape(s, c, n, seed=i) for i, (s, c) in enumerate(_OBJECTS)]))
    items = [model.builder.encode([(QUESTION, caption(s, c))]) for s, c in _OBJECTS]
    batch = model.builder.collate(items, padding_side="right")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for step in range(1, steps + 1):
        t = time.perf_counter()
        out_ = model(batch, points=points)
        opt.zero_grad(set_to_none=True)
        out_.loss.backward()
        opt.step()
        align = f"{out_.align_loss.item():.4f}" if out_.align_loss is not None else "off"
        losses.append(out_.loss.item())
        print_fn(
            f"step {step}/{steps}  loss {out_.loss.item():.4f}  ntp {out_.ntp_loss.item():.4f}  align {align}  "
            f"{time.perf_counter() - t:.2f}s"
        )
    save_checkpoint(model, out, cfg, what="full", for_inference=True)
    reloaded, _ = load_model(out, for_inference=True)
    answers = reloaded.generate(points, [QUESTION] * len(_OBJECTS), config=GenerationConfig.greedy(24))
    for (s, c), a in zip(_OBJECTS, answers):
        print_fn(f"{c} {s}: {a!r}")
    print_fn(f"inference checkpoint: {out} ({time.perf_counter() - t0:.1f}s in all)")
    return {"losses": losses, "answers": answers}
