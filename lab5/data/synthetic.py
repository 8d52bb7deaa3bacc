"""Embedded default dataset: a small physically simulated robot-pushing world.

The real BAIR robot-pushing data (a Sawyer arm shoving clutter around a bin,
filmed from above at 64x64) is several gigabytes. So that every notebook and
test runs with no download, this module *generates* a look-alike dataset on the
machine, deterministically from a seed, in the exact lab layout::

    DST/{train,validate,test}/traj_<a>_to_<b>.tfrecords/<k>/{0..29}.png
                                                       actions.csv                (30x4)
                                                       endeffector_positions.csv  (30x3)

The simulation
--------------
* **Physics** is a top-down 2-D world in `pymunk` (Chipmunk). Units are pixels
  of the 64x64 image. The bin floor is closed by thick static walls. There is
  no gravity in the image plane; table friction is the standard pymunk
  top-down trick: every object is tied to the static body by a `PivotJoint`
  (linear friction) and a `GearJoint` (rotational friction) with
  ``max_bias = 0`` and a bounded ``max_force``. Those joints only resist
  motion, so objects stay put until pushed and stop within about a frame
  once the push ends. All contacts (gripper-object, object-object,
  object-wall) are pymunk's.
* **Objects**: 3-6 rigid bodies of varied shape (circles, boxes, convex
  polygons) and colour, each with an off-centre accent mark so that rotation
  is visible, like the textured clutter in BAIR.
* **Robot**: the gripper is a dynamic disc about as heavy as an object whose
  velocity is set every substep to reach the commanded end-effector position
  by the end of the frame: in free space it lands exactly there; a push slows
  it a little (it catches up next frame); an object squeezed against a wall
  stops it, as it would a real arm. It touches objects only while lowered; when
  lifted (column 3 of the actions) it passes over them and is drawn bigger
  (closer to the camera) with a larger shadow. It is drawn dark (palm) with
  red fingers; a grey two-segment arm reaches in from the top edge of the
  image, like the Sawyer seen from above.
* **Actions** (``[T, 4]``, float32), held for two frames as in BAIR:
  columns 0-1 are the commanded end-effector displacement in metres per held
  pair (BAIR-like scale, within +-0.075); the end effector moves half of it
  each frame: ``pos[t+1] = clip(pos[t] + 0.5 * action[t, :2])`` (clipped to
  the workspace; short by a fraction of a pixel while pushing).
  Column 2 in {0, 1, 4} is the gripper closure (open, half, closed: the two
  fingers are drawn closer together). Column 3 in {0, 1, 2} is the height
  command (down, hold, up): z moves by -0.025 / 0 / +0.03 m per frame within
  [0.20, 0.31].
* **End-effector positions** (``[T, 3]``, float32) are a linear map of the
  gripper's image position to BAIR-like metres (0.0125 m per pixel): x
  (away from the robot, i.e. down the image) in [0.40, 0.825], y (to the
  right) in [-0.275, 0.275], z the height in [0.20, 0.31].
* **Policy** (used when no actions are given): a smooth-ish random controller
  that mostly picks a clutter object and drives through it (so about 9 in 10
  sequences contain a push), sometimes a random point, with BAIR-like jitter
  on top; occasionally lifts the gripper or closes it.
* **Rendering**: PIL at 4x supersampling onto a fixed procedural wood-grain
  bin (light floor, grey walls, brown table edge), then a box-filter
  downsample to 64x64, which anti-aliases all edges. Everything is a pure
  function of the seed, so the same seed gives byte-identical PNG and CSV
  files, also when sequences are generated in parallel processes (each
  sequence's seed is derived from ``(seed, split, index)``).

The look (gripper size and contrast, arm colour, motion per pixel) is
calibrated so that the copy-last-frame baseline PSNR (frames 2-11 against
frame 1) is about 23.6 dB on the default test split; the one real BAIR
sequence at hand gives 24.0 dB.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import multiprocessing.pool
import os
import sys
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pymunk
from PIL import Image, ImageDraw

__all__ = [
    "DEFAULTS",
    "ObjectSpec",
    "Scene",
    "make_scene",
    "simulate_states",
    "render_states",
    "simulate_sequence",
    "sequence_seed",
    "copy_last_psnr",
    "make_synthetic",
    "px_to_metres",
    "metres_to_px",
    "traj_dir",
]

# ----------------------------------------------------------------------------
# Constants. Geometry is in pixels of the 64x64 image (u right, v down).
# ----------------------------------------------------------------------------
IMG = 64
SS = 4  # supersampling factor for anti-aliased rendering
N_FRAMES = 30
SHARD = 256  # sequences per traj_<a>_to_<b> folder, as in BAIR's TFRecords
SPLITS = ("train", "validate", "test")
FORMAT_VERSION = 1  # bump when the generator changes what it writes

#: Default sizes of ``make_synthetic`` (sequences per split) and seed.
DEFAULTS: dict[str, int] = {"train": 1024, "validate": 128, "test": 256, "seed": 0}

# The bin floor (inside the walls) and where the gripper centre may go. The
# gripper keeps a margin from the walls so an object squeezed against a wall
# is pushed along it rather than through it.
FLOOR = (6.0, 8.0, 58.0, 50.0)  # u0, v0, u1, v1
WORK = (10.0, 12.0, 54.0, 46.0)

# Image <-> BAIR-like metres: x grows down the image (away from the robot at
# the top), y grows to the right.
M_PER_PX = 0.0125
X0_M, V0_PX = 0.40, WORK[1]
U0_PX = IMG / 2

Z_DOWN, Z_UP = 0.20, 0.31
Z_STEP = {0: -0.025, 1: 0.0, 2: 0.03}  # per frame, by height command
Z_CONTACT = 0.235  # above this the gripper clears the objects
ACTION_CLIP = 0.075
SPEED = (0.015, 0.045)  # policy drift, metres per held pair
NOISE = 0.03  # policy jitter (std), metres per held pair

GRIP_R = 4.0  # physics radius of the gripper (px), about the drawn palm + fingers
GRIP_OFFSET = 1.0  # the fingers reach forward of the palm centre, so the disc sits forward too
GRIP_MASS = 100.0  # about an object's mass: pushes clutter, yet a wall-squeezed object stops it
CAT_OBJECT, CAT_GRIPPER = 0b01, 0b10  # collision categories
WALL_SLOP = 0.15  # px of wall overlap that counts as the wall pushing (pymunk's slop is 0.1)
GRIP_SCALE = 0.95  # drawn size of the gripper
GRIP_RGB = ((58, 58, 64), (30, 30, 34), (170, 45, 45), (90, 25, 25))  # palm, its edge, fingers, their edge
DT_FRAME = 0.1  # simulated seconds per video frame
SUBSTEPS = 4
FRICTION_ACC = 700.0  # px/s^2: how fast table friction stops a sliding object

SHOULDER = (32.0, -22.0)  # arm base, above the image
ARM_RGB = ((125, 127, 135), (115, 117, 125), (165, 167, 175))  # upper arm, forearm, highlight
ARM_W = 3.4  # forearm width (px)
ARM_SHADOW = 27  # opacity (0-255) of the arm's shadow
ELBOW_FOLLOW = 0.35  # how much the elbow follows the gripper sideways

PALETTE = (
    (205, 45, 45),  # red
    (70, 185, 65),  # green
    (45, 105, 205),  # blue
    (235, 195, 40),  # yellow
    (240, 135, 35),  # orange
    (125, 65, 155),  # purple
    (238, 238, 232),  # white
    (95, 95, 100),  # dark grey
    (230, 115, 165),  # pink
    (40, 175, 185),  # cyan
)


# ----------------------------------------------------------------------------
# Scene
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectSpec:
    """One clutter object. ``verts`` are local polygon vertices (px), or empty for a circle."""

    kind: str  # "circle" | "box" | "poly"
    radius: float  # circle radius, or bounding radius of the polygon
    verts: tuple[tuple[float, float], ...]
    colour: tuple[int, int, int]
    accent: tuple[int, int, int]
    density: float


@dataclass(frozen=True)
class Scene:
    """Initial state drawn from a seed: objects, their poses, and the gripper start."""

    objects: tuple[ObjectSpec, ...]
    positions: tuple[tuple[float, float], ...]
    angles: tuple[float, ...]
    gripper: tuple[float, float]  # (u, v) px
    z0: float


def _jitter(rng: np.random.Generator, rgb: Sequence[int], amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)  # type: ignore[return-value]


def _random_object(rng: np.random.Generator) -> ObjectSpec:
    kind = ("circle", "box", "poly")[int(rng.integers(3))]
    colour = _jitter(rng, PALETTE[int(rng.integers(len(PALETTE)))], 18)
    # The accent contrasts with the body so rotation shows: darker for light
    # bodies, lighter for dark ones.
    lum = 0.3 * colour[0] + 0.59 * colour[1] + 0.11 * colour[2]
    accent = tuple(int(c * 0.45) for c in colour) if lum > 110 else tuple(min(255, int(c + 120)) for c in colour)
    if kind == "circle":
        r = float(rng.uniform(3.4, 5.4))
        return ObjectSpec(kind, r, (), colour, accent, 1.0)  # type: ignore[arg-type]
    if kind == "box":
        w, h = float(rng.uniform(5.0, 10.5)), float(rng.uniform(4.5, 7.5))
        verts = ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))
        return ObjectSpec(kind, math.hypot(w, h) / 2, verts, colour, accent, 1.0)  # type: ignore[arg-type]
    n = int(rng.choice([3, 5, 6]))
    r = float(rng.uniform(4.2, 6.2))
    base = np.sort(rng.uniform(0, 2 * np.pi, n) * 0.25 + np.arange(n) * 2 * np.pi / n)
    radii = r * rng.uniform(0.8, 1.0, n)
    verts = tuple((float(ri * np.cos(a)), float(ri * np.sin(a))) for ri, a in zip(radii, base))
    return ObjectSpec(kind, r, verts, colour, accent, 1.0)  # type: ignore[arg-type]


def make_scene(seed: int) -> Scene:
    """Draw the initial scene of sequence ``seed``: 3-6 non-overlapping objects and a gripper start.

    Only the scene stream of the seed is used, so replaying a seed with other
    actions starts from exactly the same scene.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    n = int(rng.integers(3, 7))
    objects: list[ObjectSpec] = []
    positions: list[tuple[float, float]] = []
    for _ in range(n):
        spec = _random_object(rng)
        for _attempt in range(100):  # rejection sampling for a free spot
            p = (float(rng.uniform(FLOOR[0] + spec.radius + 1, FLOOR[2] - spec.radius - 1)),
                 float(rng.uniform(FLOOR[1] + spec.radius + 1, FLOOR[3] - spec.radius - 1)))
            if all(math.dist(p, q) > spec.radius + o.radius + 1.0 for q, o in zip(positions, objects)):
                objects.append(spec)
                positions.append(p)
                break
    angles = tuple(float(a) for a in rng.uniform(0, 2 * np.pi, len(objects)))
    # Start the gripper anywhere in its workspace but clear of the objects, so
    # that nothing is shoved by an initial overlap.
    g = (float(rng.uniform(WORK[0], WORK[2])), float(rng.uniform(WORK[1], WORK[3])))
    for _attempt in range(200):
        if all(math.dist(g, q) > GRIP_R + GRIP_OFFSET + o.radius + 1.0 for q, o in zip(positions, objects)):
            break
        g = (float(rng.uniform(WORK[0], WORK[2])), float(rng.uniform(WORK[1], WORK[3])))
    z0 = Z_DOWN if rng.random() < 0.8 else Z_UP
    return Scene(tuple(objects), tuple(positions), angles, g, z0)


