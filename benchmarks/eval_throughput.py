"""Evaluation throughput on cpu-small: objects/s by batch size, and with the LoRA adapters merged, in one run.

    python benchmarks/eval_throughput.py [--objects 32] [--new-tokens 32] [--batches 1 8 32]

Every object generates exactly ``--new-tokens`` tokens (greedy, min = max), so every setting does the same work; the
data is a small embedded dataset generated into a temporary folder. Prints objects/s per batch size with LoRA
unmerged (peft's adapters run beside each base layer, as in training), then at the largest batch with the adapters
merged into the base weights (``llm.merge_lora``, what ``load_model(for_inference=True)`` does) and the ratio, and
whether the merged model's answers equal the unmerged ones; last, the merged model under bf16 autocast (what
``Plan.precision`` "auto" picks where bf16 is faster, as on this project's host) against fp32, and how many answers
stay the same (random-weight answers: the trained model's are compared in the README); and under
``inference_autocast`` (each weight cast to bf16 once, as evaluation runs), which must give the same answers.
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
from pointalign.models.llm import merge_lora
from pointalign.training.precision import inference_autocast

QUESTION = "Caption this 3D model in detail."


def objects_per_s(model, clouds: torch.Tensor, batch: int, gen: GenerationConfig) -> tuple[float, list[str]]:
    answers: list[str] = []
    t = time.perf_counter()
    for i in range(0, len(clouds), batch):
        chunk = clouds[i : i + batch]
        answers += model.generate(chunk, [QUESTION] * len(chunk), config=gen)
    return len(clouds) / (time.perf_counter() - t), answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--objects", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    args = ap.parse_args()
    cfg = preset(args.preset)
    torch.manual_seed(0)
    model = build_model(cfg, for_inference=True).eval()
    with torch.no_grad():  # non-zero LoRA deltas, as after training, so that merging changes the weights
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.01)
    gen = GenerationConfig(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, num_beams=1, do_sample=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        per_class = max(1, -(-args.objects // 40))
        synthesize(
            root,
            objects_per_class=per_class + 2,
            points=cfg.encoder.num_points,
            val_per_class=per_class,
            test_per_class=1,
        )
        items = load_items("caption", root, cfg.encoder.num_points, cfg.encoder.num_points)[: args.objects]
        clouds = torch.stack([it.points() for it in items])
    model.generate(clouds[:2], [QUESTION] * 2, config=gen)  # warm-up
    print(
        f"preset {args.preset}, {len(clouds)} objects, {args.new_tokens} new tokens each, greedy, "
        f"{torch.get_num_threads()} threads"
    )
    rates = {}
    for bs in args.batches:
        rates[bs], unmerged = objects_per_s(model, clouds, bs, gen)
        print(f"  LoRA unmerged, batch {bs}: {rates[bs]:.2f} objects/s ({rates[bs] / rates[args.batches[0]]:.2f}x)")
    model.llm = merge_lora(model.llm)
    merged_rate, merged = objects_per_s(model, clouds, args.batches[-1], gen)
    print(
        f"  LoRA merged, batch {args.batches[-1]}: {merged_rate:.2f} objects/s "
        f"({merged_rate / rates[args.batches[-1]]:.2f}x the unmerged); "
        f"same answers: {sum(a == b for a, b in zip(merged, unmerged))} of {len(merged)}"
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.generate(clouds[:2], [QUESTION] * 2, config=gen)  # warm-up of the bf16 kernels
        bf16_rate, in_bf16 = objects_per_s(model, clouds, args.batches[-1], gen)
    print(
        f"  LoRA merged, batch {args.batches[-1]}, bf16 autocast: {bf16_rate:.2f} objects/s "
        f"({bf16_rate / merged_rate:.2f}x fp32); same answers: {sum(a == b for a, b in zip(in_bf16, merged))} "
        f"of {len(merged)}"
    )
    with inference_autocast("bf16", "cpu", model):  # what eval and reproduce run: each weight cast once
        cached_rate, cached = objects_per_s(model, clouds, args.batches[-1], gen)
    print(
        f"  the same with the casts cached (inference_autocast): {cached_rate:.2f} objects/s "
        f"({cached_rate / bf16_rate:.2f}x autocast alone); same answers: "
        f"{sum(a == b for a, b in zip(cached, in_bf16))} of {len(merged)}"
    )


if __name__ == "__main__":
    main()
