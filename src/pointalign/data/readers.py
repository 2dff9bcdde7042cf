"""Readers for point clouds, meshes and PointLLM / ModelNet40 data, used by training and evaluation.

Every problem with an input is a ``DataError`` whose message names the file (and record) and the problem, in one
line. Conventions:

- Colours: a cloud whose colour channels exceed 1 is taken as 0-255 and divided by 255; otherwise as [0, 1].
- xyz-only clouds (N x 3) get colour 0 (black), as the reference does for ModelNet40.
- Clouds are centred on their mean and scaled into the unit sphere.
- Oversized clouds are downsampled to ``num_points``: farthest point sampling of the whole cloud by default
  (``pointalign.points``, the same exact FPS as the encoder's: float32, from point 0, ties to the lowest index; a
  2,000,000-point cloud takes about a second), or uniformly at random with ``method="random"``. Smaller clouds are
  returned as they are.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pointalign.errors import DataError
from pointalign.points import fps_indices

CLOUD_SUFFIXES = (".npy", ".ply")
MESH_SUFFIXES = (".off", ".obj", ".ply", ".stl", ".glb")
XYZ_ONLY_COLOUR = 0.0


# ---------------------------------------------------------------------------------------------------------------
# Arrays


def check_cloud(points: np.ndarray, where: str) -> np.ndarray:
    """Validate an (N, 3) or (N, 6) numeric array; return it as float32 (N, 6) (colour 0 for xyz-only)."""
    if not isinstance(points, np.ndarray):
        raise DataError(f"{where}: expected an array, got {type(points).__name__}")
    if points.dtype.kind not in "fiu":
        raise DataError(f"{where}: expected numbers, got dtype {points.dtype}")
    if points.ndim != 2 or points.shape[1] not in (3, 6):
        raise DataError(f"{where}: expected shape (N, 3) or (N, 6), got {points.shape}")
    if points.shape[0] == 0:
        raise DataError(f"{where}: the cloud is empty")
    points = points.astype(np.float32, copy=False)
    if not np.isfinite(points).all():
        raise DataError(f"{where}: contains NaN or infinite values")
    if points.shape[1] == 3:
        points = np.concatenate([points, np.full_like(points, XYZ_ONLY_COLOUR)], axis=1)
    elif points[:, 3:].max() > 1.0:
        points = np.concatenate([points[:, :3], points[:, 3:] / 255.0], axis=1)
    return points


def normalize(points: np.ndarray) -> np.ndarray:
    """Centre xyz on the mean and scale into the unit sphere; colours untouched."""
    xyz = points[:, :3] - points[:, :3].mean(axis=0)
    scale = float(np.linalg.norm(xyz, axis=1).max())
    if scale > 0:
        xyz = xyz / scale
    return np.concatenate([xyz, points[:, 3:]], axis=1).astype(np.float32)


def downsample(
    points: np.ndarray, num_points: int, method: Literal["fps", "random"] = "fps", seed: int = 0
) -> np.ndarray:
    """Reduce a cloud to ``num_points`` (see the module docstring); smaller clouds are returned unchanged."""
    if points.shape[0] <= num_points:
        return points
    if method == "random":
        rng = np.random.default_rng(seed)
        return points[np.sort(rng.choice(points.shape[0], num_points, replace=False))]
    if method != "fps":
        raise ValueError(f"downsample: method must be 'fps' or 'random', got {method!r}")
    return points[fps_indices(points[:, :3], num_points)]


# ---------------------------------------------------------------------------------------------------------------
# Files


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from None


def _trimesh():
    try:
        import trimesh
    except ImportError as exc:  # a core dependency; only a broken install lacks it
        raise DataError("reading .ply and mesh files needs trimesh (pip install trimesh)") from exc
    return trimesh


def _load_trimesh(path: Path):
    trimesh = _trimesh()
    try:
        loaded = trimesh.load(str(path), process=False)
    except Exception as exc:  # trimesh raises many types for corrupt files; report, never hide
        raise DataError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if isinstance(loaded, trimesh.Scene):
        geoms = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)] if loaded.geometry else []
        if not geoms:
            raise DataError(f"{path}: the scene holds no mesh")
        loaded = trimesh.util.concatenate(geoms)
    return loaded


def _mesh_colours(mesh, face_index: np.ndarray) -> np.ndarray | None:
    """Per-sample rgb in [0, 1] from face or vertex colours, or None when the mesh has none."""
    visual = getattr(mesh, "visual", None)
    if visual is None or getattr(visual, "kind", None) not in ("face", "vertex"):
        return None
    if visual.kind == "face":
        return np.asarray(visual.face_colors, dtype=np.float64)[face_index, :3] / 255.0
    vc = np.asarray(visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
    return vc[mesh.faces[face_index]].mean(axis=1)


def sample_mesh(path: str | Path, num_points: int, seed: int = 0, oversample: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted surface samples of a mesh file, FPS-reduced to ``num_points``.

    Returns:
        points (num_points, 6): xyz + rgb (mesh colours where the mesh has them, else 0), and normals (num_points, 3).
    """
    path = Path(path)
    trimesh = _trimesh()
    mesh = _load_trimesh(path)
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise DataError(f"{path}: has no triangle faces to sample")
    if not np.isfinite(mesh.vertices).all():
        raise DataError(f"{path}: contains NaN or infinite vertices")
    if mesh.area <= 0:
        raise DataError(f"{path}: has zero surface area")
    xyz, face_index = trimesh.sample.sample_surface(mesh, num_points * oversample, seed=seed)
    rgb = _mesh_colours(mesh, face_index)
    if rgb is None:
        rgb = np.full_like(xyz, XYZ_ONLY_COLOUR)
    normals = np.asarray(mesh.face_normals)[face_index]
    keep = fps_indices(np.asarray(xyz), num_points)
    points = np.concatenate([xyz[keep], rgb[keep]], axis=1).astype(np.float32)
    return normalize(points), normals[keep].astype(np.float32)


