"""Attention on a CPU: torch's fused kernel (``F.scaled_dot_product_attention``) against explicit matmuls and softmax,
forward + backward, in fp32 and under bf16 autocast, at the shapes cpu-small trains.

    python benchmarks/attention.py [--repeats 8]

Shapes: the point encoder's self-attention in stage 0 (32 clouds, 4 heads, 65 tokens, 64 per head) and the LLM's
(SmolLM2-135M: 9 heads of 64, a stage-1b batch of 8 brief captions of about 78 tokens, causal). Prints the fastest of
``--repeats`` rounds of each (the first round warms up), the two alternating, and the ratio fused / explicit. Then
a whole cpu-small stage-0 step under bf16 autocast (encoder, Q-Former, both contrastive losses, backward, AdamW;
random weights, 32 random clouds), the point encoder's attention fused or explicit, alternating: medians of
``--steps`` after two warm-up steps each. The point encoder takes the explicit path under CPU autocast
(``models/point_encoder.py``), the LLM eager attention (``training.precision.llm_attention``);
``benchmarks/llm_step.py`` times the whole LLM step both ways.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from pointalign.config import preset
from pointalign.models import point_encoder
from pointalign.models.builders import build_model
from pointalign.training.contrastive import ContrastiveHead, ContrastiveModule, QueryHead, clip_loss

SHAPES = {"point encoder": (32, 4, 65, 64, False), "LLM": (8, 9, 78, 64, True)}  # (B, heads, T, head dim, causal)


def explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)  # (B, h, T, T)
    if causal:
        t = q.shape[-2]
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return scores.float().softmax(dim=-1).to(v.dtype) @ v


def fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def timed(fn, qkv: list[torch.Tensor], causal: bool, bf16: bool) -> float:
    for t in qkv:
        t.grad = None
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = fn(*(t.to(torch.bfloat16) if bf16 else t for t in qkv), causal)
    out.float().square().mean().backward()
    return time.perf_counter() - start


def fused_point_attention(self: point_encoder.Attention, x: torch.Tensor) -> torch.Tensor:
    """The point encoder's attention with the fused kernel whatever the precision."""
    b, t, c = x.shape
    qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
    y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, h, T, c/h)
    return self.proj(y.transpose(1, 2).reshape(b, t, c))


def stage0_steps(steps: int) -> None:
    cfg = preset("cpu-small")
    torch.manual_seed(0)
    model = build_model(cfg)
    head = ContrastiveHead(cfg.encoder.trans_dim, 384, 0.07)
    query_head = QueryHead(cfg.qformer.hidden_size, 384, 0.07)
    module = ContrastiveModule(model, head, query_head).train()
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    clouds = torch.rand(32, cfg.encoder.num_points, 6)
    texts = F.normalize(torch.randn(32, 384), dim=-1)
    forwards = {"fused": fused_point_attention, "explicit": point_encoder.Attention.forward}
    times: dict[str, list[float]] = {name: [] for name in forwards}
    try:
        for i in range(steps + 2):
            for name, forward in forwards.items():
                point_encoder.Attention.forward = forward
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    emb, queries, _ = module(clouds)
                loss = clip_loss(emb.float(), texts, head.logit_scale) + clip_loss(
                    queries.float(), texts, query_head.logit_scale
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if i >= 2:
                    times[name].append(time.perf_counter() - start)
    finally:
        point_encoder.Attention.forward = forwards["explicit"]
    f, e = (statistics.median(v) * 1000 for v in times.values())
    print(
        f"stage-0 step (bf16, batch 32): point attention fused {f:.0f} ms, explicit {e:.0f} ms, "
        f"fused / explicit {f / e:.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    torch.manual_seed(0)
    for name, (b, h, t, d, causal) in SHAPES.items():
        qkv = [torch.randn(b, h, t, d, requires_grad=True) for _ in range(3)]
        for bf16 in (False, True):
            times: dict[str, list[float]] = {"fused": [], "explicit": []}
            for _ in range(args.repeats + 1):
                times["fused"].append(timed(fused, qkv, causal, bf16))
                times["explicit"].append(timed(explicit, qkv, causal, bf16))
            f, e = (min(v[1:]) * 1000 for v in times.values())
            print(
                f"{name} (B {b}, {h} heads, T {t}), {'bf16' if bf16 else 'fp32'}: fused {f:.2f} ms, explicit "
                f"{e:.2f} ms, fused / explicit {f / e:.2f}"
            )
    stage0_steps(args.steps)


if __name__ == "__main__":
    main()
