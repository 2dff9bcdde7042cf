"""The one farthest point sampling and the one k-nearest-neighbour search of the package.

Encoder grouping, ``reduce_points``, mesh sampling and user clouds (chat, pipeline, demo, eval) all call these.

Notation used for array shapes:
    B: batch, N: points per cloud, S: FPS samples, K: neighbours per query.

The rules, identical on every path (and identical to the pure-torch loops this module replaced, so encoder outputs
did not move):

- **FPS** starts at point 0 (deterministic) and at each step takes the point whose float32 squared distance
  ``(dx² + dy²) + dz²`` to the nearest chosen point is largest; on a tie, the **lowest index** (``argmax``'s first
  maximum). On CPU it runs in ``pointalign.fps_tree`` (numba): a tree of bounding boxes skips the points a new sample
  cannot move (QuickFPS), so its result is the plain loop's exactly (tested on grids and duplicate points) at a
  fraction of the cost: 32,768 -> 8,192 in 10-30 ms, 2,000,000 -> 8,192 in about a second. ``fpsample`` is not
  used: its exact O(N x S) loop is 30-70x slower at mesh sizes, and its kd-tree variant (also exact) takes
  ``start_idx`` as a position in its own tree order, breaks ties by that order, and is slower than ours. On GPU the
  same loop runs in torch.
- **kNN** returns, for each query, the K points with the smallest float32 euclidean distance as
  ``torch.cdist(..., compute_mode="donot_use_mm_for_euclid_dist")`` computes it (its CPU kernel rounds differently
  from a numpy ``sqrt(((a - b) ** 2).sum())`` in about 7 % of pairs, so numpy's formula would move the K-th neighbour
  on near-ties), nearest first. On CPU a scipy ``cKDTree`` proposes K + 1 candidates with float64 distances; a row
  whose candidates are all clearly apart (relative gaps over ``_EDGE_RTOL``, far beyond float32 rounding) keeps that
  order, since float32 cannot reorder them; the other rows (near-ties, duplicates) are re-ranked by ``cdist`` (ties
  by the lowest index), and one whose K-th distance is too close to the candidates' edge to be sure is redone by
  brute force.
  On GPU: ``cdist`` + ``topk``. The point encoder is invariant to the order inside a group (a shared per-point MLP
  then max-pools; see ``MiniPointNet``), so only the neighbour *set* matters to it; where distances tie exactly at
  the K-th place, torch's ``topk`` picked an implementation-defined member of the tie and we pick the lowest index.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_CANDIDATE_MARGIN = 1  # extra kd-tree candidates per query (the edge checks keep any margin exact: a row whose K-th
# distance is not clearly inside the candidates is re-ranked, and redone by brute force when still unsure)
_EDGE_RTOL = 1e-5  # distances closer than this (relative) count as a near-tie: such rows are re-ranked in float32,
# and redone by brute force when the K-th is this close to the candidate edge (float32 rounding moves one by < 1e-6)
_EDGE_ATOL = 1e-12  # and closer than this (absolute), for distances near 0


def fps_indices(xyz: np.ndarray, num_samples: int, start: int = 0) -> np.ndarray:
    """Farthest point sampling of one cloud: (N, 3) -> (S,) int64 indices (rules in the module docstring).

    Args:
        xyz: (N, 3) coordinates (more columns are ignored); computed in float32.
        num_samples: S, 1 <= S <= N.
        start: the first index (0: the package's deterministic start).
    """
    n = xyz.shape[0]
    if not 1 <= num_samples <= n:
        raise ValueError(f"farthest point sampling: asked for {num_samples} samples from {n} points")
    if not 0 <= start < n:
        raise ValueError(f"farthest point sampling: start {start} is not a point of {n}")
    from pointalign.fps_tree import farthest_points

    return farthest_points(np.ascontiguousarray(xyz[:, :3], dtype=np.float32), num_samples, start)


def _fps_torch(xyz: Tensor, num_samples: int, start: Tensor) -> Tensor:
    """The torch loop (GPU and non-float32 path): (B, N, 3), (B,) first indices -> (B, S)."""
    b, n, _ = xyz.shape
    idx = torch.empty(b, num_samples, dtype=torch.long, device=xyz.device)
    dist = torch.full((b, n), float("inf"), dtype=xyz.dtype, device=xyz.device)  # (B, N)
    far = start.to(xyz.device)
    batch = torch.arange(b, device=xyz.device)
    for i in range(num_samples):
        idx[:, i] = far
        centre = xyz[batch, far].unsqueeze(1)  # (B, 1, 3)
        dist = torch.minimum(dist, ((xyz - centre) ** 2).sum(-1))  # (B, N)
        far = dist.argmax(-1)  # (B,)
    return idx


def farthest_point_sample(xyz: Tensor, num_samples: int, start: Tensor | None = None) -> Tensor:
    """Batched FPS: (B, N, 3) -> (B, S) long indices, on the tensor's device.

    Args:
        xyz: (B, N, 3) coordinates.
        num_samples: S <= N.
        start: (B,) first index of each cloud; None starts every cloud at point 0.
    """
    b, n, _ = xyz.shape
    if num_samples > n:
        raise ValueError(f"farthest_point_sample: asked for {num_samples} centres from {n} points")
    if start is None:
        start = torch.zeros(b, dtype=torch.long)
    if xyz.device.type != "cpu" or xyz.dtype != torch.float32:
        return _fps_torch(xyz, num_samples, start)
    cpu = xyz.detach().numpy()  # (B, N, 3)
    first = start.tolist()
    return torch.from_numpy(np.stack([fps_indices(cpu[i], num_samples, first[i]) for i in range(b)]))  # (B, S)


def _distances(query: Tensor, points: Tensor) -> Tensor:
    """(R, 3) queries, (R, M, 3) points -> (R, M) float32 euclidean distances, exactly as the encoder's ``cdist``
    always computed them (its CPU kernel rounds differently from a plain numpy formula; per pair it is stable)."""
    return torch.cdist(query[:, None, :], points, compute_mode="donot_use_mm_for_euclid_dist")[:, 0]  # (R, M)


def _knn_brute(query: Tensor, points: Tensor, k: int) -> Tensor:
    """(S, 3), (N, 3) -> (S, K): nearest first, ties by the lowest index."""
    d = torch.cdist(query, points, compute_mode="donot_use_mm_for_euclid_dist")  # (S, N)
    return d.sort(dim=1, stable=True).indices[:, :k]


def knn_indices(query: np.ndarray, points: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k nearest ``points`` to each ``query``, nearest first: (S, 3), (N, 3) -> (S, K) int64.

    Ties go to the lowest index. Coordinates are taken as float32.
    """
    from scipy.spatial import cKDTree

    q = np.ascontiguousarray(query[:, :3], dtype=np.float32)  # (S, 3)
    p = np.ascontiguousarray(points[:, :3], dtype=np.float32)  # (N, 3)
    n = p.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"knn: asked for {k} neighbours from {n} points")
    m = min(n, k + _CANDIDATE_MARGIN)
    if m == n:
        return _knn_brute(torch.from_numpy(q), torch.from_numpy(p), k).numpy()
    edge, cand = cKDTree(p).query(q, m)  # (S, M) float64 distances, ascending, and their indices
    # float32 rounding moves a distance by under 1e-6 of itself: where every step between the candidates' float64
    # distances is wider than _EDGE_RTOL of them, the float32 order is this order, with no tie and the K-th clearly
    # inside the candidates (every other point is at least edge[:, -1] away), so the row is final as it is
    sure = (edge[:, 1:] > edge[:, :-1] * (1 + _EDGE_RTOL) + _EDGE_ATOL).all(axis=1)  # (S,)
    out = cand[:, :k].astype(np.int64)  # (S, K)
    rows = np.nonzero(~sure)[0]
    if rows.size:
        out[rows] = _rerank(torch.from_numpy(q[rows]), torch.from_numpy(p), cand[rows], edge[rows, -1], k)
    return out


