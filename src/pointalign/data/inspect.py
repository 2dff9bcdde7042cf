"""``pointalign data inspect PATH [--png OUT]``: what a cloud, file or dataset folder holds, and a picture of it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from pointalign.data.readers import (
    CLOUD_SUFFIXES,
    MESH_SUFFIXES,
    DataError,
    PointLLMFolder,
    load_cloud,
    modelnet_cloud,
    read_annotations,
    read_class_names,
    read_modelnet_dat,
)


def describe_cloud(points: np.ndarray) -> list[str]:
    xyz, rgb = points[:, :3], points[:, 3:]
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    return [
        f"points: {len(points)}",
        f"extent (x, y, z): {np.round(hi - lo, 3).tolist()}",
        f"mean colour (r, g, b): {np.round(rgb.mean(axis=0), 3).tolist()}",
        f"coloured: {'yes' if rgb.max() > 0 else 'no (xyz only)'}",
    ]


def _dataset_summary(root: Path) -> tuple[list[str], list[tuple[str, np.ndarray]]]:
    lines = [f"dataset folder: {root}"]
    card_path = root / "dataset_card.json"
    points = 8192
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        points = int(card.get("points", points))
        lines.append(
            f"card: {card.get('name')} v{card.get('generator_version')}, seed {card.get('seed')}, "
            f"{points} points, objects {card.get('objects')}"
        )
    samples: list[tuple[str, np.ndarray]] = []
    clouds = sorted((root / "objaverse_data").glob("*.npy")) if (root / "objaverse_data").is_dir() else []
    if clouds and not card_path.is_file():  # the point count is in the file names: {object_id}_{P}.npy
        stem = clouds[0].stem
        points = int(stem.rsplit("_", 1)[1]) if "_" in stem and stem.rsplit("_", 1)[1].isdigit() else points
    lines.append(f"objaverse_data: {len(clouds)} clouds")
    for f in sorted((root / "anno_data").glob("*.json")) if (root / "anno_data").is_dir() else []:
        if f.name.startswith("PointLLM_"):
            recs = read_annotations(f)
            kinds: dict[str, int] = {}
            for r in recs:
                kinds[r.conversation_type] = kinds.get(r.conversation_type, 0) + 1
            lines.append(f"anno_data/{f.name}: {len(recs)} records {kinds}")
            if clouds:
                folder = PointLLMFolder(root, points)
                for r in recs:  # every record's object must have its cloud
                    if not folder.cloud_path(r.object_id).is_file():
                        raise DataError(
                            f"{f}: object id {r.object_id!r} has no cloud {folder.cloud_path(r.object_id).name}"
                        )
            if recs and not samples and clouds:
                folder = PointLLMFolder(root, points)
                for r in recs[:: max(1, len(recs) // 8)][:8]:  # spread over the classes
                    samples.append((r.turns[0][1][:40], folder.cloud(r.object_id)))
    mn = root / "modelnet40_data"
    for dat in sorted(mn.glob("*.dat")) if mn.is_dir() else []:
        pts, labels = read_modelnet_dat(dat)
        names_file = mn / "modelnet40_shape_names_modified.txt"
        names = read_class_names(names_file) if names_file.is_file() else [str(i) for i in range(max(labels) + 1)]
        lines.append(f"modelnet40_data/{dat.name}: {len(pts)} objects, {len(set(labels))} classes")
        if not samples:
            samples = [(names[lab], modelnet_cloud(p)) for p, lab in list(zip(pts, labels))[:8]]
    if len(lines) == 1 or (not clouds and not mn.is_dir()):
        raise DataError(f"{root}: not a dataset folder (no objaverse_data, anno_data or modelnet40_data)")
    return lines, samples


def inspect_path(path: str | Path, png: str | Path | None = None) -> list[str]:
    """Summary lines for ``path``; with ``png`` also render it (atomically) to that file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    samples: list[tuple[str, np.ndarray]]
    if path.is_dir():
        lines, samples = _dataset_summary(path)
    elif path.suffix.lower() == ".dat":
        pts, labels = read_modelnet_dat(path)
        lines = [f"ModelNet40 file: {len(pts)} objects, {len(set(labels))} classes"]
        samples = [(f"label {lab}", modelnet_cloud(p)) for p, lab in list(zip(pts, labels))[:8]]
    elif path.suffix.lower() == ".json":
        recs = read_annotations(path)
        lines = [f"annotations: {len(recs)} records"]
        samples = []
    elif path.suffix.lower() in CLOUD_SUFFIXES + MESH_SUFFIXES:
        cloud = load_cloud(path)
        lines = [f"cloud: {path}", *describe_cloud(cloud)]
        samples = [(path.name, cloud)]
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}")
    if png is not None:
        if not samples:
            raise DataError(f"{path}: nothing to render")
        render_png(samples, png)
        lines.append(f"picture: {png}")
    return lines


def render_png(samples: list[tuple[str, np.ndarray]], out: str | Path, max_points: int = 4096) -> None:
    """A grid of 3D scatter plots (y up), each cloud in its own colours; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    n = len(samples)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig = plt.figure(figsize=(3.2 * cols, 3.2 * rows), dpi=100)
    for i, (title, cloud) in enumerate(samples):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        step = max(1, len(cloud) // max_points)
        c = cloud[::step]
        colours = np.clip(c[:, 3:6], 0, 1) if c[:, 3:6].max() > 0 else "0.3"
        ax.scatter(c[:, 0], c[:, 2], c[:, 1], c=colours, s=1.5, depthshade=False)
        ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_zlim(-1, 1)
        ax.view_init(elev=20, azim=-60)
        ax.set_axis_off()
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
