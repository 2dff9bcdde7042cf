"""The one FPS and kNN (``pointalign.points``) against brute force, and the encoder against the torch loops it
replaced: same centres, same neighbour sets, the same tokens bit for bit."""

import numpy as np
import pytest
import torch

from pointalign import points
from pointalign.config import PointEncoderConfig
from pointalign.models import point_encoder
from pointalign.models.point_encoder import MiniPointNet, PointEncoder

N, S, K = 512, 32, 16


def brute_fps(xyz: np.ndarray, s: int, start: int = 0) -> list[int]:
    """float32 squared distances, first maximum on ties: the rule the torch loop had."""
    xyz = xyz.astype(np.float32)
    dist = np.full(xyz.shape[0], np.inf, dtype=np.float32)
    chosen, far = [], start
    for _ in range(s):
        chosen.append(far)
        dist = np.minimum(dist, ((xyz - xyz[far]) ** 2).sum(-1))
        far = int(np.argmax(dist))
    return chosen


def brute_knn(q: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    """Every distance as the encoder's cdist computes it; nearest first, ties by the lowest index."""
    d = torch.cdist(torch.from_numpy(q), torch.from_numpy(p), compute_mode="donot_use_mm_for_euclid_dist")
    return np.argsort(d.numpy(), axis=1, kind="stable")[:, :k]


def old_fps(xyz: torch.Tensor, s: int) -> torch.Tensor:
    """The encoder's FPS before ``pointalign.points`` (torch loop, verbatim)."""
    b, n, _ = xyz.shape
    idx = torch.empty(b, s, dtype=torch.long)
    dist = torch.full((b, n), float("inf"), dtype=xyz.dtype)
    far = torch.zeros(b, dtype=torch.long)
    batch = torch.arange(b)
    for i in range(s):
        idx[:, i] = far
        dist = torch.minimum(dist, ((xyz - xyz[batch, far].unsqueeze(1)) ** 2).sum(-1))
        far = dist.argmax(-1)
    return idx


def old_group_points(pts: torch.Tensor, g: int, k: int, fps_start: str = "first"):
    """The encoder's grouping before ``pointalign.points`` (torch FPS loop, cdist + topk)."""
    xyz = pts[..., :3]
    batch = torch.arange(pts.shape[0])[:, None]
    centres = xyz[batch, old_fps(xyz, g)]
    d = torch.cdist(centres, xyz, compute_mode="donot_use_mm_for_euclid_dist")
    nbr = d.topk(k, dim=-1, largest=False, sorted=True).indices
    groups = pts[batch[:, :, None], nbr]
    return torch.cat([groups[..., :3] - centres[:, :, None, :], groups[..., 3:]], dim=-1), centres


def clouds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(8)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)
    dup = rng.standard_normal((N // 4, 3)).astype(np.float32)
    return {
        "random": rng.standard_normal((N, 3)).astype(np.float32),
        "grid (exact ties)": grid,
        "shuffled grid": grid[rng.permutation(len(grid))],
        "duplicates": np.concatenate([dup] * 4)[rng.permutation(N)],
        "quantised": np.round(rng.uniform(-1, 1, (N, 3)) * 3).astype(np.float32) / 3,
    }


@pytest.mark.parametrize("name", list(clouds()))
@pytest.mark.parametrize("start", [0, 7])
def test_fps_equals_brute_force_including_ties(name, start):
    xyz = clouds()[name]
    for s in (1, S, xyz.shape[0]):
        assert points.fps_indices(xyz, s, start).tolist() == brute_fps(xyz, s, start)


@pytest.mark.parametrize("name", list(clouds()))
def test_batched_fps_equals_the_old_torch_loop(name):
    xyz = torch.from_numpy(np.stack([clouds()[name], clouds()[name][::-1].copy()]))  # (2, N, 3)
    assert torch.equal(points.farthest_point_sample(xyz, S), old_fps(xyz, S))


def awkward_clouds() -> dict[str, np.ndarray]:
    """Clouds that stress the FPS tree: deep and lopsided splits, equal points, tiny extents far from the origin."""
    rng = np.random.default_rng(3)
    clusters = np.concatenate([rng.normal(c, 1e-3, (100, 3)) for c in rng.uniform(-50, 50, (5, 3))])
    return {
        "clusters and outliers": np.concatenate([clusters, rng.uniform(-1e3, 1e3, (12, 3))]).astype(np.float32),
        "all equal": np.ones((70, 3), np.float32),
        "far from the origin": (1e6 + rng.uniform(0, 0.5, (300, 3))).astype(np.float32),
        "a line": np.stack([np.arange(200.0), np.zeros(200), np.zeros(200)], 1).astype(np.float32),
        "one point": np.zeros((1, 3), np.float32),
    }


@pytest.mark.parametrize("name", list(awkward_clouds()))
@pytest.mark.parametrize("leaf", [1, 2, 3, 64])
def test_fps_tree_equals_brute_force_for_any_leaf_size(name, leaf):
    from pointalign.fps_tree import farthest_points

    xyz = awkward_clouds()[name]
    for s in sorted({1, min(17, len(xyz)), len(xyz)}):
        assert farthest_points(xyz, s, 0, leaf=leaf).tolist() == brute_fps(xyz, s)


def test_fps_tree_compiles_without_a_writable_cache():
    """numba refuses ``cache=True`` at import when no cache folder is writable; the kernel then compiles uncached."""
    import subprocess
    import sys

    code = (
        "from numba.core import caching; caching.CacheImpl._locator_classes = []\n"
        "import numpy as np; from pointalign.fps_tree import farthest_points\n"
        "xyz = np.random.default_rng(0).standard_normal((300, 3)).astype(np.float32)\n"
        "print(farthest_points(xyz, 9, 0).tolist())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    xyz = np.random.default_rng(0).standard_normal((300, 3)).astype(np.float32)
    assert done.stdout.strip() == str(brute_fps(xyz, 9))


def test_fps_rejects_a_start_outside_the_cloud():
    with pytest.raises(ValueError, match="start 4 is not a point of 4"):
        points.fps_indices(np.zeros((4, 3), np.float32), 2, start=4)


def test_fps_rejects_too_many_samples():
    with pytest.raises(ValueError, match="asked for 5 samples from 4 points"):
        points.fps_indices(np.zeros((4, 3), np.float32), 5)


@pytest.mark.parametrize("name", list(clouds()))
def test_knn_equals_brute_force_including_ties(name):
    xyz = clouds()[name]
    q = xyz[points.fps_indices(xyz, S)]
    assert np.array_equal(points.knn_indices(q, xyz, K), brute_knn(q, xyz, K))


def test_knn_near_ties_within_float32_rounding():
    """Distances a few float32 ulps apart: float64 order and float32 order can differ, so these rows are re-ranked."""
    rng = np.random.default_rng(5)
    dirs = rng.standard_normal((N, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    xyz = (dirs * (1 + rng.integers(0, 4, (N, 1)) * 6e-8)).astype(np.float32)  # a shell a few ulps thick
    q = np.concatenate([np.zeros((1, 3), np.float32), xyz[:S]])  # the centre sees only near-ties
    assert np.array_equal(points.knn_indices(q, xyz, K), brute_knn(q, xyz, K))


def test_knn_keeps_the_kd_tree_order_only_where_rows_are_clearly_apart(monkeypatch):
    calls = []
    rerank = points._rerank
    monkeypatch.setattr(points, "_rerank", lambda q, *a: calls.append(len(q)) or rerank(q, *a))
    xyz = clouds()["random"]
    assert np.array_equal(points.knn_indices(xyz[:S], xyz, K), brute_knn(xyz[:S], xyz, K))
    assert sum(calls) < S // 4  # most rows of a random cloud need no float32 re-rank
    calls.clear()
    grid = clouds()["grid (exact ties)"]
    assert np.array_equal(points.knn_indices(grid[:S], grid, K), brute_knn(grid[:S], grid, K))
    assert calls == [S]  # every row of a grid has ties


def test_knn_redoes_unsure_rows_by_brute_force(monkeypatch):
    monkeypatch.setattr(points, "_EDGE_RTOL", 1e9)  # every row is "too close to the edge"
    xyz = clouds()["duplicates"]
    assert np.array_equal(points.knn_indices(xyz[:S], xyz, K), brute_knn(xyz[:S], xyz, K))


def test_knn_small_clouds_and_bad_k():
    xyz = clouds()["random"][:10]
    assert np.array_equal(points.knn_indices(xyz, xyz, 10), brute_knn(xyz, xyz, 10))
    with pytest.raises(ValueError, match="asked for 11 neighbours from 10 points"):
        points.knn_indices(xyz, xyz, 11)


@pytest.mark.parametrize("name", ["random", "quantised"])
def test_knn_sets_equal_the_old_cdist_topk(name):
    xyz = torch.from_numpy(clouds()[name])[None]  # (1, N, 3)
    q = xyz[:, :S]
    old = torch.cdist(q, xyz, compute_mode="donot_use_mm_for_euclid_dist").topk(K, largest=False).indices
    new = points.knn(q, xyz, K)
    if name == "random":  # no exact ties: the same neighbours in the same order
        assert torch.equal(new, old)
    # with exact ties topk orders them, and picks the members of a tie at the K-th place, its own way; the distances
    # are the same, and ours come sorted, ties by index
    d = torch.cdist(q, xyz, compute_mode="donot_use_mm_for_euclid_dist")[0]
    assert torch.equal(d.gather(1, new[0]), d.gather(1, old[0]).sort(dim=1).values)


def test_minipointnet_ignores_order_within_group():
    torch.manual_seed(0)
    net = MiniPointNet(6, 16, (8, 16, 32))
    groups = torch.randn(2, 4, 8, 6)
    shuffled = groups[:, :, torch.randperm(8)]
    net.eval()  # per point the same products; a matmul kernel may round a row differently at another position
    torch.testing.assert_close(net(groups), net(shuffled), atol=1e-6, rtol=1e-6)
    net.train()
    assert torch.allclose(net(groups), net(shuffled), atol=1e-5)  # batch statistics: a float sum in another order


@pytest.mark.parametrize("cfg", [(256, 16, 8), (2048, 128, 32)])
def test_encoder_tokens_unchanged_from_the_old_grouping(monkeypatch, cfg):
    n, g, k = cfg
    sizes = dict(encoder_dims=16, trans_dim=24, depth=2, num_heads=2)
    enc_cfg = PointEncoderConfig(num_points=n, num_groups=g, group_size=k, **sizes)
    torch.manual_seed(0)
    enc = PointEncoder(enc_cfg).eval()
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.uniform(-1, 1, (3, n, 6)).astype(np.float32))
    x[2, n // 2 :] = x[2, : n - n // 2]  # a cloud with every point twice
    new = enc(x)
    monkeypatch.setattr(point_encoder, "group_points", old_group_points)
    assert torch.equal(new, enc(x))
