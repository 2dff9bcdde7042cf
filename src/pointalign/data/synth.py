"""``pointalign data synth``: the embedded dataset, written in PointLLM's layout.

Layout under ``--out`` (``P`` = points per cloud, 8192 by default):

    objaverse_data/{object_id}_{P}.npy           train + val clouds, float32 (P, 6): xyz (unit sphere) + rgb in [0, 1]
    anno_data/PointLLM_brief_description_660K_filtered.json   brief captions of the train objects
    anno_data/PointLLM_complex_instruction_70K.json           detailed_description / single_round / multi_round
    anno_data/PointLLM_brief_description_val_200_GT.json      the val objects' captions (ground truth)
    anno_data/{train,val,test}_object_ids.txt
    anno_data/synth_object_facts.json            per object: class, split, dominant colour, counts, variants ...
    modelnet40_data/modelnet40_test_{P}pts_fps.dat           test objects: pickle of ([xyz + normals], [[label]])
    modelnet40_data/modelnet40_shape_names_modified.txt      the 40 class names
    dataset_card.json                            counts, seed, generator version, files

The file names are PointLLM's, so a real PointLLM / ModelNet40 folder drops in where this one goes. Train, val and
test objects are disjoint (per class: the first ``val`` objects, then ``test``, then train). The same arguments
give identical bytes: every object draws from its own generator seeded by (seed, class, index).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pointalign.data.geometry import normalize_unit_sphere, sample_parts
from pointalign.data.synth_objects import GENERATORS, Draw, Facts
from pointalign.data.synth_text import BRIEF_INSTRUCTIONS, DETAILED_INSTRUCTIONS, ObjectText
from pointalign.errors import ConfigError

GENERATOR_VERSION = "2"
CLASSES: list[str] = list(GENERATORS)  # ModelNet40 order (alphabetical, "flower pot" etc. with spaces)
BRIEF_FILE = "PointLLM_brief_description_660K_filtered.json"
COMPLEX_FILE = "PointLLM_complex_instruction_70K.json"
VAL_GT_FILE = "PointLLM_brief_description_val_200_GT.json"
FACTS_FILE = "synth_object_facts.json"
SHAPE_NAMES_FILE = "modelnet40_shape_names_modified.txt"


def modelnet_file(points: int) -> str:
    return f"modelnet40_test_{points}pts_fps.dat"


@dataclass
class SynthObject:
    object_id: str
    cls: str
    split: str
    points: np.ndarray  # (P, 6) float32: xyz + rgb
    normals: np.ndarray  # (P, 3) float32
    facts: Facts
    colour: str  # dominant colour by surface area
    text: ObjectText


def object_id(seed: int, cls: str, index: int) -> str:
    return hashlib.sha1(f"pointalign-synth-v{GENERATOR_VERSION}-{seed}-{cls}-{index}".encode()).hexdigest()[:32]


def generate_object(cls: str, index: int, seed: int, num_points: int, split: str = "train") -> SynthObject:
    """One object of class ``cls``: its cloud, normals, facts and text generator."""
    c = CLASSES.index(cls)
    parts, facts = GENERATORS[cls](Draw(np.random.default_rng([seed, c, index, 0])))
    areas: dict[str, float] = {}
    for p in parts:
        cross = np.cross(p.triangles[:, 1] - p.triangles[:, 0], p.triangles[:, 2] - p.triangles[:, 0])
        areas[p.colour] = areas.get(p.colour, 0.0) + float(np.linalg.norm(cross, axis=1).sum())
    colour = max(sorted(areas), key=lambda k: areas[k])
    xyz, rgb, normals = sample_parts(parts, num_points, np.random.default_rng([seed, c, index, 1]))
    points = np.concatenate([normalize_unit_sphere(xyz), rgb], axis=1).astype(np.float32)
    ext = points[:, :3].max(axis=0) - points[:, :3].min(axis=0)
    aspect = float(ext[1] / max(ext[0], ext[2]))
    text = ObjectText(cls, facts, colour, np.random.default_rng([seed, c, index, 2]), aspect)
    return SynthObject(object_id(seed, cls, index), cls, split, points, normals.astype(np.float32), facts, colour, text)


def _record(oid: str, turns: list[tuple[str, str]], kind: str | None) -> dict:
    conv = []
    for i, (q, a) in enumerate(turns):
        conv.append({"from": "human", "value": f"<point>\n{q}" if i == 0 else q})
        conv.append({"from": "gpt", "value": a})
    rec: dict = {"object_id": oid, "conversations": conv}
    if kind is not None:
        rec["conversation_type"] = kind
    return rec


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=True) + "\n")


def synthesize(
    out: str | Path,
    objects_per_class: int = 40,
    points: int = 8192,
    seed: int = 0,
    val_per_class: int = 5,
    test_per_class: int = 5,
    overwrite: bool = False,
    progress: Callable | None = None,
) -> dict:
    """Write the dataset to ``out`` atomically (a temporary folder renamed at the end); returns the card."""
    out = Path(out)
    if objects_per_class < val_per_class + test_per_class + 1:
        raise ConfigError(
            f"--objects-per-class {objects_per_class}: needs at least val ({val_per_class}) + test "
            f"({test_per_class}) + 1 train object per class"
        )
    if points < 64:
        raise ConfigError(f"--points {points}: use at least 64 points per cloud")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        card = _write_all(tmp, objects_per_class, points, seed, val_per_class, test_per_class, progress)
        card["seconds"] = None  # timing is not part of the bytes
        _write_json(tmp / "dataset_card.json", card)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    card["seconds"] = time.perf_counter() - t0
    return card


def _write_all(root: Path, per_class: int, points: int, seed: int, n_val: int, n_test: int, progress) -> dict:
    (root / "objaverse_data").mkdir()
    (root / "anno_data").mkdir()
    (root / "modelnet40_data").mkdir()
    brief, complex_, val_gt, facts = [], [], [], {}
    ids: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    test_points, test_labels = [], []
    jobs = [(cls, i) for cls in CLASSES for i in range(per_class)]
    bar = progress(total=len(jobs), desc="objects", unit="obj") if progress else None
    try:
        for cls, i in jobs:
            split = "val" if i < n_val else ("test" if i < n_val + n_test else "train")
            obj = generate_object(cls, i, seed, points, split)
            ids[split].append(obj.object_id)
            facts[obj.object_id] = {
                "class": cls,
                "split": split,
                "colour": obj.colour,
                "counts": obj.facts.counts,
                "variants": obj.facts.variants,
                "proportion": list(obj.facts.proportion) if obj.facts.proportion else None,
                "has": obj.facts.has,
                "part_colours": obj.facts.part_colours,
            }
            if split == "test":
                xyz = obj.points[:, :3]
                test_points.append(np.concatenate([xyz, obj.normals], axis=1).astype(np.float32))
                test_labels.append(np.array([CLASSES.index(cls)], dtype=np.int32))
            else:
                np.save(root / "objaverse_data" / f"{obj.object_id}_{points}.npy", obj.points)
                text = obj.text
                rng = text.rng
                brief_q = BRIEF_INSTRUCTIONS[int(rng.integers(len(BRIEF_INSTRUCTIONS)))]
                record = _record(obj.object_id, [(brief_q, text.caption())], None)
                if split == "val":
                    val_gt.append(record)
                else:
                    brief.append(record)
                    detail_q = DETAILED_INSTRUCTIONS[int(rng.integers(len(DETAILED_INSTRUCTIONS)))]
                    complex_.append(_record(obj.object_id, [(detail_q, text.description())], "detailed_description"))
                    complex_.append(_record(obj.object_id, [text.single_round()], "single_round"))
                    complex_.append(_record(obj.object_id, text.multi_round(), "multi_round"))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    anno = root / "anno_data"
    _write_json(anno / BRIEF_FILE, brief)
    _write_json(anno / COMPLEX_FILE, complex_)
    _write_json(anno / VAL_GT_FILE, val_gt)
    _write_json(anno / FACTS_FILE, facts)
    for split, values in ids.items():
        (anno / f"{split}_object_ids.txt").write_text("".join(f"{v}\n" for v in values))
    with open(root / "modelnet40_data" / modelnet_file(points), "wb") as f:
        pickle.dump((test_points, test_labels), f, protocol=4)
    (root / "modelnet40_data" / SHAPE_NAMES_FILE).write_text("".join(f"{c.replace(' ', '_')}\n" for c in CLASSES))
    return {
        "name": "pointalign-synth",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "points": points,
        "classes": len(CLASSES),
        "objects_per_class": per_class,
        "objects": {k: len(v) for k, v in ids.items()},
        "records": {
            "brief": len(brief),
            "detailed_description": sum(r["conversation_type"] == "detailed_description" for r in complex_),
            "single_round": sum(r["conversation_type"] == "single_round" for r in complex_),
            "multi_round": sum(r["conversation_type"] == "multi_round" for r in complex_),
            "val_gt": len(val_gt),
        },
        "files": {
            "clouds": f"objaverse_data/{{object_id}}_{points}.npy",
            "brief": f"anno_data/{BRIEF_FILE}",
            "complex": f"anno_data/{COMPLEX_FILE}",
            "val_gt": f"anno_data/{VAL_GT_FILE}",
            "facts": f"anno_data/{FACTS_FILE}",
            "modelnet_test": f"modelnet40_data/{modelnet_file(points)}",
            "class_names": f"modelnet40_data/{SHAPE_NAMES_FILE}",
        },
    }
