"""Triangle-mesh surface primitives and area-weighted colour point sampling.

Every primitive is a ``Part``: triangles (T, 3, 3) in object coordinates (y up) plus a named colour. Sampling draws
triangles with probability proportional to their area and uniform barycentric points inside them, so a part's
share of the points is its share of the surface area. Outward normals come with the points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Named palette: every colour word the generator uses, with its rgb in [0, 1].
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.12, 0.12),
    "orange": (0.95, 0.50, 0.10),
    "yellow": (0.92, 0.82, 0.15),
    "green": (0.15, 0.62, 0.22),
    "blue": (0.15, 0.30, 0.80),
    "purple": (0.50, 0.20, 0.65),
    "pink": (0.95, 0.55, 0.70),
    "brown": (0.50, 0.30, 0.15),
    "white": (0.93, 0.93, 0.93),
    "grey": (0.50, 0.50, 0.50),
    "black": (0.08, 0.08, 0.08),
    "beige": (0.85, 0.76, 0.60),
}


@dataclass
class Part:
    """One coloured surface: ``triangles`` (T, 3, 3) float64."""

    name: str
    triangles: np.ndarray
    colour: str

    def moved(self, offset: tuple[float, float, float]) -> Part:
        return Part(self.name, self.triangles + np.asarray(offset, dtype=np.float64), self.colour)


def _quads_to_tris(grid: np.ndarray, close_u: bool) -> np.ndarray:
    """(U, V, 3) vertex grid -> triangles of its quads; ``close_u`` wraps the U direction."""
    if close_u:
        grid = np.concatenate([grid, grid[:1]], axis=0)
    a, b = grid[:-1, :-1], grid[1:, :-1]
    c, d = grid[1:, 1:], grid[:-1, 1:]
    t1 = np.stack([a, b, c], axis=2).reshape(-1, 3, 3)
    t2 = np.stack([a, c, d], axis=2).reshape(-1, 3, 3)
    return np.concatenate([t1, t2])


def _fan(center: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Triangles of a closed polygon ``ring`` (K, 3) fanned from ``center``."""
    nxt = np.roll(ring, -1, axis=0)
    return np.stack([np.broadcast_to(center, ring.shape), ring, nxt], axis=1)


def box(name: str, colour: str, size: tuple[float, float, float], center=(0.0, 0.0, 0.0)) -> Part:
    """Axis-aligned box of full extents ``size`` (x, y, z)."""
    sx, sy, sz = (s / 2 for s in size)
    v = np.array([[x, y, z] for x in (-sx, sx) for y in (-sy, sy) for z in (-sz, sz)])
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    tris = np.array([[v[a], v[b], v[c]] for a, b, c, d in faces] + [[v[a], v[c], v[d]] for a, b, c, d in faces])
    return Part(name, tris + np.asarray(center), colour)


def _rotate_y_up_to(axis: str, pts: np.ndarray) -> np.ndarray:
    """Proper rotation taking the +y axis to +``axis`` (keeps outward normals outward)."""
    if axis == "y":
        return pts
    if axis == "x":  # (x, y, z) -> (y, -x, z)
        return np.stack([pts[..., 1], -pts[..., 0], pts[..., 2]], axis=-1)
    if axis == "z":  # (x, y, z) -> (x, -z, y)
        return np.stack([pts[..., 0], -pts[..., 2], pts[..., 1]], axis=-1)
    raise ValueError(f"axis must be x, y or z, got {axis!r}")


def frustum(
    name: str,
    colour: str,
    r_bottom: float,
    r_top: float,
    height: float,
    center=(0.0, 0.0, 0.0),
    axis: str = "y",
    caps: bool = True,
    segments: int = 24,
    square: bool = False,
) -> Part:
    """A (truncated) cone or cylinder along ``axis``; ``square`` makes a 4-sided prism/pyramid instead."""
    n = 4 if square else segments
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False) + (np.pi / 4 if square else 0.0)
    if square:  # radii are half-widths of the square
        r_bottom, r_top = r_bottom * np.sqrt(2), r_top * np.sqrt(2)
    ring = np.stack([np.cos(ang), np.zeros(n), np.sin(ang)], axis=1)
    lo = ring * [r_bottom, 0, r_bottom] + [0, -height / 2, 0]
    hi = ring * [r_top, 0, r_top] + [0, height / 2, 0]
    tris = [_quads_to_tris(np.stack([lo, hi], axis=1), close_u=True)]
    if caps:
        if r_bottom > 0:
            tris.append(_fan(np.array([0, -height / 2, 0]), lo[::-1]))
        if r_top > 0:
            tris.append(_fan(np.array([0, height / 2, 0]), hi))
    out = _rotate_y_up_to(axis, np.concatenate(tris))
    return Part(name, out + np.asarray(center), colour)


