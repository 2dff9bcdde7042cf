"""A few coloured surface primitives sampled area-weighted: smoke-run and test data for the model stack.

Each cloud is (N, 6) float32: xyz normalised to the unit sphere, rgb in [0, 1].
"""

from __future__ import annotations

import numpy as np

COLOURS = {"red": (0.85, 0.1, 0.1), "green": (0.1, 0.7, 0.2), "blue": (0.1, 0.2, 0.85), "yellow": (0.9, 0.85, 0.1)}
SHAPES = ("sphere", "cube", "cylinder", "cone")


def _sphere(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _cube(n: int, rng: np.random.Generator) -> np.ndarray:
    face = rng.integers(0, 6, size=n)  # six faces of equal area
    uv = rng.uniform(-1, 1, size=(n, 2))
    pts = np.empty((n, 3))
    axis = face // 2
    sign = np.where(face % 2 == 0, 1.0, -1.0)
    for a in range(3):
        sel = axis == a
        others = [i for i in range(3) if i != a]
        pts[sel, a] = sign[sel]
        pts[sel, others[0]] = uv[sel, 0]
        pts[sel, others[1]] = uv[sel, 1]
    return pts


def _cylinder(n: int, rng: np.random.Generator) -> np.ndarray:
    # side area 2*pi*r*h (r=0.5, h=2 -> 2*pi), caps 2*pi*r^2 (0.5*pi): pick by area
    side = rng.uniform(size=n) < (2 * np.pi) / (2 * np.pi + 0.5 * np.pi)
    theta = rng.uniform(0, 2 * np.pi, size=n)
    r = np.where(side, 0.5, 0.5 * np.sqrt(rng.uniform(size=n)))
    z = np.where(side, rng.uniform(-1, 1, size=n), np.where(rng.uniform(size=n) < 0.5, -1.0, 1.0))
    return np.stack([r * np.cos(theta), r * np.sin(theta), z], axis=1)


def _cone(n: int, rng: np.random.Generator) -> np.ndarray:
    # lateral surface: radius grows linearly with distance from the apex -> sqrt sampling; base disc by area
    slant = np.sqrt(0.5**2 + 2**2)
    lateral = rng.uniform(size=n) < (np.pi * 0.5 * slant) / (np.pi * 0.5 * slant + np.pi * 0.25)
    t = np.sqrt(rng.uniform(size=n))
    theta = rng.uniform(0, 2 * np.pi, size=n)
    r = np.where(lateral, 0.5 * t, 0.5 * np.sqrt(rng.uniform(size=n)))
    z = np.where(lateral, 1.0 - 2.0 * t, -1.0)
    return np.stack([r * np.cos(theta), r * np.sin(theta), z], axis=1)


_SAMPLERS = {"sphere": _sphere, "cube": _cube, "cylinder": _cylinder, "cone": _cone}


def sample_shape(shape: str, colour: str, num_points: int, seed: int = 0) -> np.ndarray:
    """(num_points, 6) cloud of one coloured primitive, unit-sphere normalised."""
    if shape not in _SAMPLERS:
        raise ValueError(f"unknown shape {shape!r} (known: {', '.join(SHAPES)})")
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r} (known: {', '.join(COLOURS)})")
    rng = np.random.default_rng(seed)
    xyz = _SAMPLERS[shape](num_points, rng)
    xyz = xyz - xyz.mean(axis=0)
    xyz = xyz / np.linalg.norm(xyz, axis=1).max()
    rgb = np.clip(np.asarray(COLOURS[colour]) + rng.normal(scale=0.03, size=(num_points, 3)), 0, 1)
    return np.concatenate([xyz, rgb], axis=1).astype(np.float32)


def caption(shape: str, colour: str) -> str:
    return f"A {colour} {shape}."
