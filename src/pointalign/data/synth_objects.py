"""Procedural 3D objects for the 40 ModelNet40 classes, with the facts their text must state.

Each generator draws its parameters from ``rng`` and returns the parts (coloured surfaces) and ``Facts``: countable
parts (legs, shelves, drawers, wheels, steps, ...), shape variants (round / square ...), proportions (tall / short,
wide / narrow, drawn from separated ranges so the word is unambiguous), presence of optional parts, and the colours
of named parts. The dominant colour is measured from the surface areas afterwards, so it is true of the cloud.
Coordinates: y up, the object roughly within [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pointalign.data.geometry import Part, box, cylinder, ellipsoid, frustum, rotate, torus

WOOD = ("brown", "beige", "black", "white")
METAL = ("grey", "black", "white")
BRIGHT = ("red", "orange", "yellow", "green", "blue", "purple", "pink")
FABRIC = ("red", "blue", "green", "grey", "beige", "brown", "purple", "black")
ANY = tuple(sorted(set(WOOD + METAL + BRIGHT)))


@dataclass
class Facts:
    counts: dict[str, int] = field(default_factory=dict)  # "legs" -> 4
    variants: dict[str, str] = field(default_factory=dict)  # "top" -> "round"
    proportion: tuple[str, str] | None = None  # (word that holds, its opposite), e.g. ("tall", "short")
    has: dict[str, bool] = field(default_factory=dict)  # optional part -> present
    part_colours: dict[str, str] = field(default_factory=dict)  # "seat" -> "red"


class Draw:
    """Parameter draws from one generator."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def uni(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def int(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def coin(self, p: float = 0.5) -> bool:
        return bool(self.rng.uniform() < p)

    def proportion(self, word_hi: str, word_lo: str, hi: tuple[float, float], lo: tuple[float, float]):
        """(value, (word, opposite)) from one of two separated ranges."""
        if self.coin():
            return self.uni(*hi), (word_hi, word_lo)
        return self.uni(*lo), (word_lo, word_hi)

    def colours(self, palette, k: int) -> list[str]:
        """k different colours from a palette."""
        idx = self.rng.permutation(len(palette))[:k]
        return [palette[i] for i in idx]


def _legs(name, colour, corners, radius, height, top_y, square=False) -> list[Part]:
    maker = (
        (lambda c: box(name, colour, (2 * radius, height, 2 * radius), c))
        if square
        else (lambda c: cylinder(name, colour, radius, height, c))
    )
    return [maker((x, top_y - height / 2, z)) for x, z in corners]


def _corners(hx: float, hz: float, n: int) -> list[tuple[float, float]]:
    """n leg positions under a rectangle of half sizes (hx, hz): 3 = a triangle, 4 = corners, 6 = corners + middles."""
    if n == 3:
        return [
            (hx * np.cos(a), hz * np.sin(a)) for a in np.linspace(np.pi / 2, np.pi / 2 + 2 * np.pi, 3, endpoint=False)
        ]
    pts = [(-hx, -hz), (hx, -hz), (hx, hz), (-hx, hz)]
    if n == 6:
        pts += [(0.0, -hz), (0.0, hz)]
    if n == 8:
        pts += [(0.0, -hz), (0.0, hz), (-hx, 0.0), (hx, 0.0)]
    return pts[:n]


def _open_box(name, colour, size, center, wall=0.04) -> list[Part]:
    """A container without a top: bottom + four walls."""
    sx, sy, sz = size
    cx, cy, cz = center
    walls = [
        box(name, colour, (sx, wall, sz), (cx, cy - sy / 2, cz)),
        box(name, colour, (wall, sy, sz), (cx - sx / 2, cy, cz)),
        box(name, colour, (wall, sy, sz), (cx + sx / 2, cy, cz)),
        box(name, colour, (sx, sy, wall), (cx, cy, cz - sz / 2)),
        box(name, colour, (sx, sy, wall), (cx, cy, cz + sz / 2)),
    ]
    return [Part(name, np.concatenate([w.triangles for w in walls]), colour)]


# ---------------------------------------------------------------------------------------------------------------
# One generator per class. Each returns (parts, facts).


def airplane(d: Draw):
    body, wing = d.pick(["white", "grey", "blue"]), d.pick(["white", "grey", "red", "blue"])
    length = d.uni(1.6, 2.0)
    engines = d.pick([0, 2, 4])
    swept = d.coin()
    parts = [
        cylinder("fuselage", body, 0.12, length, axis="x"),
        frustum("nose", body, 0.12, 0.0, 0.25, (length / 2 + 0.12, 0, 0), axis="x"),
    ]
    span = d.uni(1.4, 1.9)
    w = box("wings", wing, (0.35, 0.03, span), (0.05, -0.03, 0))
    parts.append(rotate(w, "y", 0.35) if swept else w)
    parts += [
        box("tail", wing, (0.25, 0.35, 0.03), (-length / 2 + 0.1, 0.2, 0)),
        box("tail", wing, (0.2, 0.03, 0.6), (-length / 2 + 0.1, 0.02, 0)),
    ]
    for i in range(engines):
        z = (0.35 if i < 2 else 0.65) * (1 if i % 2 else -1)
        parts.append(cylinder("engines", "grey", 0.07, 0.3, (0.12, -0.12, z), axis="x"))
    facts = Facts(
        counts={"engines": engines},
        variants={"wings": "swept" if swept else "straight"},
        part_colours={"fuselage": body, "wings": wing},
    )
    return parts, facts