# ----------------------------------------------------------------------------
# Coordinates
# ----------------------------------------------------------------------------
def px_to_metres(u: float, v: float) -> tuple[float, float]:
    """Gripper image position -> BAIR-like (x, y) metres."""
    return X0_M + (v - V0_PX) * M_PER_PX, (u - U0_PX) * M_PER_PX


def metres_to_px(x: float, y: float) -> tuple[float, float]:
    """BAIR-like (x, y) metres -> image (u, v) pixels."""
    return U0_PX + y / M_PER_PX, V0_PX + (x - X0_M) / M_PER_PX


def _height_cmd(c: float) -> int:
    # Tolerate arbitrary floats from user-provided actions.
    return 0 if c < 0.5 else (1 if c < 1.5 else 2)


def _closure(c: float) -> float:
    """Column 2 (0 open, 1 half, 4 closed) -> closure in [0, 1]."""
    return math.sqrt(min(max(float(c), 0.0), 4.0) / 4.0)


# ----------------------------------------------------------------------------
# Physics
# ----------------------------------------------------------------------------
class _World:
    """The pymunk space for one sequence."""

    def __init__(self, scene: Scene) -> None:
        self.space = pymunk.Space()
        self.space.gravity = (0.0, 0.0)
        self.space.iterations = 20
        static = self.space.static_body
        u0, v0, u1, v1 = FLOOR
        t = 20.0  # thick walls so squeezed objects cannot tunnel out
        self.walls = [
            pymunk.Poly(static, [(u0 - t, v0 - t), (u1 + t, v0 - t), (u1 + t, v0), (u0 - t, v0)]),
            pymunk.Poly(static, [(u0 - t, v1), (u1 + t, v1), (u1 + t, v1 + t), (u0 - t, v1 + t)]),
            pymunk.Poly(static, [(u0 - t, v0 - t), (u0, v0 - t), (u0, v1 + t), (u0 - t, v1 + t)]),
            pymunk.Poly(static, [(u1, v0 - t), (u1 + t, v0 - t), (u1 + t, v1 + t), (u1, v1 + t)]),
        ]
        for w in self.walls:
            w.friction = 0.5
            w.elasticity = 0.0
        self.space.add(*self.walls)

        self.bodies: list[pymunk.Body] = []
        self.shapes: list[pymunk.Shape] = []
        for spec, pos, ang in zip(scene.objects, scene.positions, scene.angles):
            body = pymunk.Body()
            if spec.kind == "circle":
                shape: pymunk.Shape = pymunk.Circle(body, spec.radius)
            else:
                shape = pymunk.Poly(body, list(spec.verts))
            shape.density = spec.density
            shape.friction = 0.6
            shape.elasticity = 0.0
            body.position = pos
            body.angle = ang
            self.space.add(body, shape)
            # Top-down table friction: joints to the static body that only
            # resist motion (max_bias 0) with a bounded force.
            pivot = pymunk.PivotJoint(static, body, (0, 0), (0, 0))
            pivot.max_bias = 0.0
            pivot.max_force = body.mass * FRICTION_ACC
            gear = pymunk.GearJoint(static, body, 0.0, 1.0)
            gear.max_bias = 0.0
            # Friction torque of a uniformly pressed disc: mu*m*g * (2/3) r.
            gear.max_force = body.mass * FRICTION_ACC * (2.0 / 3.0) * spec.radius
            self.space.add(pivot, gear)
            self.bodies.append(body)
            self.shapes.append(shape)

        # The gripper is a dynamic body (about an object's mass, no rotation)
        # whose velocity is set every substep to reach the commanded position
        # by the end of the frame. In free space it lands exactly there;
        # pushing clutter slows it slightly; when it squeezes an object
        # against a wall the contact stops it, like a real arm, instead of
        # forcing the object through the wall (which an infinite-mass
        # kinematic body does).
        self.gripper = pymunk.Body(GRIP_MASS, float("inf"))
        self.gripper.position = scene.gripper
        # Local +x is "forward" (along the forearm), where the fingers reach.
        self.grip_shape = pymunk.Circle(self.gripper, GRIP_R, offset=(GRIP_OFFSET, 0.0))
        self.grip_shape.friction = 0.8
        self.grip_shape.elasticity = 0.0
        self.space.add(self.gripper, self.grip_shape)
        for shape in self.shapes:
            shape.filter = pymunk.ShapeFilter(categories=CAT_OBJECT)
        self.set_contact(True)

    def set_contact(self, enabled: bool) -> None:
        """Lowered: the gripper hits objects (never walls; the workspace keeps it inside).
        Lifted: no collisions at all, it passes over the clutter."""
        self.grip_shape.filter = pymunk.ShapeFilter(categories=CAT_GRIPPER, mask=CAT_OBJECT if enabled else 0)

    def step_frame(self, target: tuple[float, float]) -> tuple[tuple[float, float], np.ndarray]:
        """Drive the gripper toward ``target`` over one frame (its heading follows the arm).

        Returns the gripper's reached position and which objects were pushed
        during the frame (by the gripper, another object, or a wall undoing an
        overlap).
        """
        touched = np.zeros(len(self.bodies), bool)
        self.gripper.angle = _heading(tuple(self.gripper.position))
        dt = DT_FRAME / SUBSTEPS
        for k in range(SUBSTEPS):
            p = self.gripper.position
            left = dt * (SUBSTEPS - k)
            self.gripper.velocity = ((target[0] - p[0]) / left, (target[1] - p[1]) / left)
            self.space.step(dt)
            for i, body in enumerate(self.bodies):
                def note(arb: pymunk.Arbiter, i: int = i) -> None:
                    # Resting against a wall is not a push; a wall pushing an
                    # object back out after a squeeze (real overlap) is.
                    if not any(s in self.walls for s in arb.shapes) or min(
                            (c.distance for c in arb.contact_point_set.points), default=0.0) < -WALL_SLOP:
                        touched[i] = True
                body.each_arbiter(note)
        self.gripper.velocity = (0.0, 0.0)
        p = self.gripper.position
        if math.dist(p, target) < 1e-6:
            # Remove float round-off so a free move lands exactly on the command.
            self.gripper.position = target
            p = self.gripper.position
        return (float(p[0]), float(p[1])), touched


