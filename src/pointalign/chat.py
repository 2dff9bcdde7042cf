"""``pointalign chat --checkpoint DIR --points FILE [--ask "..."]``: a multi-turn terminal chat about one object."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from pointalign.config import GenerationConfig
from pointalign.pipeline import PointAlignPipeline

QUIT = {"exit", "quit", ":q"}


def chat(
    checkpoint: str | Path,
    points: str | Path,
    ask: str | None = None,
    generation: GenerationConfig | None = None,
    input_fn: Callable[[str], str] = input,
    print_fn: Callable[[str], None] = print,
    precision: str = "fp32",
) -> list[tuple[str, str]]:
    """Answer ``ask`` once, or chat until an empty line, ``exit`` or end of input; returns the dialogue. The model
    runs in ``precision`` ("fp32", "bf16" or "auto", as ``PointAlignPipeline``)."""
    pipe = PointAlignPipeline.from_pretrained(checkpoint, generation, precision)
    if precision == "auto":  # on stderr: the answers alone go to stdout
        print(f"chat: {pipe.choice.describe()}", file=sys.stderr)
    cloud = pipe.prepare(points)  # a bad file fails here, before any question
    if ask is not None:
        answer = pipe(cloud, ask)
        print_fn(answer)
        return [(ask, answer)]
    print_fn(f"Chatting about {points} ({cloud.shape[0]} points). 'reset' starts over; an empty line or 'exit' ends.")
    history: list[tuple[str, str]] = []
    while True:
        try:
            question = input_fn("you> ").strip()
        except EOFError:
            break
        if not question or question.lower() in QUIT:
            break
        if question.lower() == "reset":
            history = []
            print_fn("(the conversation starts over)")
            continue
        answer = pipe(cloud, question, history=history)
        print_fn(f"model> {answer}")
        history.append((question, answer))
    return history