def bathtub(d: Draw):
    colour = d.pick(["white", "white", "beige", "pink", "blue"])
    length, prop = d.proportion("long", "short", (1.7, 2.0), (1.1, 1.3))
    oval = d.coin()
    feet = d.coin(0.4)
    h = 0.55
    if oval:
        parts = [frustum("tub", colour, 0.3, 0.34, h, caps=False)]
        parts = [Part("tub", p.triangles * [length / 0.68, 1, 1.4], colour) for p in parts]
        parts.append(
            Part(
                "tub",
                frustum("tub", colour, 0.3, 0.0, 0.01, (0, -h / 2, 0)).triangles * [length / 0.68, 1, 1.4],
                colour,
            )
        )
    else:
        parts = _open_box("tub", colour, (length, h, 0.8), (0, 0, 0))
    if feet:
        parts += [
            ellipsoid("feet", "grey", (0.06, 0.08, 0.06), (x, -h / 2 - 0.07, z))
            for x, z in _corners(length / 2 - 0.15, 0.3, 4)
        ]
    return parts, Facts(
        counts={"feet": 4 if feet else 0},
        variants={"tub": "oval" if oval else "rectangular"},
        proportion=prop,
        has={"feet": feet},
    )


def bed(d: Draw):
    frame, sheet = d.pick(WOOD), d.pick(["white", "blue", "grey", "pink", "beige", "green"])
    pillows = d.int(1, 3)
    width, prop = d.proportion("wide", "narrow", (1.5, 1.8), (0.8, 1.0))
    footboard = d.coin()
    length = 2.0
    parts = [
        box("frame", frame, (width, 0.25, length), (0, -0.2, 0)),
        box("mattress", sheet, (width - 0.05, 0.2, length - 0.05), (0, 0.02, 0)),
        box("headboard", frame, (width, 0.8, 0.08), (0, 0.15, -length / 2)),
    ]
    parts += _legs("legs", frame, _corners(width / 2 - 0.05, length / 2 - 0.05, 4), 0.04, 0.2, -0.32, square=True)
    for i in range(pillows):
        x = (i - (pillows - 1) / 2) * (width / max(pillows, 1))
        parts.append(
            ellipsoid(
                "pillows", "white", (min(0.25, width / (2 * pillows) - 0.02), 0.07, 0.15), (x, 0.18, -length / 2 + 0.3)
            )
        )
    if footboard:
        parts.append(box("footboard", frame, (width, 0.45, 0.08), (0, -0.05, length / 2)))
    return parts, Facts(
        counts={"pillows": pillows},
        proportion=prop,
        has={"footboard": footboard},
        part_colours={"frame": frame, "mattress": sheet},
    )


def bench(d: Draw):
    seat, legc = d.pick(WOOD + ("green", "red")), d.pick(METAL + WOOD)
    legs = d.pick([4, 6])
    back = d.coin()
    length = d.uni(1.6, 2.0)
    parts = [box("seat", seat, (length, 0.08, 0.45), (0, 0, 0))]
    parts += _legs("legs", legc, _corners(length / 2 - 0.08, 0.17, legs), 0.035, 0.5, -0.04, square=d.coin())
    if back:
        parts.append(box("backrest", seat, (length, 0.4, 0.06), (0, 0.3, -0.22)))
    return parts, Facts(counts={"legs": legs}, has={"backrest": back}, part_colours={"seat": seat, "legs": legc})


def bookshelf(d: Draw):
    colour = d.pick(WOOD)
    shelves = d.int(2, 5)
    height, prop = d.proportion("tall", "short", (1.8, 2.0), (0.9, 1.1))
    width = d.uni(0.8, 1.0)
    parts = [box("sides", colour, (0.05, height, 0.35), (x, 0, 0)) for x in (-width / 2, width / 2)]
    parts += [
        box("top", colour, (width, 0.05, 0.35), (0, height / 2, 0)),
        box("bottom", colour, (width, 0.05, 0.35), (0, -height / 2, 0)),
        box("back", colour, (width, height, 0.02), (0, 0, -0.17)),
    ]
    for i in range(1, shelves + 1):
        parts.append(box("shelves", colour, (width, 0.04, 0.33), (0, -height / 2 + i * height / (shelves + 1), 0)))
    return parts, Facts(counts={"shelves": shelves}, proportion=prop)


def bottle(d: Draw):
    colour, cap = (
        d.pick(["green", "blue", "white", "brown", "red", "orange"]),
        d.pick(["white", "black", "red", "yellow"]),
    )
    height, prop = d.proportion("tall", "short", (1.8, 2.0), (1.0, 1.2))
    square = d.coin(0.3)
    r = 0.3
    body_h = height * 0.6
    parts = [
        frustum("body", colour, r, r, body_h, (0, -height / 2 + body_h / 2, 0), square=square),
        frustum(
            "shoulder",
            colour,
            r,
            0.1,
            height * 0.15,
            (0, -height / 2 + body_h + height * 0.075, 0),
            caps=False,
            square=square,
        ),
        cylinder("neck", colour, 0.1, height * 0.17, (0, height / 2 - height * 0.165, 0), caps=False),
        cylinder("cap", cap, 0.11, height * 0.08, (0, height / 2 - height * 0.04, 0)),
    ]
    return parts, Facts(
        variants={"body": "square" if square else "round"}, proportion=prop, part_colours={"cap": cap, "body": colour}
    )


def bowl(d: Draw):
    colour = d.pick(ANY)
    depth, prop = d.proportion("deep", "shallow", (0.7, 0.9), (0.25, 0.35))
    r = 1.0
    parts = [
        frustum("bowl", colour, r * 0.5, r, depth, caps=False),
        frustum("bowl", colour, r * 0.45, r * 0.95, depth * 0.95, (0, 0.02, 0), caps=False),
        cylinder("foot", colour, r * 0.5, 0.05, (0, -depth / 2, 0)),
    ]
    return parts, Facts(proportion=prop)


