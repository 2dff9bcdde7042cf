"""The offline judge: needs no server, and writes replies in the LLM judges' formats.

Rules:
- close-set classification: the class whose name or synonym (``pointalign.data.synth_text.SYNONYMS``; for other
  class lists, the names themselves) occurs earliest in the lower-cased output, the longest name winning at the
  same position; ``-1#NA#...`` when none occurs.
- open-vocabulary classification: ``T`` when the ground truth and the output name a class of the same synonym group;
  otherwise ``T`` when their Sentence-BERT (MiniLM) cosine similarity is at least ``OPEN_THRESHOLD``, else ``F``.
- captioning: the Sentence-BERT cosine similarity x 100, clipped to 0..100.
"""

from __future__ import annotations

import re

from pointalign.data.synth_text import SYNONYMS

OPEN_THRESHOLD = 0.6


def _name_pattern(name: str) -> re.Pattern:
    return re.compile(rf"(?<![a-z]){re.escape(name.lower())}(?:s|es)?(?![a-z])")


def find_classes(text: str, groups: dict[str, list[str]]) -> list[tuple[int, int, str]]:
    """(position, -length, class) for every class name or synonym found in ``text``."""
    text = text.lower()
    found = []
    for cls, names in groups.items():
        for name in names:
            m = _name_pattern(name).search(text)
            if m:
                found.append((m.start(), -len(name), cls))
    return sorted(found)


def closed_reply(output: str, class_names: list[str]) -> str:
    groups = {c: SYNONYMS.get(c, [c]) for c in class_names}
    found = find_classes(output, groups)
    if not found:
        return "-1#NA#no class name in the output"
    cls = found[0][2]
    return f"{class_names.index(cls)}#{cls}#first class named in the output"


def open_replies(ground_truths: list[str], outputs: list[str], sbert: str = "minilm") -> list[str]:
    from pointalign.eval.metrics import sbert_similarity

    replies: list[str | None] = []
    pending = []
    for i, (gt, out) in enumerate(zip(ground_truths, outputs)):
        gt_classes = {c for _, _, c in find_classes(gt, SYNONYMS)}
        out_classes = {c for _, _, c in find_classes(out, SYNONYMS)}
        shared = gt_classes & out_classes
        if shared:
            replies.append(f"T#both name {sorted(shared)[0]}")
        else:
            replies.append(None)
            pending.append(i)
    if pending:
        sims = sbert_similarity([ground_truths[i] for i in pending], [outputs[i] for i in pending], sbert)
        for i, sim in zip(pending, sims):
            verdict = "T" if sim >= 100 * OPEN_THRESHOLD else "F"
            replies[i] = f"{verdict}#sentence similarity {sim:.1f}"
    return replies


def caption_replies(ground_truths: list[str], outputs: list[str], sbert: str = "minilm") -> list[str]:
    from pointalign.eval.metrics import sbert_similarity

    sims = sbert_similarity(ground_truths, outputs, sbert)
    return [f"{int(round(min(100.0, max(0.0, s))))}#sentence similarity" for s in sims]


def offline_replies(sbert: str = "minilm"):
    """A ``reply_fn`` for ``run_judge``."""

    def reply_fn(kind: str, results: list[dict], class_names: list[str]) -> list[str]:
        outputs = [r["model_output"] for r in results]
        if kind == "closed":
            return [closed_reply(o, class_names) for o in outputs]
        gts = [str(r["ground_truth"]) for r in results]
        if kind == "open":
            return open_replies(gts, outputs, sbert)
        return caption_replies(gts, outputs, sbert)

    return reply_fn
