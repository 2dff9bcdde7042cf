"""Exact farthest point sampling over a tree of bounding boxes, compiled with numba (imported only by
``pointalign.points``, which states the rules).

Notation used for array shapes:
    N: points, S: samples, T: tree nodes.

The points are put in a binary tree whose nodes hold tight axis-aligned boxes: each node splits its points at the
middle of its box's widest side, and leaves hold at most ``leaf`` points. Every node keeps the largest "distance to
the nearest sample" among its points and which point has it (the lowest original index on ties). A new sample can
only lower the distances of points nearer to it than to every earlier sample, so a node is skipped when the
smallest possible distance from the new sample to its box is at least the node's largest distance: no point in it
can change. That is the idea of QuickFPS (Han et al., 2023); the result is exactly that of the plain O(N x S) loop.

Why the skip is exact in float32: a point's distance is ``(dx*dx + dy*dy) + dz*dz`` with ``dx = px - qx`` rounded
to float32; the box bound is the same expression over ``lo - qx`` (or ``qx - hi``). Rounding is monotone, and a point
in the box is at least as far from ``q`` along each axis as the box face, so the bound never exceeds the distance the
plain loop computes.
"""

from __future__ import annotations

import numba
import numpy as np

LEAF = 64  # points per leaf at most: the fastest of 8 / 16 / 32 / 64 measured (2048 -> 64 up to 2M -> 8192)


def _compiled(fn):
    """``numba.njit`` with numba's on-disk cache (next to this module, else in the user's cache folder); where
    neither is writable (a read-only install and home), numba refuses ``cache=True`` at import, so compile in each
    process instead (about 3 s at the first call). ``NUMBA_CACHE_DIR`` names another folder."""
    try:
        return numba.njit(cache=True)(fn)
    except RuntimeError as exc:
        if "no locator available" not in str(exc):
            raise
        return numba.njit(fn)


@_compiled
def _build(xyz: np.ndarray, leaf: int):  # pragma: no cover - compiled
    """(N, 3) float32 -> the tree: point order (N,), per node start, end, left, right (T,) and box lo, hi (T, 3).

    Each split is clamped so both children hold at least ``leaf // 2`` points, which bounds T by 4N / leaf + 1.
    """
    n = xyz.shape[0]
    half = max(leaf // 2, 1)
    cap = 2 * (n // half) + 1
    order = np.arange(n)
    start = np.empty(cap, np.int64)
    end = np.empty(cap, np.int64)
    left = np.full(cap, -1, np.int64)
    right = np.full(cap, -1, np.int64)
    lo = np.empty((cap, 3), np.float32)
    hi = np.empty((cap, 3), np.float32)
    todo = np.empty(cap, np.int64)
    count, top = 1, 0
    start[0], end[0], todo[0] = 0, n, 0
    while top >= 0:
        node = todo[top]
        top -= 1
        s, e = start[node], end[node]
        for d in range(3):
            lo[node, d] = np.inf
            hi[node, d] = -np.inf
        for i in range(s, e):
            for d in range(3):
                v = xyz[order[i], d]
                lo[node, d] = min(lo[node, d], v)
                hi[node, d] = max(hi[node, d], v)
        if e - s <= leaf:
            continue
        dim = 0
        for d in range(1, 3):
            if hi[node, d] - lo[node, d] > hi[node, dim] - lo[node, dim]:
                dim = d
        if hi[node, dim] - lo[node, dim] <= 0:  # every point equal: one leaf
            continue
        split = lo[node, dim] + np.float32(0.5) * (hi[node, dim] - lo[node, dim])
        i, j = s, e - 1
        while i <= j:  # points below the split first
            if xyz[order[i], dim] < split:
                i += 1
            else:
                order[i], order[j] = order[j], order[i]
                j -= 1
        mid = min(max(i, s + half), e - half)
        lft, rgt = count, count + 1
        count += 2
        start[lft], end[lft], start[rgt], end[rgt] = s, mid, mid, e
        left[node], right[node] = lft, rgt
        todo[top + 1], todo[top + 2] = rgt, lft
        top += 2
    return order, start[:count], end[:count], left[:count], right[:count], lo[:count], hi[:count]


@_compiled
def _sample(xyz: np.ndarray, num: int, first: int, leaf: int) -> np.ndarray:  # pragma: no cover - compiled
    """(N, 3) float32 -> (S,) int64: FPS from ``first``, farthest by float32 squared distance, lowest index on ties."""
    order, start, end, left, right, lo, hi = _build(xyz, leaf)
    n, nodes = xyz.shape[0], start.shape[0]
    pts = np.empty((n, 3), np.float32)  # points in tree order, so a leaf is one contiguous run
    for i in range(n):
        for d in range(3):
            pts[i, d] = xyz[order[i], d]
    nearest = np.full(n, np.inf, np.float32)  # (N,) squared distance to the nearest sample, in tree order
    node_max = np.full(nodes, np.inf, np.float32)  # (T,) largest ``nearest`` in the node
    node_arg = np.zeros(nodes, np.int64)  # (T,) original index of the point that has it (lowest on ties)
    todo = np.empty(nodes, np.int64)
    seen = np.empty(nodes, np.int64)  # inner nodes visited, parents before children
    out = np.empty(num, np.int64)
    far = first
    for k in range(num):
        out[k] = far
        qx, qy, qz = xyz[far, 0], xyz[far, 1], xyz[far, 2]
        top, nseen = 0, 0
        todo[0] = 0
        while top >= 0:
            node = todo[top]
            top -= 1
            bx = max(lo[node, 0] - qx, qx - hi[node, 0], np.float32(0.0))
            by = max(lo[node, 1] - qy, qy - hi[node, 1], np.float32(0.0))
            bz = max(lo[node, 2] - qz, qz - hi[node, 2], np.float32(0.0))
            if (bx * bx + by * by) + bz * bz >= node_max[node]:
                continue  # no point of this node is nearer to the new sample than to its nearest sample
            if left[node] < 0:
                best, arg = np.float32(-1.0), n
                for i in range(start[node], end[node]):
                    dx, dy, dz = pts[i, 0] - qx, pts[i, 1] - qy, pts[i, 2] - qz
                    dist = min(nearest[i], (dx * dx + dy * dy) + dz * dz)
                    nearest[i] = dist
                    if dist > best or (dist == best and order[i] < arg):
                        best, arg = dist, order[i]
                node_max[node], node_arg[node] = best, arg
            else:
                seen[nseen] = node
                nseen += 1
                todo[top + 1], todo[top + 2] = right[node], left[node]
                top += 2
        for v in range(nseen - 1, -1, -1):  # children before parents
            node = seen[v]
            a, b = left[node], right[node]
            if node_max[a] > node_max[b] or (node_max[a] == node_max[b] and node_arg[a] < node_arg[b]):
                node_max[node], node_arg[node] = node_max[a], node_arg[a]
            else:
                node_max[node], node_arg[node] = node_max[b], node_arg[b]
        far = node_arg[0]
    return out


def farthest_points(xyz: np.ndarray, num_samples: int, start: int, leaf: int = LEAF) -> np.ndarray:
    """(N, 3) float32 C-contiguous -> (S,) int64 FPS indices (checked by the caller, ``pointalign.points``)."""
    return _sample(xyz, np.int64(num_samples), np.int64(start), np.int64(leaf))
