"""The point encoder's mini-PointNet: one forward + backward as matrix products over rows of points (ours) against
Point-BERT's Conv1d formulation, in fp32 and under bf16 autocast.

    python benchmarks/point_encoder.py [--preset cpu-small] [--batch 32] [--repeats 6]

Both run the same module (same weights, same BatchNorm in training mode) on the same (B, G, K, 6) groups, the two
formulations alternating; prints the fastest of ``--repeats`` rounds of each and the ratio Conv1d / ours.
"""

from __future__ import annotations

import argparse
import time

import torch

from pointalign.config import preset
from pointalign.models.point_encoder import MiniPointNet


def conv1d_forward(m: MiniPointNet, groups: torch.Tensor) -> torch.Tensor:
    """Point-BERT's formulation: Conv1d over (BG, C, K)."""
    b, g, k, f = groups.shape
    x = m.first_conv(groups.reshape(b * g, k, f).transpose(1, 2))  # (BG, w1, K)
    glob = x.max(dim=2, keepdim=True).values
    x = m.second_conv(torch.cat([glob.expand(-1, -1, k), x], dim=1))  # (BG, E, K)
    return x.max(dim=2).values.reshape(b, g, -1)


def timed(fn, m: MiniPointNet, groups: torch.Tensor, bf16: bool) -> float:
    m.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = fn(m, groups)
    out.float().square().mean().backward()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=6)
    args = ap.parse_args()
    enc = preset(args.preset).encoder
    torch.manual_seed(0)
    m = MiniPointNet(enc.point_dims, enc.encoder_dims, enc.tokenizer_widths).train()
    groups = torch.randn(args.batch, enc.num_groups, enc.group_size, enc.point_dims)
    print(f"{args.preset}: groups {tuple(groups.shape)}, widths {enc.tokenizer_widths} -> {enc.encoder_dims}")
    for bf16 in (False, True):
        times: dict[str, list[float]] = {"conv1d": [], "ours": []}
        for _ in range(args.repeats + 1):  # the first round warms up
            times["conv1d"].append(timed(conv1d_forward, m, groups, bf16))
            times["ours"].append(timed(MiniPointNet.forward, m, groups, bf16))
        conv, ours = (min(v[1:]) * 1000 for v in times.values())
        name = "bf16" if bf16 else "fp32"
        print(f"{name}: Conv1d {conv:.0f} ms, ours {ours:.0f} ms, Conv1d / ours {conv / ours:.2f}")


if __name__ == "__main__":
    main()
