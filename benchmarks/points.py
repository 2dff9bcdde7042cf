"""Point preprocessing: our FPS / kNN against the libraries they wrap, mesh conversion throughput, large clouds.

    python benchmarks/points.py [--repeats 5] [--meshes 200] [--skip-convert]

Prints, each as the median of ``--repeats``:
- encoder grouping (B = 8; 8192 -> 512 x 32 and 2048 -> 64 x 32): ``group_points`` / (``fpsample`` exact FPS +
  ``scipy.spatial.cKDTree``), against the libraries' indices alone and with the neighbourhoods gathered from them as
  ``group_points`` returns them, and the torch loops it replaced (target <= 1.05). ``fpsample`` has two exact FPS:
  the plain loop (``fps_sampling``) and the kd-tree one (``bucket_fps_kdtree_sampling``, which starts from its own
  tree order); the faster of the two at each size is the baseline;
- mesh sampling FPS, 32,768 -> 8,192: ``fps_indices`` / the faster exact ``fpsample`` (target <= 1.05);
- ``data convert`` of ``--meshes`` generated meshes with 1 and 2 workers: meshes/s and the ratio (target >= 1.8);
- a 2,000,000-point cloud for chat: FPS to 8,192 alone, and ``load_cloud`` of it from ``.npy`` and ``.ply``
  (read, check, FPS, normalise): seconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def old_grouping(xyz: torch.Tensor, g: int, k: int) -> None:
    """The torch FPS loop + cdist/topk the encoder used before ``pointalign.points``."""
    b, n, _ = xyz.shape
    dist = torch.full((b, n), float("inf"))
    far = torch.zeros(b, dtype=torch.long)
    batch = torch.arange(b)
    idx = torch.empty(b, g, dtype=torch.long)
    for i in range(g):
        idx[:, i] = far
        dist = torch.minimum(dist, ((xyz - xyz[batch, far].unsqueeze(1)) ** 2).sum(-1))
        far = dist.argmax(-1)
    centres = xyz[batch[:, None], idx]
    torch.cdist(centres, xyz, compute_mode="donot_use_mm_for_euclid_dist").topk(k, largest=False)


def fastest_fpsample(xyz: np.ndarray, samples: int, repeats: int) -> tuple[str, Callable, float]:
    """The faster of ``fpsample``'s two exact FPS on this cloud: (name, function of a cloud, median seconds)."""
    import fpsample

    found = []
    for name, fn in [
        ("fps_sampling", lambda c: fpsample.fps_sampling(c, samples, start_idx=0)),
        ("bucket_fps_kdtree_sampling", lambda c: fpsample.bucket_fps_kdtree_sampling(c, samples, start_idx=0)),
    ]:
        found.append((median_time(lambda: fn(xyz), repeats), name, fn))
    secs, name, fn = min(found, key=lambda f: f[0])
    return name, fn, secs


def grouping(repeats: int) -> None:
    from scipy.spatial import cKDTree

    from pointalign.models.point_encoder import group_points

    rng = np.random.default_rng(0)
    for n, g, k in [(8192, 512, 32), (2048, 64, 32)]:
        pts = torch.from_numpy(rng.uniform(-1, 1, (8, n, 6)).astype(np.float32))
        xyz = pts[..., :3].numpy()
        fps_name, fps, _ = fastest_fpsample(xyz[0], g, repeats)

        def libraries(gather: bool) -> None:
            centre_idx, nbr_idx = [], []
            for c in xyz:
                centre_idx.append(fps(c))  # (G,)
                nbr_idx.append(cKDTree(c).query(c[centre_idx[-1]], k)[1])  # (G, K)
            if gather:  # the neighbourhoods group_points returns, made the same way from the libraries' indices
                batch = torch.arange(len(xyz))[:, None]
                centres = pts[..., :3][batch, torch.from_numpy(np.stack(centre_idx).astype(np.int64))]  # (B, G, 3)
                groups = pts[batch[:, :, None], torch.from_numpy(np.stack(nbr_idx).astype(np.int64))]  # (B, G, K, F)
                torch.cat([groups[..., :3] - centres[:, :, None, :], groups[..., 3:]], dim=-1)

        ours = median_time(lambda: group_points(pts, g, k), repeats)
        lib = median_time(lambda: libraries(False), repeats)
        lib_groups = median_time(lambda: libraries(True), repeats)
        old = median_time(lambda: old_grouping(pts[..., :3], g, k), max(1, repeats // 2))
        print(
            f"grouping B=8 {n} -> {g} x {k}: ours {ours * 1e3:.0f} ms, fpsample ({fps_name}) + cKDTree "
            f"{lib * 1e3:.0f} ms for the "
            f"indices (ratio {ours / lib:.2f}), {lib_groups * 1e3:.0f} ms with the same neighbourhoods gathered "
            f"(ratio {ours / lib_groups:.2f}); the old torch loops {old * 1e3:.0f} ms ({old / ours:.1f}x ours)"
        )


def mesh_fps(repeats: int) -> None:
    import trimesh

    from pointalign.points import fps_indices

    mesh = trimesh.creation.icosphere(subdivisions=3)
    xyz = np.asarray(trimesh.sample.sample_surface(mesh, 32768, seed=0)[0], dtype=np.float32)  # as data convert does
    ours = median_time(lambda: fps_indices(xyz, 8192), repeats)
    name, _, lib = fastest_fpsample(xyz, 8192, repeats)
    print(f"mesh FPS 32768 -> 8192: ours {ours:.3f} s, fpsample {name} {lib:.3f} s (ratio {ours / lib:.2f})")


def convert(meshes: int) -> None:
    import trimesh

    from pointalign.data.convert import convert_meshes

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "meshes"
        rng = np.random.default_rng(0)
        for i in range(meshes):
            cls = root / f"class_{i % 10}"
            cls.mkdir(parents=True, exist_ok=True)
            mesh = trimesh.creation.icosphere(subdivisions=3)
            mesh.vertices *= rng.uniform(0.5, 2.0, 3)
            mesh.export(cls / f"m{i:03d}.off")
        rates = {}
        for workers in (1, 2):
            t = time.perf_counter()
            convert_meshes(root, Path(tmp) / f"out{workers}", 8192, workers=workers, report=lambda _: None)
            rates[workers] = meshes / (time.perf_counter() - t)
            print(f"data convert, {meshes} meshes, {workers} worker(s): {rates[workers]:.1f} meshes/s")
        print(f"data convert 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")


def large_cloud(repeats: int) -> None:
    import trimesh

    from pointalign.data.readers import load_cloud
    from pointalign.points import fps_indices

    cloud = np.random.default_rng(0).uniform(0, 1, (2_000_000, 6)).astype(np.float32)
    fps = median_time(lambda: fps_indices(cloud, 8192), repeats)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "cloud.npy", cloud)
        colours = (cloud[:, 3:] * 255).astype(np.uint8)
        trimesh.PointCloud(cloud[:, :3], colors=colours).export(Path(tmp) / "cloud.ply")
        npy = median_time(lambda: load_cloud(Path(tmp) / "cloud.npy", 8192), repeats)
        ply = median_time(lambda: load_cloud(Path(tmp) / "cloud.ply", 8192), repeats)
    print(f"2,000,000-point cloud -> 8192 for chat: FPS {fps:.2f} s; load_cloud .npy {npy:.2f} s, .ply {ply:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--meshes", type=int, default=200)
    ap.add_argument("--skip-convert", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    grouping(args.repeats)
    mesh_fps(args.repeats)
    large_cloud(args.repeats)
    if not args.skip_convert:
        convert(args.meshes)


if __name__ == "__main__":
    main()
