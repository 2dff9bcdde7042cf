"""The cost of an LLM training step on cpu-small (stage 1b: brief captions, batches of 8), by what it computes.

    python benchmarks/llm_step.py [--steps 6] [--warmup 2] [--precision auto]

Three steps on the same batches (forward, backward, AdamW; the frozen vision side's features computed once):
- ``dropout 0.05, full head``: LoRA dropout 0.05 (peft draws a mask for the input of every adapted layer) and the
  output head over every position, as cpu-small trained before;
- ``dropout 0, full head``: the same without LoRA dropout;
- ``dropout 0, supervised head``: the output head only at the positions that predict an answer token
  (``losses.next_token_loss``), as cpu-small trains now;
and, as the third with LoRA on attention only, what the MLP adapters cost; and the third with the LLM's eager
attention instead of transformers' default sdpa (``training.precision.llm_attention`` picks eager under bf16 on a
CPU). Medians of ``--steps`` steps after
``--warmup``, the variants alternating so that machine noise hits all alike. The data is a small embedded dataset
generated into a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pointalign.config import preset
from pointalign.data.synth import synthesize
from pointalign.models.builders import build_model
from pointalign.models.pointalign import position_ids
from pointalign.training.config import DataConfig, DataSource
from pointalign.training.data import MixtureData, PointStore
from pointalign.training.distributed import DistInfo
from pointalign.training.precision import resolve_precision, set_llm_attention
from pointalign.training.stages import STAGES, apply_trainable

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


def make_model(dropout: float, targets: tuple[str, ...] | None, attention: str = "sdpa"):
    cfg = preset("cpu-small")
    llm = dataclasses.replace(cfg.llm, lora_dropout=dropout, lora_targets=targets or cfg.llm.lora_targets)
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(cfg, llm=llm))
    apply_trainable(
        model, dataclasses.replace(STAGES["stage1b"], bridge="frozen", qformer="frozen", query_tokens="frozen")
    )
    model.train()
    set_llm_attention(model, attention)
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)


def step(model, opt, batch, clouds, full_head: bool) -> float:
    t = time.perf_counter()
    if full_head:  # the former step: logits (B, L, V) at every position
        embeds = model.embed(batch, model.encode_points(clouds).point_tokens)
        logits = model.llm(
            inputs_embeds=embeds,
            attention_mask=batch.attention_mask,
            position_ids=position_ids(batch.attention_mask),
            use_cache=False,
        ).logits
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch.labels[:, 1:].flatten())
    else:
        loss = model(batch, points=clouds).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = ap.parse_args()
    precision = resolve_precision(args.precision, CPU)
    points = preset("cpu-small").encoder.num_points
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        synthesize(root, objects_per_class=3, points=points, seed=0, val_per_class=1, test_per_class=1)
        data_cfg = DataConfig(root=str(root), file_points=points, mixture=(DataSource("brief", 8),))
        data = MixtureData(data_cfg, 0, 0, 1)
        store = PointStore(data.folder, points, data_cfg.resample)
        batches = []
        for _ in range(args.warmup + args.steps):
            _, records = data.next_batch()
            batches.append((records, store.batch([r.object_id for r in records])))
        variants = {
            "dropout 0.05, full head": (make_model(0.05, None), True),
            "dropout 0, full head": (make_model(0.0, None), True),
            "dropout 0, supervised head": (make_model(0.0, None), False),
            "the same, LoRA on attention only": (make_model(0.0, ATTENTION), False),
            "dropout 0, supervised head, eager": (make_model(0.0, None, attention="eager"), False),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        bf16 = precision.chosen == "bf16"
        for i, (records, clouds) in enumerate(batches):
            for name, ((model, opt), full) in variants.items():
                batch = model.builder.collate([model.builder.encode(r.turns) for r in records], "right")
                with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
                    elapsed = step(model, opt, batch, clouds, full)
                if i >= args.warmup:
                    times[name].append(elapsed)
    med = {k: statistics.median(v) for k, v in times.items()}
    first = med["dropout 0.05, full head"]
    print(
        f"cpu-small stage-1b step (brief, batch 8), {precision.chosen}, {torch.get_num_threads()} threads, "
        f"median of {args.steps}"
    )
    for name, s in med.items():
        print(f"  {name:34s} {s * 1000:8.1f} ms   {first / s:.2f}x the first")


if __name__ == "__main__":
    main()