def _rerank(q: Tensor, p: Tensor, cand: np.ndarray, edge: np.ndarray, k: int) -> np.ndarray:
    """Rows with near-ties: the candidates re-ranked by ``cdist`` in float32, ties by index; a row whose K-th
    distance is not clearly inside the candidates (``edge``: (R,) their largest float64 distance) is redone by brute
    force. (R, 3), (N, 3), (R, M) -> (R, K)."""
    cand = torch.from_numpy(np.sort(cand, axis=1))  # by index, so the stable sort below breaks ties by index
    d = _distances(q, p[cand])  # (R, M) float32
    order = torch.from_numpy(np.argsort(d.numpy(), axis=1, kind="stable")[:, :k])  # (R, K); numpy's is faster here
    out = cand.gather(1, order)  # (R, K)
    kth = d.gather(1, order[:, -1:])[:, 0].double().numpy()  # (R,)
    # a point outside the candidates is at least edge away (float64); the float32 K-th must be clearly below
    unsure = np.nonzero(kth * (1 + _EDGE_RTOL) + _EDGE_ATOL >= edge)[0]
    if unsure.size:
        out[unsure] = _knn_brute(q[unsure], p, k)
    return out.numpy().astype(np.int64)


def knn(query: Tensor, points: Tensor, k: int) -> Tensor:
    """Batched kNN: (B, S, 3) queries, (B, N, 3) points -> (B, S, K) long indices into N, nearest first."""
    if query.device.type != "cpu" or points.dtype != torch.float32 or query.dtype != torch.float32:
        d = torch.cdist(query, points, compute_mode="donot_use_mm_for_euclid_dist")  # (B, S, N), exact
        return d.topk(k, dim=-1, largest=False, sorted=True).indices
    q, p = query.detach().numpy(), points.detach().numpy()
    return torch.from_numpy(np.stack([knn_indices(q[i], p[i], k) for i in range(q.shape[0])]))  # (B, S, K)
