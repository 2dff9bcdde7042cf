"""``pointalign data convert MESH_DIR --out DIR``: a folder of meshes (class = sub-folder) to the PointLLM layout.

Writes ``objaverse_data/{object_id}_{P}.npy`` (xyz + rgb; colours from the mesh where it has them, else 0),
``anno_data/PointLLM_brief_description_val_200_GT.json`` (caption "A {class}." per object, so the open-vocabulary
and captioning tasks run on it), ``anno_data/converted_objects.json`` (object id -> class and source file),
``modelnet40_data/modelnet40_test_{P}pts_fps.dat`` (xyz + normals, labels), the class-names file and
``convert_manifest.json`` (what converted, what was skipped and why).

Built for real folders:

- Every mesh is independent and sampled with the same seed, so the output is byte-identical whatever ``workers``.
- A mesh that cannot be read is skipped with one line naming it and why (its numpy / trimesh warnings folded into
  that line) and listed in the manifest; ``strict`` stops at the first one and removes the output folder when this
  run created it (a resumed folder keeps its earlier work).
- Every file is written atomically (a temporary name, then ``os.replace``); the index files come last, so a folder
  without ``convert_manifest.json`` is unfinished. Running the same command again resumes it: clouds already
  written (and their normals, kept in ``.convert/`` until the end) are not sampled again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pointalign.data.readers import MESH_SUFFIXES, DataError, sample_mesh
from pointalign.data.synth import SHAPE_NAMES_FILE, VAL_GT_FILE, modelnet_file

MANIFEST = "convert_manifest.json"
WORK = ".convert"  # resumable work in progress: params.json and normals/{oid}.npy


def find_meshes(mesh_dir: Path) -> list[tuple[str, Path]]:
    """(class, path) for every file in ``mesh_dir/<class>/``, sorted; unknown extensions are kept (and skipped)."""
    if not mesh_dir.is_dir():
        raise DataError(f"{mesh_dir}: no such folder")
    found = []
    for sub in sorted(p for p in mesh_dir.iterdir() if p.is_dir()):
        for f in sorted(sub.rglob("*")):
            if f.is_file() and not f.name.startswith("."):
                found.append((sub.name.replace("_", " "), f))
    if not any(f.suffix.lower() in MESH_SUFFIXES for _, f in found):
        raise DataError(f"{mesh_dir}: no meshes ({', '.join(MESH_SUFFIXES)}) in class sub-folders")
    return found


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    _atomic_write(path, write)


def _write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: tmp.write_text(text))


@dataclass
class _Job:
    rel: str  # path under mesh_dir, posix
    path: Path
    cloud_path: Path
    normals_path: Path
    points: int
    seed: int


@dataclass
class _Result:
    rel: str
    error: str | None  # why the mesh was skipped (with its warnings), None when converted
    warnings: list[str]


def _convert_one(job: _Job) -> _Result:
    """Sample one mesh and write its cloud and normals (normals first: a cloud on disk means both are there)."""
    if job.cloud_path.is_file() and job.normals_path.is_file():
        return _Result(job.rel, None, [])  # done by an earlier run
    caught: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caught.append(record.getMessage())

    handler = _Collect(logging.WARNING)
    log = logging.getLogger("trimesh")
    log.addHandler(handler)
    old_propagate, log.propagate = log.propagate, False
    try:
        with warnings.catch_warnings(record=True) as ws, np.errstate(all="warn"):
            warnings.simplefilter("always")
            try:
                if job.path.suffix.lower() not in MESH_SUFFIXES:
                    raise DataError(f"unknown extension {job.path.suffix!r} (use {', '.join(MESH_SUFFIXES)})")
                if job.path.stat().st_size == 0:
                    raise DataError("the file is empty")
                cloud, normals = sample_mesh(job.path, job.points, seed=job.seed)
                if not (np.isfinite(cloud).all() and np.isfinite(normals).all()):
                    raise DataError("sampling gave NaN or infinite values")
            except Exception as exc:  # any reader failure skips this mesh, named, with its reason
                reason = str(exc).replace(f"{job.path}: ", "")
                caught += [str(w.message) for w in ws]
                notes = f" [warnings: {'; '.join(dict.fromkeys(caught))}]" if caught else ""
                return _Result(job.rel, f"{reason}{notes}".replace("\n", " "), caught)
            caught += [str(w.message) for w in ws]
    finally:
        log.removeHandler(handler)
        log.propagate = old_propagate
    _save_npy(job.normals_path, normals.astype(np.float32))
    _save_npy(job.cloud_path, cloud)
    return _Result(job.rel, None, caught)


def _results(jobs: list[_Job], workers: int):
    """Results in job order (so what follows is the same whatever ``workers``)."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_convert_one, jobs)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context(method))
    try:
        yield from pool.map(_convert_one, jobs)
    finally:  # closed early (--strict): nothing still queued runs
        pool.shutdown(wait=True, cancel_futures=True)