def _policy_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), 1]))


class _Policy:
    """Random pushing controller: drive through objects, sometimes wander, lift or close."""

    def __init__(self, seed: int) -> None:
        self.rng = _policy_rng(seed)
        self.target: tuple[float, float] | None = None
        self.speed = 0.05
        self.age = 0
        self.lift: list[int] = []  # queued height commands

    def _new_target(self, grip: tuple[float, float], objs: list[tuple[float, float]]) -> None:
        r = self.rng
        if objs and r.random() < 0.75:
            o = objs[int(r.integers(len(objs)))]
            d = np.array(o) - np.array(grip)
            n = float(np.linalg.norm(d)) or 1.0
            # Aim past the object so the gripper pushes through it.
            over = float(r.uniform(4.0, 10.0))
            t = np.array(o) + d / n * over + r.normal(0, 1.5, 2)
        else:
            t = np.array([r.uniform(WORK[0], WORK[2]), r.uniform(WORK[1], WORK[3])])
        t = np.clip(t, [WORK[0], WORK[1]], [WORK[2], WORK[3]])
        self.target = (float(t[0]), float(t[1]))
        self.speed = float(r.uniform(SPEED[0], SPEED[1]))  # metres per held pair
        self.age = 0

    def act(self, grip: tuple[float, float], objs: list[tuple[float, float]]) -> np.ndarray:
        r = self.rng
        if self.target is None or self.age >= 5 or math.dist(grip, self.target) < 1.5:
            self._new_target(grip, objs)
        self.age += 1
        assert self.target is not None
        du, dv = self.target[0] - grip[0], self.target[1] - grip[1]
        d = np.array([dv, du]) * M_PER_PX  # (x, y) metres
        n = float(np.linalg.norm(d))
        if n > self.speed:
            d *= self.speed / n
        # BAIR's actions are large but jittery (a random policy), so the net
        # drift is small; mimic that with a drift plus noise.
        d = np.clip(d + r.normal(0, NOISE, 2), -ACTION_CLIP, ACTION_CLIP)
        # Height: mostly down, sometimes a short lift (up, hold, then down).
        if not self.lift and r.random() < 0.07:
            self.lift = [2] * int(r.integers(1, 3)) + [1] * int(r.integers(0, 3))
        h = self.lift.pop(0) if self.lift else 0
        u = r.random()
        c = 4 if u < 0.06 else (1 if u < 0.16 else 0)
        return np.array([d[0], d[1], c, h], np.float32)


