"""The probes' LLM pass on cpu-small: the whole "What is this?" generation prompt against the prompt cut after the
point tokens (``analysis.probe.prompt_forward(through_points=True)``, what ``point_states`` runs for the class and
facts probes), in fp32 and under bf16 autocast.

    python benchmarks/probe_prompt.py [--clouds 64] [--rounds 3]

The LLM is the packaged SmolLM2-135M, the vision side randomly initialised (its cost is the same); ``--clouds``
random clouds in batches of 16, as ``point_states`` reads them. Prints the fastest of ``--rounds`` rounds of each
(after one warm-up round each, the two alternating), their ratio, and the largest difference between the two passes'
point-token states (the decoder is causal, so only float rounding separates them).
"""

from __future__ import annotations

import argparse
import time

import torch

from pointalign.analysis.probe import prompt_forward
from pointalign.config import preset
from pointalign.models.builders import build_model
from pointalign.training.precision import inference_autocast

BATCH = 16  # point_states' default batch


def run(model, clouds: torch.Tensor, through_points: bool) -> tuple[float, list[torch.Tensor]]:
    start = time.perf_counter()
    states = []
    for i in range(0, len(clouds), BATCH):
        batch, _, out = prompt_forward(
            model, clouds[i : i + BATCH], through_points=through_points, output_hidden_states=True
        )
        rows = torch.arange(len(batch.input_ids))[:, None]
        states.append(out.hidden_states[-1][rows, batch.point_positions].float())  # (B, Q, D)
    return time.perf_counter() - start, states


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clouds", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = preset("cpu-small")
    model = build_model(cfg).eval()
    clouds = torch.rand(args.clouds, cfg.encoder.num_points, 6)
    for precision in ("fp32", "bf16"):
        best = {False: float("inf"), True: float("inf")}
        with torch.no_grad(), inference_autocast(precision, "cpu", model):
            for r in range(args.rounds + 1):
                results = {cut: run(model, clouds, cut) for cut in (False, True)}
                if r:  # round 0 warms up
                    best = {cut: min(best[cut], results[cut][0]) for cut in best}
        diff = max(float((a - b).abs().max()) for a, b in zip(results[False][1], results[True][1]))
        print(
            f"{precision}: whole prompt {best[False]:.2f} s, cut after the point tokens {best[True]:.2f} s "
            f"({args.clouds} clouds): {best[False] / best[True]:.2f}x; largest state difference {diff:.2e}"
        )


if __name__ == "__main__":
    main()