def car(d: Draw):
    body, wheelc = d.pick(BRIGHT + ("black", "white", "grey")), "black"
    length = 2.0
    cabin_len, prop = d.proportion("long", "short", (1.1, 1.3), (0.6, 0.75))
    roof = d.coin(0.3)  # roof rack
    parts = [
        box("body", body, (length, 0.4, 0.9), (0, 0, 0)),
        box("cabin", body, (cabin_len, 0.35, 0.85), (-0.1, 0.37, 0)),
        box("windows", "grey", (cabin_len + 0.02, 0.2, 0.87), (-0.1, 0.4, 0)),
    ]
    for x, z in _corners(0.65, 0.45, 4):
        parts.append(cylinder("wheels", wheelc, 0.2, 0.12, (x, -0.2, z), axis="z"))
    if roof:
        parts.append(box("roof rack", "grey", (cabin_len * 0.8, 0.05, 0.7), (-0.1, 0.6, 0)))
    return parts, Facts(
        counts={"wheels": 4},
        variants={"cabin": prop[0]},
        has={"roof rack": roof},
        part_colours={"body": body, "wheels": wheelc},
    )


def chair(d: Draw):
    seat, legc = d.pick(FABRIC + WOOD), d.pick(WOOD + METAL)
    office = d.coin(0.3)
    arms = d.coin()
    back_h, prop = d.proportion("tall", "low", (0.8, 1.0), (0.3, 0.4))
    parts = [
        box("seat", seat, (0.6, 0.08, 0.6), (0, 0, 0)),
        box("backrest", seat, (0.6, back_h, 0.06), (0, back_h / 2, -0.28)),
    ]
    if office:
        legs = 5
        parts.append(cylinder("legs", legc, 0.04, 0.45, (0, -0.26, 0)))
        for a in np.linspace(0, 2 * np.pi, 5, endpoint=False):
            arm = box("legs", legc, (0.35, 0.04, 0.05), (0.17, -0.48, 0))
            parts.append(rotate(arm, "y", a))
            parts.append(
                cylinder("wheels", "black", 0.04, 0.04, (0.33 * np.cos(-a), -0.53, 0.33 * np.sin(-a)), axis="z")
            )
    else:
        legs = d.pick([3, 4, 4])
        parts += _legs("legs", legc, _corners(0.26, 0.26, legs), 0.03, 0.5, -0.04, square=d.coin())
    if arms:
        parts += [box("armrests", seat, (0.06, 0.05, 0.5), (x, 0.25, 0)) for x in (-0.3, 0.3)]
        parts += [box("armrests", seat, (0.05, 0.25, 0.05), (x, 0.12, 0.2)) for x in (-0.3, 0.3)]
    counts = {"legs": legs} if not office else {"wheels": 5}
    facts = Facts(
        counts=counts,
        variants={"backrest": prop[0]},
        has={"armrests": arms},
        part_colours={"seat": seat, "legs": legc},
    )
    return parts, facts


def cone(d: Draw):
    colour = d.pick(["orange", "orange", "red", "yellow"])
    stripes = d.int(0, 2)
    height, prop = d.proportion("tall", "short", (1.8, 2.0), (1.0, 1.2))
    parts = [
        box("base", "black", (0.9, 0.06, 0.9), (0, -height / 2, 0)),
        frustum("cone", colour, 0.35, 0.05, height, caps=False),
    ]
    for i in range(stripes):
        y = height * (0.1 + 0.25 * i)
        r = 0.35 - (0.3 * (y + height / 2) / height)
        parts.append(
            frustum(
                "white stripes",
                "white",
                r + 0.01,
                r - 0.02,
                height * 0.1,
                (0, y - height / 2 + height * 0.3, 0),
                caps=False,
            )
        )
    return parts, Facts(counts={"white stripes": stripes}, proportion=prop, part_colours={"cone": colour})


def cup(d: Draw):
    colour = d.pick(ANY)
    height, prop = d.proportion("tall", "short", (1.3, 1.5), (0.6, 0.7))
    handle = d.coin(0.7)
    parts = [cylinder("cup", colour, 0.4, height, caps=False), cylinder("cup", colour, 0.4, 0.02, (0, -height / 2, 0))]
    if handle:
        parts.append(torus("handle", colour, 0.18, 0.04, (0.45, 0, 0), axis="z"))
    return parts, Facts(proportion=prop, has={"handle": handle})


def curtain(d: Draw):
    colour = d.pick(FABRIC + ("white", "yellow"))
    panels = d.int(1, 3)
    height = 2.0
    width = 1.8
    parts = [cylinder("rod", "grey", 0.03, width + 0.2, (0, height / 2, 0), axis="x")]
    pw = width / panels
    for i in range(panels):
        x0 = -width / 2 + i * pw
        xs = np.linspace(x0 + 0.02, x0 + pw - 0.02, 24)
        zs = 0.06 * np.sin((xs - x0) / pw * 2 * np.pi * 3)
        ys = np.array([-height / 2, height / 2 - 0.05])
        grid = np.stack([np.repeat(xs[:, None], 2, 1), np.tile(ys, (len(xs), 1)), np.repeat(zs[:, None], 2, 1)], -1)
        a, b, c, dd = grid[:-1, 0], grid[1:, 0], grid[1:, 1], grid[:-1, 1]
        tris = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, dd], 1)])
        parts.append(Part("panels", tris, colour))
    return parts, Facts(counts={"panels": panels}, part_colours={"panels": colour})


