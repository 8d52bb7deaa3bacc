"""Drawing frames from simulated states: the bin, clutter, arm and gripper seen from above.

PIL draws at ``SS`` x supersampling onto a fixed procedural wood-grain bin, then a box-filter
downsample to 64x64 anti-aliases all edges. A lifted gripper is nearer the camera, so it is drawn
bigger with a larger, fainter shadow; a grey two-segment arm reaches in from the top edge like the
Sawyer seen from above. Pure functions of the states: the same states give the same bytes.
"""

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


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Bilinearly upsampled random grid: cheap deterministic value noise in [0, 1]."""
    h, w = shape
    gh, gw = h // cell + 2, w // cell + 2
    grid = rng.random((gh, gw))
    ys = np.arange(h) / cell
    xs = np.arange(w) / cell
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx


@lru_cache(maxsize=1)
def _background() -> Image.Image:
    """The fixed bin (light wood floor, grey walls, brown table edge) at SS x (do not modify: cached)."""
    n = IMG * SS
    rng = np.random.default_rng(12345)  # fixed: the bin is the same in every sequence, as in BAIR
    vv, uu = np.mgrid[0:n, 0:n].astype(np.float64)
    # Wood: grain running down the image, wobbling with low-frequency noise,
    # planks with slightly different tints, plus fine speckle.
    wob = _smooth_noise(rng, (n, n), 48)
    grain = np.sin(2 * np.pi * (uu / 9.0 + 2.5 * wob)) * 0.5 + 0.5
    plank = (uu // (13 * SS)).astype(int)
    tint = rng.uniform(-9, 9, plank.max() + 1)[plank]
    speck = _smooth_noise(rng, (n, n), 3) - 0.5
    base = np.array([214.0, 196.0, 160.0])
    wood = (base[None, None, :]
            + ((grain * 16 - 8) + tint + speck * 10)[..., None] * np.array([1.0, 0.95, 0.8]))
    img = Image.fromarray(np.clip(wood, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    s = SS
    u0, v0, u1, v1 = (c * s for c in FLOOR)
    m = IMG * s
    # Walls seen in perspective from above: the near (bottom) wall looks tall.
    draw.polygon([(0, 0), (m, 0), (u1, v0), (u0, v0)], fill=(176, 184, 192))  # far wall
    draw.polygon([(0, 0), (u0, v0), (u0, v1), (0, 59 * s)], fill=(196, 202, 208))  # left wall
    draw.polygon([(m, 0), (u1, v0), (u1, v1), (m, 59 * s)], fill=(190, 196, 204))  # right wall
    draw.polygon([(0, 59 * s), (u0, v1), (u1, v1), (m, 59 * s)], fill=(228, 228, 224))  # near wall
    draw.rectangle([0, 59 * s, m, m], fill=(96, 66, 44))  # table edge beyond the bin
    draw.line([(0, 59 * s), (m, 59 * s)], fill=(60, 45, 35), width=s)
    # Creases where the walls meet the floor.
    draw.line([(u0, v0), (u1, v0), (u1, v1), (u0, v1), (u0, v0)], fill=(150, 140, 120), width=s // 2)
    for a, b in [((0, 0), (u0, v0)), ((m, 0), (u1, v0)), ((0, 59 * s), (u0, v1)), ((m, 59 * s), (u1, v1))]:
        draw.line([a, b], fill=(160, 166, 172), width=s // 2)
    return img


def _poly_world(spec: ObjectSpec, pos: Sequence[float], ang: float, scale: float = 1.0,
                off: tuple[float, float] = (0.0, 0.0)) -> list[tuple[float, float]]:
    c, s = math.cos(ang), math.sin(ang)
    return [((pos[0] + off[0] + c * x - s * y) * SS * scale, (pos[1] + off[1] + s * x + c * y) * SS * scale)
            for x, y in spec.verts]


def _draw_object(draw: ImageDraw.ImageDraw, spec: ObjectSpec, pos: Sequence[float], ang: float) -> None:
    s = SS
    outline = tuple(int(c * 0.55) for c in spec.colour)
    if spec.kind == "circle":
        r = spec.radius
        draw.ellipse([(pos[0] - r) * s, (pos[1] - r) * s, (pos[0] + r) * s, (pos[1] + r) * s],
                     fill=spec.colour, outline=outline, width=2)
    else:
        _outlined(draw, _poly_world(spec, pos, ang), spec.colour, outline)  # type: ignore[arg-type]
    # Off-centre accent dot: makes rotation visible.
    d = spec.radius * 0.45
    ax, ay = pos[0] + d * math.cos(ang), pos[1] + d * math.sin(ang)
    ar = max(1.0, spec.radius * 0.32)
    draw.ellipse([(ax - ar) * s, (ay - ar) * s, (ax + ar) * s, (ay + ar) * s], fill=spec.accent)


def _thick_line(draw: ImageDraw.ImageDraw, a: Sequence[float], b: Sequence[float], width: float,
                fill: int | tuple[int, int, int], off: tuple[float, float] = (0.0, 0.0)) -> None:
    """A capsule from a to b (px at 64 scale), drawn at SS."""
    s = SS
    a2 = ((a[0] + off[0]) * s, (a[1] + off[1]) * s)
    b2 = ((b[0] + off[0]) * s, (b[1] + off[1]) * s)
    draw.line([a2, b2], fill=fill, width=int(round(width * s)))
    r = width * s / 2
    for p in (a2, b2):
        draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=fill)


def _gripper_parts(g: Sequence[float], z: float, closure: float):
    """Geometry of the gripper seen from above; lifted means nearer the camera, so bigger."""
    k = GRIP_SCALE * (1.0 + 0.35 * (z - Z_DOWN) / (Z_UP - Z_DOWN))
    _, elbow = arm_points(g)
    dx, dy = g[0] - elbow[0], g[1] - elbow[1]
    n = math.hypot(dx, dy) or 1.0
    fx, fy = dx / n, dy / n  # along the forearm
    px, py = -fy, fx  # across it: the fingers open this way
    half_w, half_l = 3.2 * k, 2.4 * k
    palm = [(g[0] + sx * half_w * px + sy * half_l * fx, g[1] + sx * half_w * py + sy * half_l * fy)
            for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    gap = (1.0 + 4.0 * (1.0 - closure)) * k / 2  # half the gap between the fingers
    fingers = []
    for side in (-1, 1):
        c = gap + 0.9 * k
        cx, cy = g[0] + side * c * px + 3.4 * k * fx, g[1] + side * c * py + 3.4 * k * fy
        fingers.append([(cx + sx * 0.9 * k * px + sy * 1.8 * k * fx,
                         cy + sx * 0.9 * k * py + sy * 1.8 * k * fy)
                        for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    return palm, fingers, k


def _inset(poly: list[tuple[float, float]], by: float) -> list[tuple[float, float]]:
    """Shrink a convex polygon toward its vertex mean by ``by`` pixels (at SS)."""
    cx = sum(x for x, _ in poly) / len(poly)
    cy = sum(y for _, y in poly) / len(poly)
    out = []
    for x, y in poly:
        d = math.hypot(x - cx, y - cy) or 1.0
        k = max(0.0, 1.0 - by / d)
        out.append((cx + (x - cx) * k, cy + (y - cy) * k))
    return out


def _outlined(draw: ImageDraw.ImageDraw, poly: list[tuple[float, float]], fill: tuple[int, int, int],
              edge: tuple[int, int, int]) -> None:
    # Two fills instead of PIL's wide outline, which allocates a mask per call.
    draw.polygon(poly, fill=edge)
    draw.polygon(_inset(poly, 2.0), fill=fill)


def _table_layer(scene: Scene, pos: np.ndarray, ang: np.ndarray) -> Image.Image:
    """The bin with the objects and their shadows at one set of poses (at SS)."""
    s = SS
    frame = _background().copy()
    shade = ImageDraw.Draw(frame, "RGBA")  # alpha-blended fills: cheap soft shadows
    o = (0.7, 0.9)
    for spec, p, a in zip(scene.objects, pos, ang):
        if spec.kind == "circle":
            r = spec.radius
            shade.ellipse([(p[0] + o[0] - r) * s, (p[1] + o[1] - r) * s, (p[0] + o[0] + r) * s,
                           (p[1] + o[1] + r) * s], fill=(0, 0, 0, 60))
        else:
            shade.polygon(_poly_world(spec, p, a, off=o), fill=(0, 0, 0, 60))
    draw = ImageDraw.Draw(frame)
    for spec, p, a in zip(scene.objects, pos, ang):
        _draw_object(draw, spec, p, a)
    return frame


def render_states(states: dict) -> np.ndarray:
    """Render the states from `simulate_states` to ``uint8 [T, 64, 64, 3]`` frames."""
    scene: Scene = states["scene"]
    T = len(states["z"])
    frames = np.empty((T, IMG, IMG, 3), np.uint8)
    s = SS
    layer: Image.Image | None = None
    last_poses: np.ndarray | None = None
    for t in range(T):
        g = states["gripper"][t]
        z = float(states["z"][t])
        pos, ang = states["object_pos"][t], states["object_angle"][t]
        poses = np.concatenate([pos.ravel(), ang.ravel()])
        # Objects rest most of the time: reuse the table layer until they move.
        if layer is None or last_poses is None or not np.array_equal(poses, last_poses):
            layer = _table_layer(scene, pos, ang)
            last_poses = poses
        frame = layer.copy()
        lift = (z - Z_DOWN) / (Z_UP - Z_DOWN)
        shoulder, elbow = arm_points(g)
        palm, fingers, _ = _gripper_parts(g, z, float(states["closure"][t]))
        shade = ImageDraw.Draw(frame, "RGBA")
        # The arm is high above the table: long, faint shadow; the gripper's
        # shadow drifts away and fades as it is lifted.
        _thick_line(shade, elbow, g, ARM_W, (0, 0, 0, ARM_SHADOW), off=(3.0, 4.0))
        so = (1.5 + 3.0 * lift, 2.0 + 3.0 * lift)
        shade.polygon([((x + so[0]) * s, (y + so[1]) * s) for x, y in palm],
                      fill=(0, 0, 0, int(60 - 20 * lift)))
        draw = ImageDraw.Draw(frame)
        # Arm: upper arm (mostly above the image) then forearm, grey like the Sawyer's links.
        _thick_line(draw, shoulder, elbow, 6.0, ARM_RGB[0])
        _thick_line(draw, elbow, g, ARM_W, ARM_RGB[1])
        _thick_line(draw, elbow, g, ARM_W * 0.3, ARM_RGB[2])  # highlight along the link
        _outlined(draw, [(x * s, y * s) for x, y in palm], GRIP_RGB[0], GRIP_RGB[1])
        for f in fingers:
            _outlined(draw, [(x * s, y * s) for x, y in f], GRIP_RGB[2], GRIP_RGB[3])
        # Box-filter 4x reduction = anti-aliasing.
        frames[t] = np.asarray(frame.reduce(SS))
    return frames