def load_cloud(path: str | Path, num_points: int | None = None, method: Literal["fps", "random"] = "fps") -> np.ndarray:
    """Read a cloud (.npy of N x 3 / N x 6, .ply cloud) or a mesh (sampled); validated, normalised, (N, 6) float32."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        points = check_cloud(_read_npy(path), str(path))
    elif suffix in MESH_SUFFIXES:
        mesh = _load_trimesh(path)
        faces = getattr(mesh, "faces", None)
        if faces is not None and len(faces) > 0:
            return sample_mesh(path, num_points or 8192)[0]
        vertices = np.asarray(getattr(mesh, "vertices", np.empty((0, 3))))
        colours = getattr(mesh, "colors", None)
        if colours is not None and len(colours) == len(vertices):
            vertices = np.concatenate([vertices, np.asarray(colours)[:, :3]], axis=1)
        points = check_cloud(vertices, str(path))
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r} (use .npy, .ply, .off, .obj, .stl or .glb)")
    if num_points is not None:
        points = downsample(points, num_points, method)
    return normalize(points)


# ---------------------------------------------------------------------------------------------------------------
# ModelNet40 test file: a pickle, read with an unpickler that admits numpy arrays and plain containers only

_ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 pickles store array bytes as latin-1 text
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, where: str) -> None:
        super().__init__(file)
        self.where = where

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise DataError(f"{self.where}: refused to load {module}.{name} (only numpy arrays and lists are allowed)")
        import numpy

        if module.startswith("numpy"):
            core = getattr(numpy, "_core", None) or numpy.core
            return getattr(core.multiarray, name) if "multiarray" in module else getattr(numpy, name)
        import _codecs

        return _codecs.encode

    def persistent_load(self, pid):
        raise DataError(f"{self.where}: refused a persistent reference")


def read_modelnet_dat(path: str | Path) -> tuple[list[np.ndarray], list[int]]:
    """Read a ModelNet40 ``.dat`` pickle of (point arrays, label arrays); nothing in it is executed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    data = path.read_bytes()
    if not data:
        raise DataError(f"{path}: the file is empty")
    try:
        obj = _ArraysOnlyUnpickler(io.BytesIO(data), str(path)).load()
    except DataError:
        raise
    except Exception as exc:  # truncated or corrupt pickles raise many types
        raise DataError(f"{path}: not a readable ModelNet40 file ({type(exc).__name__}: {exc})") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(x, list) for x in obj)):
        raise DataError(f"{path}: expected a pair (list of point arrays, list of labels)")
    points, labels = obj
    if len(points) != len(labels):
        raise DataError(f"{path}: {len(points)} point sets but {len(labels)} labels")
    out_labels = []
    for i, (p, lab) in enumerate(zip(points, labels)):
        if not isinstance(p, np.ndarray) or p.ndim != 2 or p.shape[1] not in (3, 6):
            raise DataError(f"{path}: object {i}: expected an (N, 3|6) array, got {getattr(p, 'shape', type(p))}")
        arr = np.asarray(lab).reshape(-1)
        if arr.size != 1 or arr.dtype.kind not in "iu":
            raise DataError(f"{path}: object {i}: label must be one integer, got {lab!r}")
        out_labels.append(int(arr[0]))
    return points, out_labels