def desk(d: Draw):
    top, legc = d.pick(WOOD), d.pick(WOOD + METAL)
    drawers = d.int(0, 4)
    width = d.uni(1.6, 1.9)
    parts = [box("top", top, (width, 0.05, 0.8), (0, 0.4, 0))]
    if drawers:
        parts.append(box("drawer unit", top, (0.45, 0.75, 0.75), (width / 2 - 0.25, 0.0, 0)))
        for i in range(drawers):
            y = 0.35 - (i + 0.5) * 0.75 / drawers
            parts.append(box("drawers", top, (0.4, 0.75 / drawers - 0.03, 0.03), (width / 2 - 0.25, y, 0.39)))
            parts.append(ellipsoid("handles", "grey", (0.05, 0.015, 0.015), (width / 2 - 0.25, y, 0.42)))
        parts += _legs("legs", legc, [(-width / 2 + 0.05, -0.35), (-width / 2 + 0.05, 0.35)], 0.03, 0.75, 0.38, True)
    else:
        parts += _legs("legs", legc, _corners(width / 2 - 0.05, 0.35, 4), 0.03, 0.75, 0.38, square=True)
    return parts, Facts(counts={"drawers": drawers}, part_colours={"top": top})


def door(d: Draw):
    colour = d.pick(WOOD + ("red", "blue", "green"))
    panels = d.pick([2, 4, 6])
    window = d.coin(0.3)
    parts = [
        box("door", colour, (0.9, 2.0, 0.05), (0, 0, 0)),
        ellipsoid("handle", "grey", (0.03, 0.03, 0.05), (0.35, 0, 0.05)),
    ]
    rows = panels // 2
    for r in range(rows):
        for c in (-1, 1):
            y = 0.9 - (r + 0.5) * 1.8 / rows
            if window and r == 0:
                continue
            parts.append(box("panels", colour, (0.32, 1.8 / rows - 0.12, 0.03), (c * 0.2, y, 0.035)))
    if window:
        parts.append(box("window", "grey", (0.7, 1.8 / rows - 0.12, 0.03), (0, 0.9 - 0.9 / rows, 0.035)))
    return parts, Facts(
        counts={"panels": panels - (2 if window else 0)}, has={"window": window}, part_colours={"door": colour}
    )


def dresser(d: Draw):
    colour, knob = d.pick(WOOD), d.pick(["grey", "black", "beige"])
    rows = d.int(2, 5)
    cols = d.pick([1, 2])
    width, prop = d.proportion("wide", "narrow", (1.6, 1.9), (0.8, 1.0))
    h = 1.2
    parts = [box("body", colour, (width, h, 0.5), (0, 0, 0))]
    parts += _legs("legs", colour, _corners(width / 2 - 0.05, 0.2, 4), 0.03, 0.15, -h / 2, square=True)
    for r in range(rows):
        for c in range(cols):
            x = (c - (cols - 1) / 2) * width / cols
            y = h / 2 - (r + 0.5) * h / rows
            parts.append(box("drawers", colour, (width / cols - 0.06, h / rows - 0.05, 0.03), (x, y, 0.26)))
            parts.append(ellipsoid("knobs", knob, (0.03, 0.03, 0.03), (x, y, 0.29)))
    return parts, Facts(counts={"drawers": rows * cols}, proportion=prop, part_colours={"knobs": knob})


def flower_pot(d: Draw):
    pot, flower = (
        d.pick(["brown", "orange", "white", "grey", "blue"]),
        d.pick(["red", "yellow", "pink", "purple", "white"]),
    )
    flowers = d.int(1, 5)
    square = d.coin(0.3)
    parts = [
        frustum("pot", pot, 0.3, 0.4, 0.6, (0, -0.6, 0), caps=False, square=square),
        frustum("pot", pot, 0.3, 0.0, 0.01, (0, -0.9, 0), square=square),
        frustum("soil", "brown", 0.38, 0.0, 0.01, (0, -0.35, 0), square=square),
    ]
    for i in range(flowers):
        a = 2 * np.pi * i / flowers
        x, z = 0.15 * np.cos(a) * (flowers > 1), 0.15 * np.sin(a) * (flowers > 1)
        h = d.uni(0.6, 0.9)
        parts.append(cylinder("stems", "green", 0.02, h, (x, -0.35 + h / 2, z), caps=False))
        parts.append(ellipsoid("flowers", flower, (0.1, 0.06, 0.1), (x, -0.35 + h, z)))
    return parts, Facts(
        counts={"flowers": flowers},
        variants={"pot": "square" if square else "round"},
        part_colours={"pot": pot, "flowers": flower},
    )


def glass_box(d: Draw):
    frame = d.pick(METAL + ("brown",))
    height, prop = d.proportion("tall", "flat", (1.6, 1.9), (0.5, 0.7))
    shelves = d.int(0, 2) if height > 1 else 0
    w = 1.0
    parts = [box("glass", "white", (w, height, w), (0, 0, 0))]
    e = 0.04
    for x in (-w / 2, w / 2):
        for z in (-w / 2, w / 2):
            parts.append(box("frame", frame, (e, height, e), (x, 0, z)))
    for y in (-height / 2, height / 2):
        parts += [box("frame", frame, (w, e, e), (0, y, z)) for z in (-w / 2, w / 2)]
        parts += [box("frame", frame, (e, e, w), (x, y, 0)) for x in (-w / 2, w / 2)]
    for i in range(shelves):
        parts.append(box("shelves", "white", (w, 0.02, w), (0, -height / 2 + (i + 1) * height / (shelves + 1), 0)))
    return parts, Facts(counts={"shelves": shelves}, proportion=prop, part_colours={"frame": frame})


def guitar(d: Draw):
    body = d.pick(["brown", "beige", "red", "black", "blue", "white"])
    strings = d.pick([4, 6])  # bass or guitar
    electric = d.coin()
    parts = [
        ellipsoid("body", body, (0.45, 0.1, 0.4), (0, 0, -0.55)),
        ellipsoid("body", body, (0.33, 0.1, 0.3), (0, 0, -0.05)),
        box("neck", "brown", (0.1, 0.05, 1.1), (0, 0.05, 0.75)),
        box("headstock", "brown", (0.16, 0.05, 0.22), (0, 0.05, 1.38)),
    ]
    if not electric:
        parts.append(cylinder("sound hole", "black", 0.1, 0.01, (0, 0.1, -0.25)))
    for i in range(strings):
        x = (i - (strings - 1) / 2) * 0.014
        parts.append(box("strings", "grey", (0.004, 0.004, 1.7), (x, 0.11, 0.35)))
    return parts, Facts(
        counts={"strings": strings},
        variants={"guitar": "electric" if electric else "acoustic"},
        part_colours={"body": body},
    )


