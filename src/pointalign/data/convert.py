"""``pointalign data convert MESH_DIR --out DIR``: a folder of meshes (class = sub-folder) to the PointLLM layout.

Writes ``objaverse_data/{object_id}_{P}.npy`` (xyz + rgb; colours from the mesh where it has them, else 0),
``anno_data/PointLLM_brief_description_val_200_GT.json`` (caption "A {class}." per object, so the open-vocabulary
and captioning tasks run on it), ``anno_data/converted_objects.json`` (object id -> class and source file),
``modelnet40_data/modelnet40_test_{P}pts_fps.dat`` (xyz + normals, labels) and the class-names file. All files are
written to a temporary folder that is renamed at the end: an unreadable mesh leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pointalign.data.readers import MESH_SUFFIXES, DataError, sample_mesh
from pointalign.data.synth import SHAPE_NAMES_FILE, VAL_GT_FILE, modelnet_file


def find_meshes(mesh_dir: Path) -> list[tuple[str, Path]]:
    """(class, path) for every mesh in ``mesh_dir/<class>/``, sorted."""
    if not mesh_dir.is_dir():
        raise DataError(f"{mesh_dir}: no such folder")
    found = []
    for sub in sorted(p for p in mesh_dir.iterdir() if p.is_dir()):
        for f in sorted(sub.rglob("*")):
            if f.is_file() and f.suffix.lower() in MESH_SUFFIXES:
                found.append((sub.name.replace("_", " "), f))
    if not found:
        raise DataError(f"{mesh_dir}: no meshes ({', '.join(MESH_SUFFIXES)}) in class sub-folders")
    return found


def convert_meshes(
    mesh_dir: str | Path,
    out: str | Path,
    points: int = 8192,
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable | None = None,
) -> dict:
    mesh_dir, out = Path(mesh_dir), Path(out)
    meshes = find_meshes(mesh_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
    classes = sorted({c for c, _ in meshes})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for sub in ("objaverse_data", "anno_data", "modelnet40_data"):
            (tmp / sub).mkdir()
        records, index, test_points, test_labels = [], {}, [], []
        bar = progress(total=len(meshes), desc="meshes", unit="mesh") if progress else None
        try:
            for cls, path in meshes:
                rel = path.relative_to(mesh_dir).as_posix()
                oid = hashlib.sha1(rel.encode()).hexdigest()[:32]
                cloud, normals = sample_mesh(path, points, seed=seed)
                np.save(tmp / "objaverse_data" / f"{oid}_{points}.npy", cloud)
                records.append(
                    {
                        "object_id": oid,
                        "conversations": [
                            {"from": "human", "value": "<point>\nWhat is this?"},
                            {"from": "gpt", "value": f"A {cls}."},
                        ],
                    }
                )
                index[oid] = {"class": cls, "source": rel}
                test_points.append(np.concatenate([cloud[:, :3], normals], axis=1).astype(np.float32))
                test_labels.append(np.array([classes.index(cls)], dtype=np.int32))
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        (tmp / "anno_data" / VAL_GT_FILE).write_text(json.dumps(records, indent=1) + "\n")
        (tmp / "anno_data" / "converted_objects.json").write_text(json.dumps(index, indent=1) + "\n")
        with open(tmp / "modelnet40_data" / modelnet_file(points), "wb") as f:
            pickle.dump((test_points, test_labels), f, protocol=4)
        (tmp / "modelnet40_data" / SHAPE_NAMES_FILE).write_text("".join(f"{c.replace(' ', '_')}\n" for c in classes))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"objects": len(meshes), "classes": classes, "points": points}
