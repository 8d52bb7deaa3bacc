"""The simulated robot-pushing world: scenes, pymunk physics and the random pushing policy.

A top-down 2-D bin in pymunk, in pixels of the 64x64 image (u right, v down), that stands in for
BAIR robot pushing so every notebook and test runs without a download. No gravity in the image
plane; table friction is the usual top-down trick: each object is tied to the static body by a
``PivotJoint`` and a ``GearJoint`` with ``max_bias = 0`` and a bounded ``max_force``, so objects stay
put until pushed, then slide to a stop. 3-6 objects (circles, boxes, convex polygons) with an
off-centre accent so rotation shows. The gripper is a kinematic disc that lands exactly on the
commanded position every frame (no contact moves or slows it, so the end-effector positions follow
from the actions alone); it touches objects only while lowered, and passes over an object that a
wall already holds instead of forcing it through the wall.

Actions ``[T, 4]`` float32, held for two frames as in BAIR: columns 0-1 the commanded end-effector
displacement in metres per held pair (within +-0.075; the end effector moves half of it each
frame, clipped to the workspace); column 2 in {0, 1, 4} the gripper closure (open, half, closed);
column 3 in {0, 1, 2} the height command (down, hold, up: z moves -0.025 / 0 / +0.03 m per frame
within [0.20, 0.31]). End-effector positions ``[T, 3]`` float32 map the gripper's image position
to BAIR-like metres (0.0125 m per pixel): x down the image in [0.40, 0.825], y to the right in
[-0.275, 0.275], z the height. Everything is a pure function of the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import pymunk

IMG = 64
N_FRAMES = 30

# The bin floor (inside the walls) and where the gripper centre may go. The gripper keeps a margin
# from the walls so an object squeezed against a wall is pushed along it rather than through it.
FLOOR = (6.0, 8.0, 58.0, 50.0)  # u0, v0, u1, v1
WORK = (10.0, 12.0, 54.0, 46.0)

# Image <-> BAIR-like metres: x grows down the image (away from the robot at the top), y to the right.
M_PER_PX = 0.0125
X0_M, V0_PX = 0.40, WORK[1]
U0_PX = IMG / 2

Z_DOWN, Z_UP = 0.20, 0.31
Z_STEP = {0: -0.025, 1: 0.0, 2: 0.03}  # per frame, by height command
Z_CONTACT = 0.235  # above this the gripper clears the objects
ACTION_CLIP = 0.075
ACTION_COLUMNS = 4  # x, y step (metres per held pair), gripper closure, height command
SPEED = (0.015, 0.045)  # policy drift, metres per held pair
NOISE = 0.03  # policy jitter (std), metres per held pair

GRIP_R = 4.0  # physics radius of the gripper (px), about the drawn palm + fingers
GRIP_OFFSET = 1.0  # the fingers reach forward of the palm centre, so the disc sits forward too
CAT_OBJECT, CAT_GRIPPER = 0b01, 0b10  # collision categories
KIND_GRIPPER, KIND_OBJECT = 1, 2  # pymunk collision types, for the squeeze rule
WALL_SLOP = 0.15  # px of wall overlap that counts as the wall pushing (pymunk's slop is 0.1)
DT_FRAME = 0.1  # simulated seconds per video frame
SUBSTEPS = 4
FRICTION_ACC = 100.0  # px/s^2: how fast table friction stops a sliding object of density DENSITY_REF
# Ranges of the hidden per-object properties (log-uniform): density (mass per area) and friction (a
# multiple of FRICTION_ACC). The table's drag scales with an object's footprint and friction, not its
# mass, so a pushed object decelerates at FRICTION_ACC * friction * DENSITY_REF / density: light and
# slippery ones slide on for several frames, heavy and rough ones stop at once, and in object-object
# pushes the heavier one carries on. Both properties change what a push does.
DENSITY = (0.5, 3.0)
DENSITY_REF = 1.0
FRICTION = (0.1, 1.0)
SHOULDER = (32.0, -22.0)  # arm base, above the image
ELBOW_FOLLOW = 0.35  # how much the elbow follows the gripper sideways

# red, green, blue, yellow, orange, purple, white, dark grey, pink, cyan
PALETTE = ((205, 45, 45), (70, 185, 65), (45, 105, 205), (235, 195, 40), (240, 135, 35), (125, 65, 155),
           (238, 238, 232), (95, 95, 100), (230, 115, 165), (40, 175, 185))


# --------------------------------------------------------------------------- scene


@dataclass(frozen=True)
class ObjectSpec:
    """One clutter object. ``verts`` are local polygon vertices (px), or empty for a circle."""

    kind: str  # "circle" | "box" | "poly"
    radius: float  # circle radius, or bounding radius of the polygon
    verts: tuple[tuple[float, float], ...]
    colour: tuple[int, int, int]
    accent: tuple[int, int, int]
    density: float
    friction: float = 1.0  # table friction, a multiple of FRICTION_ACC


@dataclass(frozen=True)
class Scene:
    """Initial state drawn from a seed: objects, their poses, and the gripper start."""

    objects: tuple[ObjectSpec, ...]
    positions: tuple[tuple[float, float], ...]
    angles: tuple[float, ...]
    gripper: tuple[float, float]  # (u, v) px
    z0: float


def _jitter(rng: np.random.Generator, rgb: Sequence[int], amount: int) -> tuple[int, int, int]:
    jittered = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)
    return tuple(jittered)  # type: ignore[return-value]


def _random_object(rng: np.random.Generator) -> ObjectSpec:
    kind = ("circle", "box", "poly")[int(rng.integers(3))]
    colour = _jitter(rng, PALETTE[int(rng.integers(len(PALETTE)))], 18)
    # The accent contrasts with the body so rotation shows: darker for light bodies, lighter for dark.
    lum = 0.3 * colour[0] + 0.59 * colour[1] + 0.11 * colour[2]
    accent = (tuple(int(c * 0.45) for c in colour) if lum > 110
              else tuple(min(255, int(c + 120)) for c in colour))
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
    """The initial scene of sequence ``seed``: 3-6 non-overlapping objects and a gripper start, from
    the seed's scene stream only, so replaying a seed with other actions starts from the same scene."""
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
    # Hidden properties, which no frame and no action shows: each object's mass (density) and how far
    # it slides on the table once a push ends. They make a push's outcome uncertain from two frames
    # and the actions, as in real BAIR. A stream of their own: the visible scene stays as it was.
    hidden = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    objects = [replace(o, density=float(d), friction=float(f)) for o, d, f in zip(
        objects, np.exp(hidden.uniform(np.log(DENSITY[0]), np.log(DENSITY[1]), len(objects))),
        np.exp(hidden.uniform(np.log(FRICTION[0]), np.log(FRICTION[1]), len(objects))))]
    # Start the gripper anywhere in its workspace but clear of the objects, so that nothing is
    # shoved by an initial overlap.
    g = (float(rng.uniform(WORK[0], WORK[2])), float(rng.uniform(WORK[1], WORK[3])))
    for _attempt in range(200):
        if all(math.dist(g, q) > GRIP_R + GRIP_OFFSET + o.radius + 1.0 for q, o in zip(positions, objects)):
            break
        g = (float(rng.uniform(WORK[0], WORK[2])), float(rng.uniform(WORK[1], WORK[3])))
    z0 = Z_DOWN if rng.random() < 0.8 else Z_UP
    return Scene(tuple(objects), tuple(positions), angles, g, z0)