def keyboard(d: Draw):
    base, keys = d.pick(["black", "white", "grey"]), d.pick(["white", "black", "grey"])
    rows = d.int(3, 6)
    width, prop = d.proportion("wide", "compact", (1.8, 2.0), (1.0, 1.2))
    parts = [box("base", base, (width, 0.06, 0.6), (0, 0, 0))]
    cols = int(width / 0.1)
    for r in range(rows):
        z = -0.25 + (r + 0.5) * 0.5 / rows
        for c in range(cols):
            x = -width / 2 + 0.05 + c * (width - 0.1) / max(cols - 1, 1)
            parts.append(box("keys", keys, (0.07, 0.03, 0.5 / rows - 0.02), (x, 0.045, z)))
    return parts, Facts(counts={"rows of keys": rows}, proportion=prop, part_colours={"keys": keys, "base": base})


def lamp(d: Draw):
    base, shade = d.pick(METAL + WOOD), d.pick(["white", "beige", "red", "green", "yellow", "blue"])
    height, prop = d.proportion("tall", "short", (1.8, 2.0), (0.55, 0.7))
    shades = d.pick([1, 2, 3]) if height > 1 else 1  # floor lamps may branch; table lamps have one shade
    square = d.coin(0.3)
    parts = [
        frustum("base", base, 0.3, 0.3, 0.05, (0, -height / 2, 0), square=square),
        cylinder("pole", base, 0.03, height * 0.8, (0, -height / 2 + height * 0.4, 0)),
    ]
    top = -height / 2 + height * 0.8
    for i in range(shades):
        x = 0.0 if shades == 1 else (i - (shades - 1) / 2) * 0.3
        if shades > 1:
            parts.append(box("arms", base, (abs(x) + 0.02, 0.03, 0.03), (x / 2, top, 0)))
        parts.append(frustum("lampshades", shade, 0.25, 0.14, 0.3, (x, top + 0.12, 0), caps=False, square=square))
    return parts, Facts(
        counts={"lampshades": shades},
        variants={"base": "square" if square else "round"},
        proportion=prop,
        part_colours={"lampshades": shade, "base": base},
    )


def laptop(d: Draw):
    colour = d.pick(["grey", "black", "white"])
    wide_open = d.coin()
    tilt = d.uni(0.7, 0.9) if wide_open else d.uni(0.1, 0.25)  # screen tilt back from vertical, radians
    parts = [
        box("base", colour, (1.4, 0.05, 1.0), (0, 0, 0)),
        box("keyboard", "black", (1.2, 0.01, 0.45), (0, 0.03, 0.05)),
        box("touchpad", "grey", (0.4, 0.01, 0.2), (0, 0.03, 0.38)),
    ]
    screen = box("screen", colour, (1.4, 1.0, 0.04), (0, 0.5, -0.5))  # upright, hinged at the back edge
    parts.append(rotate(screen, "x", -tilt, origin=(0, 0, -0.5)))
    return parts, Facts(variants={"lid": "opened wide" if wide_open else "upright"}, part_colours={"laptop": colour})


def mantel(d: Draw):
    colour = d.pick(["white", "beige", "grey", "brown"])
    candles = d.int(0, 3)
    width = d.uni(1.6, 1.9)
    parts = [box("surround", colour, (0.3, 1.1, 0.3), (x, -0.35, 0)) for x in (-width / 2 + 0.15, width / 2 - 0.15)]
    parts += [
        box("surround", colour, (width, 0.3, 0.3), (0, 0.35, 0)),
        box("shelf", colour, (width + 0.2, 0.06, 0.45), (0, 0.53, 0.05)),
        box("firebox", "black", (width - 0.6, 0.8, 0.05), (0, -0.5, -0.12)),
    ]
    for i in range(candles):
        x = (i - (candles - 1) / 2) * 0.35
        parts.append(cylinder("candles", "white", 0.04, 0.25, (x, 0.68, 0.05)))
    return parts, Facts(counts={"candles": candles}, part_colours={"mantel": colour})


def monitor(d: Draw):
    colour = d.pick(["black", "grey", "white"])
    width, prop = d.proportion("wide", "square", (1.8, 2.0), (1.0, 1.1))
    round_base = d.coin()
    parts = [
        box("screen", colour, (width, 1.0, 0.06), (0, 0.3, 0)),
        box("display", "black", (width - 0.08, 0.92, 0.01), (0, 0.3, 0.035)),
        box("neck", colour, (0.1, 0.5, 0.06), (0, -0.35, -0.05)),
        frustum("base", colour, 0.3, 0.3, 0.04, (0, -0.6, 0), square=not round_base),
    ]
    return parts, Facts(
        variants={"base": "round" if round_base else "square"}, proportion=prop, part_colours={"frame": colour}
    )


def night_stand(d: Draw):
    colour = d.pick(WOOD)
    drawers = d.int(1, 3)
    legs = d.coin()
    parts = [box("body", colour, (0.6, 0.7, 0.5), (0, 0, 0))]
    for i in range(drawers):
        y = 0.35 - (i + 0.5) * 0.7 / drawers
        parts.append(box("drawers", colour, (0.54, 0.7 / drawers - 0.05, 0.03), (0, y, 0.26)))
        parts.append(ellipsoid("knobs", "grey", (0.03, 0.03, 0.03), (0, y, 0.29)))
    if legs:
        parts += _legs("legs", colour, _corners(0.26, 0.21, 4), 0.03, 0.25, -0.35)
    return parts, Facts(counts={"drawers": drawers, "legs": 4 if legs else 0}, has={"legs": legs})