def modelnet_cloud(points: np.ndarray) -> np.ndarray:
    """ModelNet40 convention: drop the normals, unit-sphere xyz, zero rgb -> (N, 6)."""
    xyz = points[:, :3].astype(np.float32)
    return normalize(np.concatenate([xyz, np.zeros_like(xyz)], axis=1))


def read_class_names(path: str | Path) -> list[str]:
    """The 40 class names file, underscores read as spaces."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    names = [line.strip().replace("_", " ") for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path}: no class names")
    return names


# ---------------------------------------------------------------------------------------------------------------
# PointLLM annotations and folders


@dataclass
class Record:
    object_id: str
    turns: list[tuple[str, str]]  # (question without <point>, answer)
    conversation_type: str  # "simple_description" when the record has none


def read_annotations(path: str | Path, types: tuple[str, ...] | None = None) -> list[Record]:
    """Read a PointLLM annotation JSON; every record is checked and a bad one named by its index."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of records, got {type(data).__name__}")
    out = []
    for i, rec in enumerate(data):
        where = f"{path}: record {i}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object, got {type(rec).__name__}")
        oid, conv = rec.get("object_id"), rec.get("conversations")
        if not isinstance(oid, str) or not oid:
            raise DataError(f"{where}: missing or empty object_id")
        if not isinstance(conv, list) or len(conv) < 2 or len(conv) % 2:
            raise DataError(f"{where}: conversations must be a non-empty list of human/gpt pairs")
        values = []
        for j, msg in enumerate(conv):
            want = "human" if j % 2 == 0 else "gpt"
            if not isinstance(msg, dict) or msg.get("from") != want or not isinstance(msg.get("value"), str):
                raise DataError(f"{where}: message {j} must be {{'from': '{want}', 'value': <text>}}")
            values.append(msg["value"])
        if "<point>" not in values[0]:
            raise DataError(f"{where}: the first question has no <point> placeholder")
        kind = rec.get("conversation_type", "simple_description")
        if not isinstance(kind, str):
            raise DataError(f"{where}: conversation_type must be a string")
        if types is not None and kind not in types:  # an exact match, not a substring test
            continue
        questions = [v.replace("<point>", "").strip() for v in values[0::2]]
        out.append(Record(oid, list(zip(questions, values[1::2])), kind))
    return out


class PointLLMFolder:
    """A PointLLM-layout data root: ``objaverse_data/{object_id}_{points}.npy`` and ``anno_data/*.json``."""

    def __init__(self, root: str | Path, points: int = 8192) -> None:
        self.root = Path(root)
        self.points = points
        if not (self.root / "objaverse_data").is_dir():
            raise DataError(f"{self.root}: no objaverse_data folder (not a PointLLM-layout data root)")

    def cloud_path(self, object_id: str) -> Path:
        return self.root / "objaverse_data" / f"{object_id}_{self.points}.npy"

    def cloud(self, object_id: str) -> np.ndarray:
        """The object's (P, 6) cloud, unit-sphere normalised (colours as stored)."""
        path = self.cloud_path(object_id)
        if not path.is_file():
            raise DataError(f"{path}: missing point cloud for object id {object_id!r}")
        return normalize(check_cloud(_read_npy(path), str(path)))

    def annotations(self, name: str, types: tuple[str, ...] | None = None) -> list[Record]:
        return read_annotations(self.root / "anno_data" / name, types)