def cylinder(
    name: str, colour: str, radius: float, height: float, center=(0.0, 0.0, 0.0), axis: str = "y", caps: bool = True
) -> Part:
    return frustum(name, colour, radius, radius, height, center, axis, caps)


def ellipsoid(
    name: str, colour: str, radii: tuple[float, float, float], center=(0.0, 0.0, 0.0), segments: int = 20
) -> Part:
    """Ellipsoid (a sphere when the radii are equal)."""
    u = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    v = np.linspace(0, np.pi, segments // 2 + 1)
    grid = np.stack(
        [np.outer(np.cos(u), np.sin(v)), np.outer(np.ones_like(u), np.cos(v)), np.outer(np.sin(u), np.sin(v))],
        axis=-1,
    )  # (U, V, 3)
    tris = _quads_to_tris(grid * np.asarray(radii), close_u=True)
    area = np.linalg.norm(np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]), axis=1)
    return Part(name, tris[area > 1e-12] + np.asarray(center), colour)


def torus(
    name: str, colour: str, major: float, minor: float, center=(0.0, 0.0, 0.0), axis: str = "y", segments: int = 24
) -> Part:
    """Torus around ``axis``."""
    u = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    v = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    grid = np.stack(
        [(major + minor * np.cos(vv)) * np.cos(uu), minor * np.sin(vv), (major + minor * np.cos(vv)) * np.sin(uu)],
        axis=-1,
    )
    grid = np.concatenate([grid, grid[:, :1]], axis=1)  # close v
    tris = _quads_to_tris(grid, close_u=True)
    return Part(name, _rotate_y_up_to(axis, tris) + np.asarray(center), colour)


def rotate(part: Part, axis: str, angle: float, origin=(0.0, 0.0, 0.0)) -> Part:
    """Rotate a part by ``angle`` radians about an axis through ``origin``."""
    c, s = np.cos(angle), np.sin(angle)
    mats = {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }
    o = np.asarray(origin)
    return Part(part.name, (part.triangles - o) @ mats[axis].T + o, part.colour)


def sample_parts(
    parts: list[Part], num_points: int, rng: np.random.Generator, colour_noise: float = 0.03
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area-weighted surface samples of ``parts``.

    Returns:
        xyz (N, 3), rgb (N, 3) in [0, 1], unit normals (N, 3); all float64, in object coordinates.
    """
    tris = np.concatenate([p.triangles for p in parts])  # (T, 3, 3)
    colours = np.concatenate([np.tile(PALETTE[p.colour], (len(p.triangles), 1)) for p in parts])  # (T, 3)
    cross = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])  # (T, 3)
    area = np.linalg.norm(cross, axis=1)
    if area.sum() <= 0:
        raise ValueError("sample_parts: the parts have no surface area")
    idx = rng.choice(len(tris), size=num_points, p=area / area.sum())
    r1, r2 = rng.uniform(size=(2, num_points))
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)  # (N, 3) barycentric
    xyz = np.einsum("nk,nkd->nd", w, tris[idx])
    normals = cross[idx] / np.maximum(area[idx], 1e-12)[:, None]
    rgb = np.clip(colours[idx] + rng.normal(scale=colour_noise, size=(num_points, 3)), 0.0, 1.0)
    return xyz, rgb, normals


def normalize_unit_sphere(xyz: np.ndarray) -> np.ndarray:
    """Centre on the mean and divide by the largest point norm."""
    xyz = xyz - xyz.mean(axis=0)
    scale = np.linalg.norm(xyz, axis=1).max()
    return xyz / scale if scale > 0 else xyz