def person(d: Draw):
    shirt, trousers = d.colours(FABRIC, 2)
    raised = d.coin(0.3)
    height, prop = d.proportion("tall", "short", (1.9, 2.0), (1.4, 1.5))
    s = height / 2
    parts = [
        ellipsoid("head", "beige", (0.11 * s, 0.13 * s, 0.11 * s), (0, 0.85 * s, 0)),
        ellipsoid("torso", shirt, (0.2 * s, 0.32 * s, 0.12 * s), (0, 0.38 * s, 0)),
    ]
    for x in (-0.09 * s, 0.09 * s):
        parts.append(cylinder("legs", trousers, 0.07 * s, 0.9 * s, (x, -0.5 * s, 0)))
    for sign in (-1, 1):
        arm = cylinder("arms", shirt, 0.05 * s, 0.6 * s, (sign * 0.26 * s, 0.35 * s, 0))
        parts.append(rotate(arm, "z", sign * 2.8, origin=(sign * 0.24 * s, 0.62 * s, 0)) if raised else arm)
    return parts, Facts(
        counts={"arms": 2, "legs": 2},
        variants={"arms": "raised" if raised else "down"},
        proportion=prop,
        part_colours={"shirt": shirt, "trousers": trousers},
    )


def piano(d: Draw):
    colour = d.pick(["black", "brown", "white"])
    bench_ = d.coin()
    parts = [
        box("body", colour, (1.6, 1.3, 0.6), (0, 0.2, -0.2)),
        box("keyboard shelf", colour, (1.6, 0.08, 0.3), (0, -0.1, 0.25)),
        box("keys", "white", (1.5, 0.03, 0.2), (0, -0.04, 0.28)),
    ]
    for i in range(15):
        parts.append(box("keys", "black", (0.03, 0.03, 0.12), (-0.7 + i * 0.1, -0.01, 0.24)))
    parts += _legs("legs", colour, [(-0.75, 0.3), (0.75, 0.3)], 0.04, 0.55, -0.14)
    if bench_:
        parts.append(box("bench", colour, (0.8, 0.08, 0.35), (0, -0.35, 0.75)))
        parts += _legs("bench", colour, _corners(0.35, 0.14, 4), 0.03, 0.4, -0.39)
    return parts, Facts(has={"bench": bench_}, part_colours={"piano": colour})


def plant(d: Draw):
    leaf, pot = d.pick(["green", "green", "yellow", "purple"]), d.pick(["brown", "white", "grey", "orange"])
    blobs = d.int(3, 7)
    height, prop = d.proportion("tall", "short", (1.8, 2.0), (1.0, 1.2))
    parts = [
        frustum("pot", pot, 0.25, 0.3, 0.4, (0, -height / 2 + 0.2, 0), caps=False),
        cylinder("trunk", "brown", 0.04, height * 0.5, (0, -height / 2 + 0.4 + height * 0.25, 0)),
    ]
    for i in range(blobs):
        a = 2 * np.pi * i / blobs
        y = -height / 2 + 0.4 + height * (0.35 + 0.3 * d.uni(0, 1))
        parts.append(ellipsoid("leaf clusters", leaf, (0.22, 0.1, 0.12), (0.25 * np.cos(a), y, 0.25 * np.sin(a))))
    return parts, Facts(counts={"leaf clusters": blobs}, proportion=prop, part_colours={"leaves": leaf, "pot": pot})


def radio(d: Draw):
    colour = d.pick(["red", "black", "brown", "grey", "blue", "white"])
    speakers = d.int(1, 2)
    knobs = d.int(2, 4)
    antenna = d.coin()
    parts = [box("body", colour, (1.6, 0.9, 0.5), (0, 0, 0))]
    for i in range(speakers):
        x = -0.4 if speakers == 1 else (-0.55 + i * 1.1)
        parts.append(cylinder("speakers", "grey", 0.25, 0.02, (x, 0, 0.26), axis="z"))
    for i in range(knobs):
        parts.append(
            cylinder(
                "knobs",
                "black",
                0.05,
                0.05,
                (0.1 + i * 0.13 if speakers == 1 else -0.2 + i * 0.13, 0.25, 0.27),
                axis="z",
            )
        )
    if antenna:
        parts.append(
            rotate(cylinder("antenna", "grey", 0.015, 0.9, (0.6, 0.9, -0.1)), "z", -0.4, origin=(0.6, 0.45, -0.1))
        )
    return parts, Facts(
        counts={"speakers": speakers, "knobs": knobs}, has={"antenna": antenna}, part_colours={"body": colour}
    )


def range_hood(d: Draw):
    colour = d.pick(METAL)
    pyramid = d.coin()
    parts = [box("chimney", colour, (0.35, 1.0, 0.3), (0, 0.5, 0))]
    if pyramid:
        parts.append(frustum("hood", colour, 0.7, 0.2, 0.45, (0, -0.2, 0), square=True))
    else:
        parts.append(box("hood", colour, (1.4, 0.25, 0.8), (0, -0.3, 0)))
    parts.append(box("filter", "grey", (1.2, 0.01, 0.6), (0, -0.44, 0)))
    return parts, Facts(variants={"hood": "pyramid-shaped" if pyramid else "box-shaped"}, part_colours={"hood": colour})


def sink(d: Draw):
    colour = d.pick(["white", "white", "grey", "beige"])
    basins = d.pick([1, 1, 2])
    pedestal = d.coin()
    width = 0.8 * basins + 0.2
    parts = []
    for i in range(basins):
        x = (i - (basins - 1) / 2) * 0.85
        parts += _open_box("basins", colour, (0.75, 0.3, 0.6), (x, 0, 0))
    parts += [
        box("counter", colour, (width, 0.05, 0.9), (0, 0.15, 0)),
        cylinder("faucet", "grey", 0.03, 0.3, (0, 0.3, -0.38)),
        cylinder("faucet", "grey", 0.025, 0.25, (0, 0.43, -0.27), axis="z"),
    ]
    if pedestal:
        parts.append(frustum("pedestal", colour, 0.2, 0.15, 0.8, (0, -0.55, 0)))
    return parts, Facts(counts={"basins": basins}, has={"pedestal": pedestal}, part_colours={"sink": colour})