def _object_id(rel: str) -> str:
    return hashlib.sha1(rel.encode()).hexdigest()[:32]


def convert_meshes(
    mesh_dir: str | Path,
    out: str | Path,
    points: int = 8192,
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable | None = None,
    workers: int | None = None,
    strict: bool = False,
    report: Callable[[str], None] = print,
) -> dict:
    """Convert ``mesh_dir`` into ``out`` (see the module docstring); returns the counts and classes.

    Raises:
        DataError: nothing converted, or (``strict``) the first mesh that could not be read.
        FileExistsError: ``out`` holds something other than this conversion's work (and no ``overwrite``).
    """
    mesh_dir, out = Path(mesh_dir), Path(out)
    if workers is not None and workers < 1:
        raise DataError(f"--workers {workers}: must be at least 1")
    workers = workers or os.cpu_count() or 1
    meshes = find_meshes(mesh_dir)
    params = {"mesh_dir": str(mesh_dir.resolve()), "points": points, "seed": seed}
    work = out / WORK
    resuming = (work / "params.json").is_file() and json.loads((work / "params.json").read_text()) == params
    if out.exists() and any(out.iterdir()) and not resuming:
        if not overwrite:
            raise FileExistsError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
        shutil.rmtree(out)
    created = not out.exists()
    for sub in ("objaverse_data", "anno_data", "modelnet40_data", f"{WORK}/normals"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    _write_text(work / "params.json", json.dumps(params) + "\n")
    jobs = []
    for _, path in meshes:
        rel = path.relative_to(mesh_dir).as_posix()
        oid = _object_id(rel)
        cloud_path = out / "objaverse_data" / f"{oid}_{points}.npy"
        jobs.append(_Job(rel, path, cloud_path, work / "normals" / f"{oid}.npy", points, seed))
    skipped: dict[str, str] = {}
    first_error = None
    bar = progress(total=len(jobs), desc="meshes", unit="mesh") if progress else None
    results = _results(jobs, workers)
    try:
        for res in results:
            if res.error is not None:
                if strict:
                    first_error = f"{mesh_dir / res.rel}: {res.error}"
                    break
                skipped[res.rel] = res.error
                line = f"skipped {mesh_dir / res.rel}: {res.error}"
                (bar.write(line) if bar is not None else report(line))
            if bar is not None:
                bar.update(1)
    finally:
        results.close()  # stops the workers before anything below removes their folder
        if bar is not None:
            bar.close()
    if first_error is not None:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise DataError(first_error)
    done = [(cls, job) for (cls, _), job in zip(meshes, jobs) if job.rel not in skipped]
    if not done:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise DataError(f"{mesh_dir}: no mesh could be converted ({len(skipped)} skipped)")
    _write_index(out, done, skipped, points)
    shutil.rmtree(work)
    return {"objects": len(done), "skipped": skipped, "classes": sorted({c for c, _ in done}), "points": points}


def _write_index(out: Path, done: list[tuple[str, _Job]], skipped: dict[str, str], points: int) -> None:
    """The layout's index files, each atomic, the manifest last."""
    classes = sorted({c for c, _ in done})
    records, index, test_points, test_labels = [], {}, [], []
    for cls, job in done:
        oid = _object_id(job.rel)
        cloud, normals = np.load(job.cloud_path), np.load(job.normals_path)
        records.append(
            {
                "object_id": oid,
                "conversations": [
                    {"from": "human", "value": "<point>\nWhat is this?"},
                    {"from": "gpt", "value": f"A {cls}."},
                ],
            }
        )
        index[oid] = {"class": cls, "source": job.rel}
        test_points.append(np.concatenate([cloud[:, :3], normals], axis=1).astype(np.float32))
        test_labels.append(np.array([classes.index(cls)], dtype=np.int32))
    _write_text(out / "anno_data" / VAL_GT_FILE, json.dumps(records, indent=1) + "\n")
    _write_text(out / "anno_data" / "converted_objects.json", json.dumps(index, indent=1) + "\n")

    def dump(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            pickle.dump((test_points, test_labels), f, protocol=4)

    _atomic_write(out / "modelnet40_data" / modelnet_file(points), dump)
    _write_text(out / "modelnet40_data" / SHAPE_NAMES_FILE, "".join(f"{c.replace(' ', '_')}\n" for c in classes))
    manifest = {"converted": [job.rel for _, job in done], "skipped": skipped, "points": points}
    _write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
