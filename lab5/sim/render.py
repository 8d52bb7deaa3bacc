"""Drawing frames from simulated states, seen from above: the bin, clutter, a grey two-segment arm like the
Sawyer's and the gripper (bigger when lifted, nearer the camera). PIL draws at ``SS`` x supersampling, then a
box-filter downsample to 64x64 anti-aliases all edges. The same states give the same bytes."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from lab5.sim.world import FLOOR, IMG, Z_DOWN, Z_UP, ObjectSpec, Scene, arm_points

SS = 4  # supersampling factor for anti-aliased rendering
GRIP_SCALE = 0.95  # drawn size of the gripper
GRIP_RGB = ((58, 58, 64), (30, 30, 34), (170, 45, 45), (90, 25, 25))  # palm, its edge, fingers, their edge
ARM_RGB = ((125, 127, 135), (115, 117, 125), (165, 167, 175))  # upper arm, forearm, highlight
ARM_W = 3.4  # forearm width (px)
ARM_SHADOW = 27  # opacity (0-255) of the arm's shadow
Point = tuple[float, float]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Bilinearly upsampled random grid: cheap deterministic value noise in [0, 1]."""
    h, w = shape
    grid = rng.random((h // cell + 2, w // cell + 2))
    ys, xs = np.arange(h) / cell, np.arange(w) / cell
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
    c, d = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx


@lru_cache(maxsize=1)
def _background() -> Image.Image:
    """The fixed bin (light wood floor, grey walls, brown table edge) at SS x (do not modify: cached)."""
    n = IMG * SS
    rng = np.random.default_rng(12345)  # fixed: the bin is the same in every sequence, as in BAIR
    vv, uu = np.mgrid[0:n, 0:n].astype(np.float64)
    # Wood: grain down the image wobbling with low-frequency noise, tinted planks, fine speckle.
    wob = _smooth_noise(rng, (n, n), 48)
    grain = np.sin(2 * np.pi * (uu / 9.0 + 2.5 * wob)) * 0.5 + 0.5
    plank = (uu // (13 * SS)).astype(int)
    tint = rng.uniform(-9, 9, plank.max() + 1)[plank]
    speck = _smooth_noise(rng, (n, n), 3) - 0.5
    wood = (np.array([214.0, 196.0, 160.0])[None, None, :]
            + ((grain * 16 - 8) + tint + speck * 10)[..., None] * np.array([1.0, 0.95, 0.8]))
    img = Image.fromarray(np.clip(wood, 0, 255).astype(np.uint8), "RGB")
    draw, s = ImageDraw.Draw(img), SS
    u0, v0, u1, v1 = (c * s for c in FLOOR)
    m, e = IMG * s, 59 * s  # e: the near wall's top edge
    # Walls seen in perspective from above: the near (bottom) wall looks tall.
    draw.polygon([(0, 0), (m, 0), (u1, v0), (u0, v0)], fill=(176, 184, 192))  # far wall
    draw.polygon([(0, 0), (u0, v0), (u0, v1), (0, e)], fill=(196, 202, 208))  # left wall
    draw.polygon([(m, 0), (u1, v0), (u1, v1), (m, e)], fill=(190, 196, 204))  # right wall
    draw.polygon([(0, e), (u0, v1), (u1, v1), (m, e)], fill=(228, 228, 224))  # near wall
    draw.rectangle([0, e, m, m], fill=(96, 66, 44))  # table edge beyond the bin
    draw.line([(0, e), (m, e)], fill=(60, 45, 35), width=s)
    # Creases where the walls meet the floor and each other.
    draw.line([(u0, v0), (u1, v0), (u1, v1), (u0, v1), (u0, v0)], fill=(150, 140, 120), width=s // 2)
    for a, b in [((0, 0), (u0, v0)), ((m, 0), (u1, v0)), ((0, e), (u0, v1)), ((m, e), (u1, v1))]:
        draw.line([a, b], fill=(160, 166, 172), width=s // 2)
    return img


def _disc(u: float, v: float, r: float) -> list[float]:
    """PIL's bounding box (at SS) of a disc of radius r (px) centred at (u, v)."""
    return [(u - r) * SS, (v - r) * SS, (u + r) * SS, (v + r) * SS]


def _poly_world(spec: ObjectSpec, pos: Sequence[float], ang: float, off: Point = (0.0, 0.0)) -> list[Point]:
    c, s = math.cos(ang), math.sin(ang)
    return [((pos[0] + off[0] + c * x - s * y) * SS, (pos[1] + off[1] + s * x + c * y) * SS) for x, y in spec.verts]


def _draw_object(draw: ImageDraw.ImageDraw, spec: ObjectSpec, pos: Sequence[float], ang: float) -> None:
    outline = tuple(int(c * 0.55) for c in spec.colour)
    if spec.kind == "circle":
        draw.ellipse(_disc(pos[0], pos[1], spec.radius), fill=spec.colour, outline=outline, width=2)
    else:
        _outlined(draw, _poly_world(spec, pos, ang), spec.colour, outline)  # type: ignore[arg-type]
    # Off-centre accent dot: makes rotation visible.
    d = spec.radius * 0.45
    draw.ellipse(_disc(pos[0] + d * math.cos(ang), pos[1] + d * math.sin(ang), max(1.0, spec.radius * 0.32)),
                 fill=spec.accent)


def _thick_line(draw: ImageDraw.ImageDraw, a: Sequence[float], b: Sequence[float], width: float,
                fill: int | tuple[int, ...], off: Point = (0.0, 0.0)) -> None:
    """A capsule from a to b (px at 64 scale), drawn at SS."""
    a2, b2 = (((q[0] + off[0]) * SS, (q[1] + off[1]) * SS) for q in (a, b))
    draw.line([a2, b2], fill=fill, width=int(round(width * SS)))
    r = width * SS / 2
    for p in (a2, b2):
        draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=fill)


def _rect(cu: float, cv: float, across: float, along: float, f: Point, p: Point) -> list[Point]:
    """Corners of a rectangle centred at (cu, cv): half-sides ``along`` unit vector f, ``across`` p."""
    return [(cu + sx * across * p[0] + sy * along * f[0], cv + sx * across * p[1] + sy * along * f[1])
            for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]


def _gripper_parts(g: Sequence[float], z: float, closure: float) -> tuple[list[Point], list[list[Point]]]:
    """Palm and fingers (px) of the gripper seen from above; lifted means nearer the camera, so bigger."""
    k = GRIP_SCALE * (1.0 + 0.35 * (z - Z_DOWN) / (Z_UP - Z_DOWN))
    _, elbow = arm_points(g)
    dx, dy = g[0] - elbow[0], g[1] - elbow[1]
    n = math.hypot(dx, dy) or 1.0
    f = (dx / n, dy / n)  # along the forearm
    p = (-f[1], f[0])  # across it: the fingers open this way
    c = (1.0 + 4.0 * (1.0 - closure)) * k / 2 + 0.9 * k  # finger centre off the axis: half the gap + half a finger
    fingers = [_rect(g[0] + side * c * p[0] + 3.4 * k * f[0], g[1] + side * c * p[1] + 3.4 * k * f[1],
                     0.9 * k, 1.8 * k, f, p) for side in (-1, 1)]
    return _rect(g[0], g[1], 3.2 * k, 2.4 * k, f, p), fingers


def _outlined(draw: ImageDraw.ImageDraw, poly: list[Point], fill: tuple[int, int, int],
              edge: tuple[int, int, int]) -> None:
    # Two fills instead of PIL's wide outline, which allocates a mask per call.
    draw.polygon(poly, fill=edge)
    # The fill: the polygon shrunk toward its vertex mean by 2 px (at SS).
    cx, cy = sum(x for x, _ in poly) / len(poly), sum(y for _, y in poly) / len(poly)
    ks = [max(0.0, 1.0 - 2.0 / (math.hypot(x - cx, y - cy) or 1.0)) for x, y in poly]
    draw.polygon([(cx + (x - cx) * k, cy + (y - cy) * k) for (x, y), k in zip(poly, ks)], fill=fill)


def _table_layer(scene: Scene, pos: np.ndarray, ang: np.ndarray) -> Image.Image:
    """The bin with the objects and their shadows at one set of poses (at SS)."""
    frame = _background().copy()
    shade = ImageDraw.Draw(frame, "RGBA")  # alpha-blended fills: cheap soft shadows
    o = (0.7, 0.9)
    for spec, p, a in zip(scene.objects, pos, ang):
        if spec.kind == "circle":
            shade.ellipse(_disc(p[0] + o[0], p[1] + o[1], spec.radius), fill=(0, 0, 0, 60))
        else:
            shade.polygon(_poly_world(spec, p, a, off=o), fill=(0, 0, 0, 60))
    draw = ImageDraw.Draw(frame)
    for spec, p, a in zip(scene.objects, pos, ang):
        _draw_object(draw, spec, p, a)
    return frame


def _draw_arm(frame: Image.Image, g: Sequence[float], z: float, closure: float) -> None:
    """The arm, the gripper and their shadows onto a table layer (at SS), in place."""
    lift = (z - Z_DOWN) / (Z_UP - Z_DOWN)
    shoulder, elbow = arm_points(g)
    palm, fingers = _gripper_parts(g, z, closure)
    shade = ImageDraw.Draw(frame, "RGBA")
    # The arm is high above the table: long, faint shadow; the gripper's drifts and fades as it lifts.
    _thick_line(shade, elbow, g, ARM_W, (0, 0, 0, ARM_SHADOW), off=(3.0, 4.0))
    so = (1.5 + 3.0 * lift, 2.0 + 3.0 * lift)
    shade.polygon([((x + so[0]) * SS, (y + so[1]) * SS) for x, y in palm], fill=(0, 0, 0, int(60 - 20 * lift)))
    draw = ImageDraw.Draw(frame)
    # Arm: upper arm (mostly above the image) then forearm, grey like the Sawyer's links.
    _thick_line(draw, shoulder, elbow, 6.0, ARM_RGB[0])
    _thick_line(draw, elbow, g, ARM_W, ARM_RGB[1])
    _thick_line(draw, elbow, g, ARM_W * 0.3, ARM_RGB[2])  # highlight along the link
    for poly, (fill, edge) in zip([palm, *fingers], [GRIP_RGB[:2]] + [GRIP_RGB[2:]] * 2):
        _outlined(draw, [(x * SS, y * SS) for x, y in poly], fill, edge)


def render_states(states: dict, arm: bool = True) -> np.ndarray:
    """Render the states from `simulate_states` to ``uint8 [T, 64, 64, 3]`` frames; ``arm=False``: without the
    arm, the gripper and their shadows (the bin and objects only, so that the arm's pixels can be told apart)."""
    frames = np.empty((len(states["z"]), IMG, IMG, 3), np.uint8)
    layer, last_poses = None, None
    for t in range(len(frames)):
        pos, ang = states["object_pos"][t], states["object_angle"][t]
        poses = np.concatenate([pos.ravel(), ang.ravel()])
        # Objects rest most of the time: reuse the table layer until they move.
        if layer is None or not np.array_equal(poses, last_poses):
            layer, last_poses = _table_layer(states["scene"], pos, ang), poses
        frame = layer.copy()
        if arm:
            _draw_arm(frame, states["gripper"][t], float(states["z"][t]), float(states["closure"][t]))
        frames[t] = np.asarray(frame.reduce(SS))  # box-filter 4x reduction = anti-aliasing
    return frames