def sofa(d: Draw):
    colour = d.pick(FABRIC)
    cushions = d.int(2, 4)
    width = 0.6 * cushions + 0.4
    parts = [
        box("base", colour, (width, 0.35, 0.9), (0, -0.2, 0)),
        box("back", colour, (width, 0.6, 0.2), (0, 0.25, -0.35)),
        box("armrests", colour, (0.2, 0.5, 0.9), (-width / 2, -0.05, 0)),
        box("armrests", colour, (0.2, 0.5, 0.9), (width / 2, -0.05, 0)),
    ]
    cw = (width - 0.4) / cushions
    for i in range(cushions):
        parts.append(
            box("seat cushions", colour, (cw - 0.03, 0.14, 0.65), (-width / 2 + 0.2 + (i + 0.5) * cw, 0.04, 0.07))
        )
    return parts, Facts(counts={"seat cushions": cushions, "armrests": 2}, part_colours={"sofa": colour})


def stairs(d: Draw):
    colour = d.pick(WOOD + ("grey",))
    steps = d.int(3, 9)
    railing = d.coin()
    h, depth = 1.6 / steps, 1.6 / steps
    parts = [
        box("steps", colour, (0.9, h * (i + 1), depth), (0, -0.8 + h * (i + 1) / 2, -0.8 + depth * (i + 0.5)))
        for i in range(steps)
    ]
    if railing:
        parts.append(rotate(box("railing", "grey", (0.04, 0.04, 2.26), (0.48, 0.2, 0)), "x", -np.pi / 4))
        parts += [
            cylinder("railing", "grey", 0.02, 0.6, (0.48, -0.8 + h * (i + 1) + 0.3, -0.8 + depth * (i + 0.5)))
            for i in range(0, steps, 2)
        ]
    return parts, Facts(counts={"steps": steps}, has={"railing": railing}, part_colours={"steps": colour})


def stool(d: Draw):
    seat, legc = d.pick(WOOD + BRIGHT), d.pick(WOOD + METAL)
    legs = d.pick([3, 4])
    round_seat = d.coin()
    height, prop = d.proportion("tall", "short", (1.5, 1.8), (0.7, 0.8))
    footrest = height > 1 and d.coin()
    parts = [frustum("seat", seat, 0.3, 0.3, 0.07, (0, height / 2, 0), square=not round_seat)]
    parts += _legs("legs", legc, _corners(0.22, 0.22, legs), 0.03, height, height / 2 - 0.03)
    if footrest:
        parts.append(torus("footrest", legc, 0.22, 0.02, (0, -height / 6, 0)))
    return parts, Facts(
        counts={"legs": legs},
        variants={"seat": "round" if round_seat else "square"},
        proportion=prop,
        has={"footrest": footrest},
        part_colours={"seat": seat, "legs": legc},
    )


def table(d: Draw):
    top, legc = d.pick(WOOD + ("white", "grey")), d.pick(WOOD + METAL)
    round_top = d.coin()
    legs = d.pick([1, 3, 4, 4])
    height, prop = d.proportion("tall", "low", (0.75, 0.85), (0.3, 0.4))
    width = 1.6
    parts = [frustum("top", top, width / 2, width / 2, 0.05, (0, height, 0), square=not round_top)]
    if legs == 1:
        parts += [
            cylinder("legs", legc, 0.06, height, (0, height / 2, 0)),
            frustum("foot", legc, 0.35, 0.35, 0.04, (0, 0, 0)),
        ]
    else:
        r = width / 2 - 0.12
        corners = _corners(r, r, legs) if not round_top or legs == 3 else _corners(r * 0.7, r * 0.7, legs)
        parts += _legs("legs", legc, corners, 0.04, height, height, square=not round_top)
    return parts, Facts(
        counts={"legs": legs},
        variants={"top": "round" if round_top else "square"},
        proportion=prop,
        part_colours={"top": top, "legs": legc},
    )


def tent(d: Draw):
    colour = d.pick(["orange", "green", "blue", "yellow", "red"])
    kind = d.pick(["dome", "pyramid", "ridge"])
    if kind == "dome":
        dome = ellipsoid("tent", colour, (1.0, 0.8, 1.0))
        tris = dome.triangles[dome.triangles[:, :, 1].mean(axis=1) >= 0]
        parts = [Part("tent", tris, colour)]
    elif kind == "pyramid":
        parts = [frustum("tent", colour, 1.0, 0.0, 1.2, caps=False, square=True)]
    else:  # ridge: two sloped sides and two triangular ends
        lo, hi = -0.6, 0.6
        p = {
            k: np.array(v, dtype=float)
            for k, v in {
                "a": (-1, lo, -1),
                "b": (1, lo, -1),
                "c": (1, hi, 0),
                "e": (-1, hi, 0),
                "f": (-1, lo, 1),
                "g": (1, lo, 1),
            }.items()
        }
        tris = [
            (p["a"], p["b"], p["c"]),
            (p["a"], p["c"], p["e"]),
            (p["f"], p["c"], p["g"]),
            (p["f"], p["e"], p["c"]),
            (p["a"], p["e"], p["f"]),
            (p["b"], p["g"], p["c"]),
        ]
        parts = [Part("tent", np.array(tris), colour)]
    return parts, Facts(variants={"tent": f"{kind}-shaped"}, part_colours={"tent": colour})