# --------------------------------------------------------------------------- coordinates


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


def arm_points(g: Sequence[float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Shoulder and elbow for a gripper at g: the elbow slides above the top edge, so the
    forearm reaches in from the top of the image like the Sawyer's."""
    elbow = (SHOULDER[0] + ELBOW_FOLLOW * (g[0] - SHOULDER[0]) + 6.0, -4.0 + 0.12 * g[1])
    return SHOULDER, elbow


def heading(g: Sequence[float]) -> float:
    """Angle of the forearm (elbow -> gripper): the gripper's forward direction."""
    _, elbow = arm_points(g)
    return math.atan2(g[1] - elbow[1], g[0] - elbow[0])


# --------------------------------------------------------------------------- physics


class _World:
    """The pymunk space for one sequence."""

    def __init__(self, scene: Scene) -> None:
        self.space = pymunk.Space()
        self.space.gravity = (0.0, 0.0)
        self.space.iterations = 20
        self._add_walls()
        self.bodies: list[pymunk.Body] = []
        self.shapes: list[pymunk.Shape] = []
        for spec, pos, ang in zip(scene.objects, scene.positions, scene.angles):
            self._add_object(spec, pos, ang)
        # The gripper is kinematic: its velocity is set every substep to land on the commanded
        # position at the end of the frame, and no contact moves or slows it, whatever the objects'
        # hidden masses. An object it squeezes against a wall is let through (``_squeeze``).
        self.gripper = pymunk.Body(body_type=pymunk.Body.KINEMATIC)
        self.gripper.position = scene.gripper
        # Local +x is "forward" (along the forearm), where the fingers reach.
        self.grip_shape = pymunk.Circle(self.gripper, GRIP_R, offset=(GRIP_OFFSET, 0.0))
        self.grip_shape.friction = 0.8
        self.grip_shape.elasticity = 0.0
        self.grip_shape.collision_type = KIND_GRIPPER
        self.space.add(self.gripper, self.grip_shape)
        for shape in self.shapes:
            shape.filter = pymunk.ShapeFilter(categories=CAT_OBJECT)
            shape.collision_type = KIND_OBJECT
        self.space.on_collision(KIND_GRIPPER, KIND_OBJECT, pre_solve=self._squeeze)
        self.set_contact(True)

    def _add_walls(self) -> None:
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

    def _add_object(self, spec: ObjectSpec, pos: tuple[float, float], ang: float) -> None:
        body = pymunk.Body()
        shape: pymunk.Shape = (pymunk.Circle(body, spec.radius) if spec.kind == "circle"
                               else pymunk.Poly(body, list(spec.verts)))
        shape.density = spec.density
        shape.friction = 0.6
        shape.elasticity = 0.0
        body.position = pos
        body.angle = ang
        self.space.add(body, shape)
        # Top-down table friction: joints to the static body that only resist motion
        # (max_bias 0) with a bounded force.
        static = self.space.static_body
        pivot = pymunk.PivotJoint(static, body, (0, 0), (0, 0))
        pivot.max_bias = 0.0
        drag = body.mass * FRICTION_ACC * spec.friction * DENSITY_REF / spec.density  # footprint, not mass
        pivot.max_force = drag
        gear = pymunk.GearJoint(static, body, 0.0, 1.0)
        gear.max_bias = 0.0
        # Friction torque of a uniformly pressed disc: the drag times (2/3) r.
        gear.max_force = drag * (2.0 / 3.0) * spec.radius
        self.space.add(pivot, gear)
        self.bodies.append(body)
        self.shapes.append(shape)

    def _squeeze(self, arbiter: pymunk.Arbiter, space: pymunk.Space, data: object) -> None:
        # An object already pressed into a wall (real overlap) would be forced through it by the
        # kinematic gripper: the gripper passes over it instead, as a real arm's compliance would.
        body = next(s.body for s in arbiter.shapes if s is not self.grip_shape)
        pressed = [False]

        def check(arb: pymunk.Arbiter) -> None:
            if any(s in self.walls for s in arb.shapes) and min(
                    (c.distance for c in arb.contact_point_set.points), default=0.0) < -WALL_SLOP:
                pressed[0] = True
        body.each_arbiter(check)
        if pressed[0]:
            arbiter.process_collision = False

    def set_contact(self, enabled: bool) -> None:
        """Lowered: the gripper hits objects (never walls; the workspace keeps it inside).
        Lifted: no collisions at all, it passes over the clutter."""
        self.grip_shape.filter = pymunk.ShapeFilter(categories=CAT_GRIPPER, mask=CAT_OBJECT if enabled else 0)

    def step_frame(self, target: tuple[float, float]) -> tuple[tuple[float, float], np.ndarray]:
        """Drive the gripper toward ``target`` over one frame; return its reached position and which
        objects were pushed (by the gripper, another object, or a wall undoing an overlap)."""
        touched = np.zeros(len(self.bodies), bool)
        self.gripper.angle = heading(tuple(self.gripper.position))
        dt = DT_FRAME / SUBSTEPS
        for k in range(SUBSTEPS):
            p = self.gripper.position
            left = dt * (SUBSTEPS - k)
            self.gripper.velocity = ((target[0] - p[0]) / left, (target[1] - p[1]) / left)
            self.space.step(dt)
            for i, body in enumerate(self.bodies):
                def note(arb: pymunk.Arbiter, i: int = i) -> None:
                    # Resting against a wall is not a push; a wall pushing an object back out
                    # after a squeeze (real overlap) is.
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


def _policy_rng(seed: int, stream: int = 0) -> np.random.Generator:
    # Stream 0 is the data's policy; another stream pushes the same scene another way.
    return np.random.default_rng(np.random.SeedSequence([int(seed), 1] + ([int(stream)] if stream else [])))


class _Policy:
    """Random pushing controller: drive through objects, sometimes wander, lift or close."""

    def __init__(self, seed: int, stream: int = 0) -> None:
        self.rng = _policy_rng(seed, stream)
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
        # BAIR's actions are large but jittery (a random policy), so the net drift is small;
        # mimic that with a drift plus noise.
        d = np.clip(d + r.normal(0, NOISE, 2), -ACTION_CLIP, ACTION_CLIP)
        # Height: mostly down, sometimes a short lift (up, hold, then down).
        if not self.lift and r.random() < 0.07:
            self.lift = [2] * int(r.integers(1, 3)) + [1] * int(r.integers(0, 3))
        h = self.lift.pop(0) if self.lift else 0
        u = r.random()
        c = 4 if u < 0.06 else (1 if u < 0.16 else 0)
        return np.array([d[0], d[1], c, h], np.float32)


def simulate_states(seed: int, n_frames: int = N_FRAMES, actions: np.ndarray | None = None,
                    scene: Scene | None = None, policy_stream: int = 0) -> dict:
    """Run the physics for one sequence without rendering.

    ``seed`` fixes the initial scene (and the policy when ``actions`` is None); ``actions``:
    optional ``[T, 4]`` actions to replay from the same initial scene instead of the policy; ``scene``:
    another initial scene instead of the seed's (the seed's with other hidden properties, say);
    ``policy_stream``: another random stream for the policy (0 is the data's), the same scene pushed
    another way.
    Returns a dict with ``scene`` (`Scene`), ``actions`` [T,4] float32, ``endeffector`` [T,3]
    float32, ``gripper`` [T,2] (u, v px), ``z`` [T], ``closure`` [T] (drawn finger closure),
    ``object_pos`` [T,N,2], ``object_angle`` [T,N] and ``touched`` [T,N] (during the step that
    led to frame t the object touched the gripper or another object, or a wall pushed it back out
    of an overlap; always False at t = 0).
    """
    scene = make_scene(seed) if scene is None else scene
    world = _World(scene)
    policy = _Policy(seed, policy_stream) if actions is None else None
    if actions is not None:
        actions = np.asarray(actions, np.float32)
        if actions.shape != (n_frames, ACTION_COLUMNS):
            raise ValueError(f"actions must have shape ({n_frames}, {ACTION_COLUMNS}), got {actions.shape}")
    n_obj = len(scene.objects)
    out_actions = np.zeros((n_frames, ACTION_COLUMNS), np.float32)
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
        # The end effector follows the command, clipped to the workspace.
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
    return {"scene": scene, "actions": out_actions, "endeffector": ee, "gripper": grip, "z": zs,
            "closure": closure, "object_pos": opos, "object_angle": oang, "touched": touched}