def simulate_states(seed: int, n_frames: int = N_FRAMES, actions: np.ndarray | None = None) -> dict:
    """Run the physics for one sequence without rendering.

    Args:
        seed: sequence seed; fixes the initial scene (and the policy when
            ``actions`` is None).
        n_frames: number of frames T.
        actions: optional ``[T, 4]`` actions to replay from the same initial
            scene instead of the random policy.

    Returns:
        dict with ``scene`` (`Scene`), ``actions`` [T,4] float32,
        ``endeffector`` [T,3] float32, ``gripper`` [T,2] (u, v px),
        ``z`` [T], ``closure`` [T] (drawn finger closure),
        ``object_pos`` [T,N,2], ``object_angle`` [T,N] and ``touched`` [T,N]
        (during the step that led to frame t the object touched the gripper
        or another object, or a wall pushed it back out of an overlap; always
        False at t = 0).
    """
    scene = make_scene(seed)
    world = _World(scene)
    policy = _Policy(seed) if actions is None else None
    if actions is not None:
        actions = np.asarray(actions, np.float32)
        if actions.shape != (n_frames, 4):
            raise ValueError(f"actions must have shape ({n_frames}, 4), got {actions.shape}")
    n_obj = len(scene.objects)
    out_actions = np.zeros((n_frames, 4), np.float32)
    grip = np.zeros((n_frames, 2))
    zs = np.zeros(n_frames)
    closure = np.zeros(n_frames)
    opos = np.zeros((n_frames, n_obj, 2))
    oang = np.zeros((n_frames, n_obj))
    touched = np.zeros((n_frames, n_obj), bool)

    g = scene.gripper
    z = scene.z0
    held: np.ndarray | None = None
    for t in range(n_frames):
        grip[t] = g
        zs[t] = z
        for i, b in enumerate(world.bodies):
            opos[t, i] = tuple(b.position)
            oang[t, i] = b.angle
        if actions is None:
            assert policy is not None
            # Actions are held for two frames, as in BAIR.
            if t % 2 == 0:
                held = policy.act(g, [tuple(b.position) for b in world.bodies])
            assert held is not None
            a = held
        else:
            a = actions[t]
        out_actions[t] = a
        if t + 1 == n_frames:
            break
        # The end effector follows the command (clipped to the workspace)
        # unless an object squeezed against a wall blocks it.
        x, y = px_to_metres(*g)
        u, v = metres_to_px(x + 0.5 * float(a[0]), y + 0.5 * float(a[1]))
        g = (float(np.clip(u, WORK[0], WORK[2])), float(np.clip(v, WORK[1], WORK[3])))
        world.set_contact(z < Z_CONTACT)
        g, touched[t + 1] = world.step_frame(g)
        z = float(np.clip(z + Z_STEP[_height_cmd(float(a[3]))], Z_DOWN, Z_UP))
        closure[t + 1] = _closure(float(a[2]))

    ee = np.zeros((n_frames, 3), np.float32)
    for t in range(n_frames):
        ee[t, :2] = px_to_metres(*grip[t])
        ee[t, 2] = zs[t]
    return {
        "scene": scene,
        "actions": out_actions,
        "endeffector": ee,
        "gripper": grip,
        "z": zs,
        "closure": closure,
        "object_pos": opos,
        "object_angle": oang,
        "touched": touched,
    }