def toilet(d: Draw):
    colour = d.pick(["white", "white", "beige", "grey"])
    tank = d.coin(0.7)
    lid_up = d.coin()
    parts = [frustum("bowl", colour, 0.2, 0.3, 0.45, (0, -0.25, 0.1)), torus("seat", colour, 0.24, 0.04, (0, 0.0, 0.1))]
    if lid_up:
        parts.append(cylinder("lid", colour, 0.3, 0.03, (0, 0.3, -0.18), axis="z"))
    else:
        parts.append(cylinder("lid", colour, 0.3, 0.03, (0, 0.04, 0.1)))
    if tank:
        parts.append(box("tank", colour, (0.55, 0.45, 0.2), (0, 0.25, -0.3)))
    else:
        parts.append(cylinder("pipe", "grey", 0.04, 0.8, (0, 0.4, -0.3)))
    return parts, Facts(
        variants={"lid": "open" if lid_up else "closed"}, has={"tank": tank}, part_colours={"toilet": colour}
    )


def tv_stand(d: Draw):
    colour = d.pick(WOOD + ("grey",))
    compartments = d.int(1, 4)
    doors = d.coin()
    width = d.uni(1.7, 2.0)
    h = 0.55
    parts = [
        box("top", colour, (width, 0.05, 0.5), (0, h / 2, 0)),
        box("bottom", colour, (width, 0.05, 0.5), (0, -h / 2, 0)),
        box("back", colour, (width, h, 0.02), (0, 0, -0.24)),
    ]
    for i in range(compartments + 1):
        parts.append(box("dividers", colour, (0.04, h, 0.5), (-width / 2 + i * width / compartments, 0, 0)))
    if doors:
        for i in range(compartments):
            parts.append(
                box(
                    "doors",
                    colour,
                    (width / compartments - 0.06, h - 0.08, 0.02),
                    (-width / 2 + (i + 0.5) * width / compartments, 0, 0.25),
                )
            )
    return parts, Facts(counts={"compartments": compartments}, has={"doors": doors}, part_colours={"stand": colour})


def vase(d: Draw):
    colour = d.pick(ANY)
    height, prop = d.proportion("tall", "short", (1.8, 2.0), (0.9, 1.1))
    handles = d.pick([0, 0, 2])
    bulge = d.uni(0.35, 0.45)
    parts = [
        frustum("vase", colour, 0.2, bulge, height * 0.4, (0, -height * 0.3, 0), caps=False),
        frustum("vase", colour, bulge, 0.12, height * 0.4, (0, height * 0.1, 0), caps=False),
        frustum("vase", colour, 0.12, 0.18, height * 0.2, (0, height * 0.4, 0), caps=False),
        cylinder("vase", colour, 0.2, 0.01, (0, -height / 2, 0)),
    ]
    for sign in range(handles):
        x = 0.25 if sign == 0 else -0.25
        parts.append(torus("handles", colour, 0.12, 0.025, (x, height * 0.15, 0), axis="z"))
    return parts, Facts(counts={"handles": handles}, proportion=prop)


def wardrobe(d: Draw):
    colour, handle = d.pick(WOOD), d.pick(["grey", "black", "beige"])
    doors = d.int(2, 4)
    width = 0.5 * doors
    parts = [box("body", colour, (width, 2.0, 0.6), (0, 0, 0))]
    dw = width / doors
    for i in range(doors):
        x = -width / 2 + (i + 0.5) * dw
        parts.append(box("doors", colour, (dw - 0.03, 1.9, 0.02), (x, 0, 0.31)))
        parts.append(
            box("handles", handle, (0.02, 0.25, 0.03), (x + (dw / 2 - 0.08) * (1 if i % 2 == 0 else -1), 0, 0.34))
        )
    return parts, Facts(counts={"doors": doors}, part_colours={"wardrobe": colour, "handles": handle})


def xbox(d: Draw):
    colour = d.pick(["black", "white", "grey"])
    standing = d.coin()
    size = (0.35, 1.2, 1.0) if standing else (1.2, 0.35, 1.0)
    parts = [box("console", colour, size, (0, 0, 0))]
    if standing:
        parts += [
            box("disc slot", "grey", (0.02, 0.6, 0.02), (0.1, 0.2, 0.5)),
            cylinder("power button", "white", 0.05, 0.02, (0.1, 0.45, 0.51), axis="z"),
        ]
    else:
        parts += [
            box("disc slot", "grey", (0.6, 0.02, 0.02), (0.2, 0.05, 0.5)),
            cylinder("power button", "white", 0.05, 0.02, (-0.45, 0.05, 0.51), axis="z"),
        ]
    return parts, Facts(
        variants={"console": "standing upright" if standing else "lying flat"}, part_colours={"console": colour}
    )


GENERATORS: dict[str, Callable[[Draw], tuple[list[Part], Facts]]] = {
    "airplane": airplane,
    "bathtub": bathtub,
    "bed": bed,
    "bench": bench,
    "bookshelf": bookshelf,
    "bottle": bottle,
    "bowl": bowl,
    "car": car,
    "chair": chair,
    "cone": cone,
    "cup": cup,
    "curtain": curtain,
    "desk": desk,
    "door": door,
    "dresser": dresser,
    "flower pot": flower_pot,
    "glass box": glass_box,
    "guitar": guitar,
    "keyboard": keyboard,
    "lamp": lamp,
    "laptop": laptop,
    "mantel": mantel,
    "monitor": monitor,
    "night stand": night_stand,
    "person": person,
    "piano": piano,
    "plant": plant,
    "radio": radio,
    "range hood": range_hood,
    "sink": sink,
    "sofa": sofa,
    "stairs": stairs,
    "stool": stool,
    "table": table,
    "tent": tent,
    "toilet": toilet,
    "tv stand": tv_stand,
    "vase": vase,
    "wardrobe": wardrobe,
    "xbox": xbox,
}
