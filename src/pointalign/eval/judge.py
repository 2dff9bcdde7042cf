"""``pointalign judge RESULTS.json --judge {offline,openai}``: score a result file into ``_evaluated_<judge>.json``.

Both judges produce replies in the reference's formats (``T#...``, ``index#class#...``, ``score#...``), parsed and
counted by the same code, so their scores mean the same thing:

- open-vocabulary classification: ``accuracy`` = correct / (total - invalid) x 100 (the reference's figure),
  ``raw_accuracy`` = correct / total x 100.
- close-set classification: an invalid reply (unparseable, NA, -1, out of range) draws a random class (seed 0, in
  item order) and is flagged; ``accuracy`` = (correct + random hits) / total x 100 (the reference's figure),
  ``clean_accuracy`` = correct among valid / (total - invalid) x 100. Each invalid reply is counted once.
- captioning: ``average_score`` = sum of valid scores / (total - invalid).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pointalign.errors import DataError, JudgeError
from pointalign.eval import judge_prompts as jp


def judge_kind(path: Path, data: dict) -> str:
    name = path.name
    if name.startswith("ModelNet_classification"):
        return "closed"
    if "_captioning_" in name:
        return "caption"
    if "_classification_" in name:
        return "open"
    raise DataError(f"{path}: cannot tell the task from the file name (expected a pointalign/PointLLM result file)")


def read_results(path: str | Path) -> tuple[dict, list[dict]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list) or not results:
        raise DataError(f"{path}: no results to judge")
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not {"object_id", "ground_truth", "model_output"} <= set(r):
            raise DataError(f"{path}: result {i} needs object_id, ground_truth and model_output")
    return data, results


def account(kind: str, results: list[dict], replies: list[str], num_classes: int = 40) -> dict:
    """Parse ``replies`` (one per result, in order) and compute the scores of the module docstring."""
    rows, total = [], len(results)
    if kind == "open":
        parsed = [jp.parse_open(r) for r in replies]
        invalid = sum(p is None for p in parsed)
        correct = sum(p == 1 for p in parsed)
        scores = {"accuracy": 100.0 * correct / max(1, total - invalid), "raw_accuracy": 100.0 * correct / total}
        rows = [{"correct": p, "invalid": p is None} for p in parsed]
    elif kind == "closed":
        rng = np.random.default_rng(0)
        correct = invalid = random_hits = 0
        for res, reply in zip(results, replies):
            pred = jp.parse_closed(reply, num_classes)
            flagged = pred is None
            if flagged:
                invalid += 1
                pred = int(rng.integers(num_classes))
            hit = pred == int(res["ground_truth"])
            if hit and flagged:
                random_hits += 1
            elif hit:
                correct += 1
            rows.append({"predicted": pred, "correct": int(hit), "invalid": flagged})
        scores = {
            "accuracy": 100.0 * (correct + random_hits) / total,
            "clean_accuracy": 100.0 * correct / max(1, total - invalid),
            "random_hits": random_hits,
        }
    elif kind == "caption":
        parsed = [jp.parse_caption(r) for r in replies]
        valid = [p for p in parsed if p is not None]
        invalid = total - len(valid)
        scores = {"average_score": float(sum(valid)) / max(1, len(valid))}
        rows = [{"score": -1 if p is None else p, "invalid": p is None} for p in parsed]
    else:
        raise ValueError(f"unknown judge kind {kind!r}")
    return {"total": total, "invalid": invalid, **scores, "rows": rows}


def object_scores(kind: str, rows: list[dict]) -> list[float]:
    """One score per judged item, from the ``rows`` of ``account`` (or an evaluated file's results), in order.

    Classification: 1.0 for a correct reply, 0.0 for a wrong or an invalid one, so the mean is correct / total: a
    close-set invalid reply counts 0 even when its random class hits (unlike ``accuracy``) and is not dropped (unlike
    ``clean_accuracy``); an open-vocabulary invalid reply counts 0 (unlike ``accuracy``, equal to ``raw_accuracy``).
    Captioning: the judge's score, 0 for an invalid reply (``average_score`` drops invalid replies).
    """
    if kind == "caption":
        return [0.0 if r["invalid"] else float(r["score"]) for r in rows]
    if kind in ("open", "closed"):
        return [1.0 if r["correct"] == 1 and not r["invalid"] else 0.0 for r in rows]
    raise ValueError(f"unknown judge kind {kind!r}")


def _class_names(path: Path, results: list[dict]) -> list[str]:
    """Class names for the close-set judge: from the data folder next to the results, else the label names."""
    from pointalign.data.synth import CLASSES

    names = dict((int(r["ground_truth"]), r.get("label_name")) for r in results if r.get("label_name"))
    if names and all(CLASSES[i] == n for i, n in names.items() if i < len(CLASSES)):
        return list(CLASSES)
    if names and max(names) + 1 == len(names):
        return [names[i] for i in range(len(names))]
    return list(CLASSES)


def run_judge(
    path: str | Path,
    reply_fn: Callable[[str, list[dict], list[str]], list[str | None]],
    judge_name: str,
    print_fn=print,
) -> Path:
    """Judge a result file with ``reply_fn(kind, results, class_names) -> replies`` and write the evaluated file.

    A reply of None means the judge could not be reached for that item: nothing is written and the error names how
    many items are left, so a re-run (which reuses the judge's cache) finishes them.
    """
    path = Path(path)
    data, results = read_results(path)
    kind = judge_kind(path, data)
    names = _class_names(path, results) if kind == "closed" else []
    replies = reply_fn(kind, results, names)
    missing = sum(r is None for r in replies)
    if missing:
        raise JudgeError(
            f"{path}: the judge gave no reply for {missing} of {len(results)} items; run again to "
            "finish them (finished ones are cached)"
        )
    num_classes = len(names) or 40  # what the close-set accounting draws invalid replies from
    acc = account(kind, results, replies, num_classes)
    rows = [{**res, "judge_reply": rep, **row} for res, rep, row in zip(results, replies, acc.pop("rows"))]
    out = path.with_name(f"{path.stem}_evaluated_{judge_name}.json")
    report = {"judge": judge_name, "kind": kind, "prompt": data.get("prompt"), "num_classes": num_classes, **acc}
    report["results"] = rows
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", dir=out.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(report, f, indent=1)
    os.replace(tmp, out)
    print_fn(format_table(report))
    print_fn(f"written: {out}")
    return out


def format_table(report: dict) -> str:
    keys = [k for k in ("accuracy", "clean_accuracy", "raw_accuracy", "average_score") if k in report]
    head = f"{'judge':<12}{'task':<10}{'total':>7}{'invalid':>9}" + "".join(f"{k:>16}" for k in keys)
    line = f"{report['judge']:<12}{report['kind']:<10}{report['total']:>7}{report['invalid']:>9}" + "".join(
        f"{report[k]:>16.2f}" for k in keys
    )
    return f"{head}\n{line}"
