"""The three judge tasks of the reference evaluation: prompts and reply parsing (REFERENCE_SPEC 6).

- open-free-form-classification (Objaverse): reply ``T`` or ``F``, then ``#`` and a short reason.
- modelnet-close-set-classification: reply ``index#class#reason``; ``-1#NA#Cannot infer`` when impossible.
- object-captioning: reply ``score#reason`` with a score 0-100 for how many aspects of the human caption the model's
  caption covers.
A reply that does not parse is INVALID; what that means for each score is in ``pointalign.eval.judge``.
"""

from __future__ import annotations

import re

JudgeKind = str  # "open" | "closed" | "caption"

OPEN_SYSTEM = (
    "You are a strict evaluator of 3D object classification. You are given a human-written description of a 3D "
    "object (the ground truth) and a model's answer about the same object. Decide whether the model names the same "
    "kind of object as the ground truth. Judge the main category only: ignore style words such as 'cartoon', "
    "'toy', 'model' or 'low-poly', and accept synonyms and more general or more specific names of the same thing."
    "\nReply with exactly one letter, T (same object) or F (different object), then '#', then a reason of at most 20 "
    "words.\nExample:\nGround truth: a wooden spiral staircase with a railing.\nModel: wooden stairs\nReply: T#both "
    "describe stairs.\nExample:\nGround truth: a red toy van.\nModel: a small truck\nReply: T#a van and a truck are "
    "both road vehicles of the same kind."
)

CLOSED_SYSTEM_HEAD = (
    "You are a strict evaluator of 3D object classification. Given a model's description of a 3D object, pick the "
    "ONE class from the list below that the description names. Reply exactly as index#class#reason, with a reason "
    "of at most 10 words. If the description names none of the classes, reply -1#NA#Cannot infer.\nClasses:\n"
)
CLOSED_SYSTEM_TAIL = (
    "\nExamples:\nDescription: a truck with four wheels -> 7#car#a truck is closest to car\n"
    "Description: a green leaf in a pot -> 26#plant#leaves in a pot are a plant\n"
    "Description: a piece of furniture with a flat top and legs -> 33#table#flat top with legs\n"
    "Description: I cannot tell what this is -> -1#NA#Cannot infer"
)

CAPTION_SYSTEM = (
    "You are a strict evaluator of 3D object captions. First identify the aspects of the human caption (object "
    "type, colour, shape, parts, counts, material). Then score from 0 to 100 how many of those aspects the model's "
    "caption states correctly (partial credit allowed; wrong statements earn nothing). Reply exactly as "
    "score#reason, with a reason of fewer than 15 words.\nExample:\nHuman: a white and brown skeleton.\nModel: a "
    "cartoon robot in white.\nReply: 50#the colour matches but a robot is not a skeleton."
)

CLOSED_PATTERN = re.compile(r"(-?\d+)#([^#]*)#(.*)", re.S)


def closed_system(class_names: list[str]) -> str:
    return CLOSED_SYSTEM_HEAD + "\n".join(f"{i}: {n}" for i, n in enumerate(class_names)) + CLOSED_SYSTEM_TAIL


def messages(kind: str, ground_truth: str, output: str, class_names: list[str] | None = None) -> list[dict]:
    """Chat messages for one judged item."""
    if kind == "open":
        return [
            {"role": "system", "content": OPEN_SYSTEM},
            {"role": "user", "content": f"Ground truth: {ground_truth}\nModel: {output}\nReply:"},
        ]
    if kind == "closed":
        if not class_names:
            raise ValueError("the close-set judge needs the class names")
        return [
            {"role": "system", "content": closed_system(class_names)},
            {"role": "user", "content": f"Description: {output} ->"},
        ]
    if kind == "caption":
        return [
            {"role": "system", "content": CAPTION_SYSTEM},
            {"role": "user", "content": f"Human: {ground_truth}\nModel: {output}\nReply:"},
        ]
    raise ValueError(f"unknown judge kind {kind!r}")


def parse_open(reply: str) -> int | None:
    """1 (T), 0 (F) or None (invalid)."""
    text = reply.strip()
    if text[:1] in ("T", "F"):
        return 1 if text[0] == "T" else 0
    return None


def parse_closed(reply: str, num_classes: int) -> int | None:
    """The class index, or None for NA / -1 / out of range / malformed."""
    m = CLOSED_PATTERN.search(reply.strip())
    if m is None:
        return None
    index = int(m.group(1))
    return index if 0 <= index < num_classes else None


def parse_caption(reply: str) -> int | None:
    """The leading integer score in 0..100, or None."""
    m = re.match(r"\s*(-?\d+)", reply)
    if m is None:
        return None
    score = int(m.group(1))
    return score if 0 <= score <= 100 else None