# ----------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------
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
    wood = base[None, None, :] + ((grain * 16 - 8) + tint + speck * 10)[..., None] * np.array([1.0, 0.95, 0.8])
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


def _arm_points(g: Sequence[float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Shoulder and elbow for a gripper at g: the elbow slides above the top edge, so the
    forearm reaches in from the top of the image like the Sawyer's."""
    elbow = (SHOULDER[0] + ELBOW_FOLLOW * (g[0] - SHOULDER[0]) + 6.0, -4.0 + 0.12 * g[1])
    return SHOULDER, elbow


def _heading(g: Sequence[float]) -> float:
    """Angle of the forearm (elbow -> gripper): the gripper's forward direction."""
    _, elbow = _arm_points(g)
    return math.atan2(g[1] - elbow[1], g[0] - elbow[0])


def _gripper_parts(g: Sequence[float], z: float, closure: float):
    """Geometry of the gripper seen from above; lifted means nearer the camera, so bigger."""
    k = GRIP_SCALE * (1.0 + 0.35 * (z - Z_DOWN) / (Z_UP - Z_DOWN))
    _, elbow = _arm_points(g)
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
        fingers.append([(cx + sx * 0.9 * k * px + sy * 1.8 * k * fx, cy + sx * 0.9 * k * py + sy * 1.8 * k * fy)
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
        shoulder, elbow = _arm_points(g)
        palm, fingers, _ = _gripper_parts(g, z, float(states["closure"][t]))
        shade = ImageDraw.Draw(frame, "RGBA")
        # The arm is high above the table: long, faint shadow; the gripper's
        # shadow drifts away and fades as it is lifted.
        _thick_line(shade, elbow, g, ARM_W, (0, 0, 0, ARM_SHADOW), off=(3.0, 4.0))
        so = (1.5 + 3.0 * lift, 2.0 + 3.0 * lift)
        shade.polygon([((x + so[0]) * s, (y + so[1]) * s) for x, y in palm], fill=(0, 0, 0, int(60 - 20 * lift)))
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


def simulate_sequence(seed: int, n_frames: int = N_FRAMES,
                      actions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate and render one sequence.

    Args:
        seed: sequence seed (fixes the initial scene; also the policy when
            ``actions`` is None).
        n_frames: number of frames T.
        actions: optional ``[T, 4]`` actions: replays the same initial scene
            with these actions instead of the random policy.

    Returns:
        ``frames`` uint8 [T, 64, 64, 3], ``actions`` float32 [T, 4],
        ``endeffector_positions`` float32 [T, 3].
    """
    st = simulate_states(seed, n_frames, actions)
    return render_states(st), st["actions"], st["endeffector"]


# ----------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------
def copy_last_psnr(frames_uint8: np.ndarray | Sequence[np.ndarray], ref_frame: int = 1,
                   frames: Iterable[int] = range(2, 12)) -> float:
    """Mean PSNR (dB) of predicting ``frames`` by copying frame ``ref_frame``.

    PSNR = 10 log10(1 / MSE) per frame with pixels in [0, 1], averaged over
    frames and sequences (the lab's protocol). Accepts ``[N, T, H, W, 3]``
    uint8 or a list of ``[T, H, W, 3]`` arrays.
    """
    idx = list(frames)
    vals = []
    for seq in frames_uint8:
        x = np.asarray(seq, np.float64) / 255.0
        ref = x[ref_frame]
        for t in idx:
            mse = float(np.mean((x[t] - ref) ** 2))
            vals.append(10 * math.log10(1.0 / max(mse, 1e-10)))
    return float(np.mean(vals))


# ----------------------------------------------------------------------------
# Dataset writer
# ----------------------------------------------------------------------------
def sequence_seed(seed: int, split: str, index: int) -> int:
    """Seed of sequence ``index`` of ``split``: independent of worker count and order."""
    ss = np.random.SeedSequence([int(seed), SPLITS.index(split), int(index)])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def traj_dir(index: int) -> str:
    """BAIR-style shard folder of sequence ``index``: ``traj_<a>_to_<a+255>.tfrecords``."""
    a = (index // SHARD) * SHARD
    return f"traj_{a}_to_{a + SHARD - 1}.tfrecords"


def _write_one(job: tuple[str, str, int, int]) -> tuple[str, float]:
    """Generate and write one sequence (runs in a worker process); return (split, copy-last PSNR)."""
    out, split, index, seed = job
    frames, actions, ee = simulate_sequence(sequence_seed(seed, split, index))
    d = Path(out) / split / traj_dir(index) / str(index % SHARD)
    d.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(frames):
        # Fixed encoder settings and no metadata: byte-identical files.
        Image.fromarray(f, "RGB").save(d / f"{t}.png", format="PNG", compress_level=1)
    np.savetxt(d / "actions.csv", actions, delimiter=",")
    np.savetxt(d / "endeffector_positions.csv", ee, delimiter=",")
    return split, copy_last_psnr(frames[None])


def _pool(n: int) -> "multiprocessing.pool.Pool":
    """A process pool for the writers.

    On Linux, fork: workers start at once and, unlike spawn, never re-import
    the caller's ``__main__`` (which breaks for ``python - <<EOF`` and for
    scripts without an ``if __name__ == "__main__"`` guard). The workers only
    run numpy/PIL/pymunk code, so a parent holding threads (a notebook with
    torch) is harmless; Python >= 3.12's warning about that is silenced.
    Elsewhere (macOS, Windows) fork is unsafe or missing: spawn.
    """
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
        return multiprocessing.get_context(method).Pool(n)


def _manifest_params(train: int, validate: int, test: int, seed: int) -> dict:
    return {"generator": "lab5.data.synthetic", "format_version": FORMAT_VERSION, "seed": seed,
            "train": train, "validate": validate, "test": test, "n_frames": N_FRAMES,
            "image_size": IMG, "shard": SHARD}


def make_synthetic(out: str | os.PathLike, train: int | None = None, validate: int | None = None,
                   test: int | None = None, seed: int | None = None, workers: int | None = None,
                   progress: bool = True) -> dict:
    """Generate the embedded dataset in the lab layout under ``out``.

    Args:
        out: destination root; must not exist or be empty, unless it already
            holds a complete synthetic set with the same parameters (then this
            returns at once).
        train, validate, test: sequences per split (None: `DEFAULTS`).
        seed: dataset seed (None: 0).
        workers: processes (None: ``os.cpu_count()`` capped at 2). The output
            does not depend on it.
        progress: show a tqdm bar.

    Returns:
        The manifest (also written to ``out/SYNTHETIC.json``) plus ``path``,
        ``reused`` (True when an identical set was already there) and
        ``seconds``.

    Raises:
        FileExistsError: ``out`` is non-empty and not the same synthetic set.
    """
    params = _manifest_params(
        DEFAULTS["train"] if train is None else int(train),
        DEFAULTS["validate"] if validate is None else int(validate),
        DEFAULTS["test"] if test is None else int(test),
        DEFAULTS["seed"] if seed is None else int(seed),
    )
    out = Path(out)
    manifest_path = out / "SYNTHETIC.json"
    t0 = time.perf_counter()
    if out.exists() and any(out.iterdir()):
        if manifest_path.is_file():
            old = json.loads(manifest_path.read_text())
            if {k: old.get(k) for k in params} == params:
                return {**old, "path": str(out), "reused": True, "seconds": time.perf_counter() - t0}
            raise FileExistsError(
                f"{out} already holds a synthetic set with other parameters "
                f"({ {k: old.get(k) for k in ('seed', 'train', 'validate', 'test')} }); "
                "choose another --out or delete it")
        raise FileExistsError(f"{out} is not empty and is not a complete synthetic set "
                              "(no SYNTHETIC.json); choose an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)

    jobs = [(str(out), split, i, params["seed"]) for split in SPLITS for i in range(params[split])]
    n_workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    n_workers = min(n_workers, max(1, len(jobs)))
    psnr: dict[str, list[float]] = {s: [] for s in SPLITS}
    from lab5.progress import progress_bar

    bar = progress_bar(total=len(jobs), desc="make-synthetic", unit="seq", disable=not progress)
    try:
        if n_workers == 1:
            results: Iterable[tuple[str, float]] = map(_write_one, jobs)
            for split, p in results:
                psnr[split].append(p)
                bar.update()
        else:
            with _pool(n_workers) as pool:
                for split, p in pool.imap_unordered(_write_one, jobs, chunksize=8):
                    psnr[split].append(p)
                    bar.update()
    finally:
        bar.close()

    manifest = {**params, "copy_last_psnr_db": {s: round(float(np.mean(sorted(v))), 3) for s, v in psnr.items() if v}}
    # Written last and atomically: its presence means the set is complete.
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, manifest_path)
    return {**manifest, "path": str(out), "reused": False, "seconds": time.perf_counter() - t0}
