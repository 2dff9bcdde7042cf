"""``pointalign eval``: the paper's benchmarks, generated into PointLLM's result-file format.

Tasks (REFERENCE_SPEC 6):
    cls-closed  close-set generative classification on the ModelNet40-format test file, prompts 0 / 1
    cls-open    open-vocabulary classification on the val-200 objects, prompts 0 / 1
    caption     captioning of the val-200 objects, prompt 2

Results go to ``<out>/evaluation/<name>.json`` as ``{"prompt": ..., "results": [{object_id, ground_truth,
model_output}, ...]}`` (ModelNet adds ``label_name``; its ``object_id`` is the index and ``ground_truth`` the label).
The file is rewritten atomically after every batch, so an interrupted run resumes without redoing finished objects.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from pointalign.config import GenerationConfig
from pointalign.data.readers import (
    PointLLMFolder,
    modelnet_cloud,
    read_annotations,
    read_class_names,
    read_modelnet_dat,
)
from pointalign.data.synth import SHAPE_NAMES_FILE, VAL_GT_FILE, modelnet_file
from pointalign.errors import ConfigError, DataError
from pointalign.models.point_encoder import reduce_points

PROMPTS = ["What is this?", "This is an object of ", "Caption this 3D model in detail."]
Task = Literal["cls-closed", "cls-open", "caption"]
TASK_PROMPTS: dict[str, tuple[int, ...]] = {"cls-closed": (0, 1), "cls-open": (0, 1), "caption": (2,)}
MAX_NEW_TOKENS = {"cls-closed": 100, "cls-open": 150, "caption": 150}  # the reference's limits


def result_name(task: str, prompt_index: int) -> str:
    if task == "cls-closed":
        return f"ModelNet_classification_prompt{prompt_index}.json"
    kind = "captioning" if task == "caption" else "classification"
    return f"PointLLM_brief_description_val_200_GT_Objaverse_{kind}_prompt{prompt_index}.json"


@dataclass
class EvalItem:
    object_id: str
    ground_truth: str | int
    points: Callable[[], torch.Tensor]  # (P, 6) cloud, loaded when needed
    label_name: str | None = None


def load_items(task: str, root: Path, num_points: int, file_points: int = 8192) -> list[EvalItem]:
    """The objects of a task, in a fixed order."""
    if task == "cls-closed":
        dat = root / "modelnet40_data" / modelnet_file(file_points)
        if not dat.is_file():
            dat = root / "modelnet40_data" / "modelnet40_test_8192pts_fps.dat"
        clouds, labels = read_modelnet_dat(dat)
        names = read_class_names(root / "modelnet40_data" / SHAPE_NAMES_FILE)
        if max(labels) >= len(names):
            raise DataError(f"{dat}: label {max(labels)} but only {len(names)} class names")
        return [
            EvalItem(
                str(i), lab, (lambda c=c: reduce_points(torch.from_numpy(modelnet_cloud(c)), num_points)), names[lab]
            )
            for i, (c, lab) in enumerate(zip(clouds, labels))
        ]
    folder = PointLLMFolder(root, file_points)
    records = read_annotations(root / "anno_data" / VAL_GT_FILE)
    return [
        EvalItem(
            r.object_id,
            r.turns[0][1],
            (lambda o=r.object_id: reduce_points(torch.from_numpy(folder.cloud(o)), num_points)),
        )
        for r in records
    ]


def spread(items: list, limit: int | None) -> list:
    """``limit`` items evenly spaced over the list (so a subset covers every class), or all of them."""
    if limit is None or limit >= len(items):
        return items
    if limit <= 0:
        raise ConfigError(f"--limit {limit}: must be positive")
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def object_ids(task: str, root: Path, file_points: int = 8192, limit: int | None = None) -> list[str]:
    """The object ids ``evaluate`` answers for ``task`` with ``limit``, in the task's order (ModelNet: the index)."""
    return [it.object_id for it in spread(load_items(task, root, 1, file_points), limit)]  # clouds are never loaded


def _atomic_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def clean_output(text: str) -> str:
    """As the reference's eval scripts: cut at '###', strip."""
    return text.split("###")[0].strip()


def evaluate(
    model,
    task: Task,
    prompt_index: int,
    root: Path,
    out: Path,
    generation: GenerationConfig | None = None,
    batch_size: int = 8,
    file_points: int = 8192,
    limit: int | None = None,
    progress: Callable | None = None,
) -> Path:
    """Generate answers for every object of ``task`` not yet in the result file; returns the file.

    With ``limit``, that many objects evenly spaced over the task's list (every class is represented).
    """
    if prompt_index not in TASK_PROMPTS[task]:
        raise ConfigError(f"--prompt-index {prompt_index}: task {task} uses prompts {TASK_PROMPTS[task]}")
    generation = generation or GenerationConfig(max_new_tokens=MAX_NEW_TOKENS[task], min_new_tokens=10)
    prompt = PROMPTS[prompt_index]
    path = out / "evaluation" / result_name(task, prompt_index)
    results: list[dict] = []
    if path.is_file():
        data = json.loads(path.read_text())
        if data.get("prompt") != prompt:
            raise ConfigError(f"{path}: holds results for another prompt ({data.get('prompt')!r})")
        results = data["results"]
    items = spread(load_items(task, root, model.config.encoder.num_points, file_points), limit)
    done = {str(r["object_id"]) for r in results}
    todo = [it for it in items if it.object_id not in done]
    bar = (
        progress(total=len(items), initial=len(items) - len(todo), desc=f"{task} p{prompt_index}") if progress else None
    )
    device = next(model.parameters()).device
    try:
        for i in range(0, len(todo), batch_size):
            chunk = todo[i : i + batch_size]
            points = torch.stack([it.points() for it in chunk]).to(device)
            answers = model.generate(points, [prompt] * len(chunk), config=generation)
            for it, ans in zip(chunk, answers):
                row = {
                    "object_id": it.object_id if task != "cls-closed" else int(it.object_id),
                    "ground_truth": it.ground_truth,
                    "model_output": clean_output(ans),
                }
                if it.label_name is not None:
                    row["label_name"] = it.label_name
                results.append(row)
            _atomic_json(path, {"prompt": prompt, "results": results})
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    if not path.is_file():
        _atomic_json(path, {"prompt": prompt, "results": results})
    return path
