"""The simulated robot-pushing world that stands in for BAIR (no download): a top-down pymunk bin in pixels of the
64x64 image (u right, v down) where 3-6 objects rest until a kinematic gripper disc, lowered, pushes them; the
random pushing policy; scenes. Everything is a pure function of the seed."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import pymunk

IMG, N_FRAMES = 64, 30
# The bin floor (inside the walls) and where the gripper centre may go. The gripper keeps a margin
# from the walls so an object squeezed against a wall is pushed along it rather than through it.
FLOOR = (6.0, 8.0, 58.0, 50.0)  # u0, v0, u1, v1
WORK = (10.0, 12.0, 54.0, 46.0)
# Image <-> BAIR-like metres: x grows down the image (away from the robot at the top), y to the right.
M_PER_PX, X0_M, V0_PX, U0_PX = 0.0125, 0.40, WORK[1], IMG / 2
Z_DOWN, Z_UP = 0.20, 0.31
Z_STEP = {0: -0.025, 1: 0.0, 2: 0.03}  # per frame, by height command
Z_CONTACT = 0.235  # above this the gripper clears the objects
ACTION_CLIP = 0.075
# Actions [T, 4], each held for two frames as in BAIR: the end effector's (x, y) step in metres per held pair
# (half of it each frame, clipped to WORK), gripper closure in {0, 1, 4} (open, half, closed), height command in
# {0, 1, 2} (Z_STEP). Positions [T, 3]: x down the image, y to the right (px_to_metres), z the height.
ACTION_NAMES = ("dx", "dy", "closure", "height")
ACTION_COLUMNS = len(ACTION_NAMES)
SPEED, NOISE = (0.015, 0.045), 0.03  # policy drift (range) and jitter (std), metres per held pair
GRIP_R = 4.0  # physics radius of the gripper (px), about the drawn palm + fingers
GRIP_OFFSET = 1.0  # the fingers reach forward of the palm centre, so the disc sits forward too
CAT_OBJECT, CAT_GRIPPER, KIND_GRIPPER, KIND_OBJECT = 0b01, 0b10, 1, 2  # collision categories, types
WALL_SLOP = 0.15  # px of wall overlap that counts as the wall pushing (pymunk's slop is 0.1)
DT_FRAME, SUBSTEPS = 0.1, 4  # simulated seconds per video frame, physics steps per frame
FRICTION_ACC = 100.0  # px/s^2: how fast table friction stops a sliding object of density DENSITY_REF
# Hidden per-object density and friction (log-uniform ranges): a pushed object decelerates at FRICTION_ACC *
# friction * DENSITY_REF / density, so light slippery ones slide on for frames and heavy rough ones stop at once.
DENSITY, DENSITY_REF, FRICTION = (0.5, 3.0), 1.0, (0.1, 1.0)
SHOULDER, ELBOW_FOLLOW = (32.0, -22.0), 0.35  # arm base above the image; how far the elbow follows sideways
# red, green, blue, yellow, orange, purple, white, dark grey, pink, cyan
PALETTE = ((205, 45, 45), (70, 185, 65), (45, 105, 205), (235, 195, 40), (240, 135, 35), (125, 65, 155),
           (238, 238, 232), (95, 95, 100), (230, 115, 165), (40, 175, 185))


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


def _random_object(rng: np.random.Generator) -> ObjectSpec:
    kind = ("circle", "box", "poly")[int(rng.integers(3))]
    base_rgb = PALETTE[int(rng.integers(len(PALETTE)))]
    colour = tuple(int(np.clip(c + rng.integers(-18, 19), 0, 255)) for c in base_rgb)
    # The accent contrasts with the body so rotation shows: darker for light bodies, lighter for dark.
    lum = 0.3 * colour[0] + 0.59 * colour[1] + 0.11 * colour[2]
    accent = (tuple(int(c * 0.45) for c in colour) if lum > 110
              else tuple(min(255, int(c + 120)) for c in colour))
    verts: tuple[tuple[float, float], ...] = ()
    if kind == "circle":
        r = float(rng.uniform(3.4, 5.4))
    elif kind == "box":
        w, h = float(rng.uniform(5.0, 10.5)), float(rng.uniform(4.5, 7.5))
        verts, r = ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)), math.hypot(w, h) / 2
    else:
        n = int(rng.choice([3, 5, 6]))
        r = float(rng.uniform(4.2, 6.2))
        base = np.sort(rng.uniform(0, 2 * np.pi, n) * 0.25 + np.arange(n) * 2 * np.pi / n)
        radii = r * rng.uniform(0.8, 1.0, n)
        verts = tuple((float(ri * np.cos(a)), float(ri * np.sin(a))) for ri, a in zip(radii, base))
    return ObjectSpec(kind, r, verts, colour, accent, 1.0)  # type: ignore[arg-type]


def make_scene(seed: int) -> Scene:
    """The initial scene of sequence ``seed`` (its own random stream: the same whatever the actions)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    objects: list[ObjectSpec] = []
    positions: list[tuple[float, float]] = []
    for _ in range(int(rng.integers(3, 7))):
        spec = _random_object(rng)
        for _attempt in range(100):  # rejection sampling for a free spot
            p = (float(rng.uniform(FLOOR[0] + spec.radius + 1, FLOOR[2] - spec.radius - 1)),
                 float(rng.uniform(FLOOR[1] + spec.radius + 1, FLOOR[3] - spec.radius - 1)))
            if all(math.dist(p, q) > spec.radius + o.radius + 1.0 for q, o in zip(positions, objects)):
                objects.append(spec)
                positions.append(p)
                break
    angles = tuple(float(a) for a in rng.uniform(0, 2 * np.pi, len(objects)))
    # Hidden properties (mass, how far it slides) that no frame or action shows make a push's outcome
    # uncertain, as in real BAIR. A stream of their own: the visible scene stays as it was.
    hidden = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    objects = [replace(o, density=float(d), friction=float(f)) for o, d, f in zip(
        objects, np.exp(hidden.uniform(np.log(DENSITY[0]), np.log(DENSITY[1]), len(objects))),
        np.exp(hidden.uniform(np.log(FRICTION[0]), np.log(FRICTION[1]), len(objects))))]
    # The gripper starts clear of the objects, so that nothing is shoved by an initial overlap.
    g = (float(rng.uniform(WORK[0], WORK[2])), float(rng.uniform(WORK[1], WORK[3])))
    for _attempt in range(200):
        if all(math.dist(g, q) > GRIP_R + GRIP_OFFSET + o.radius + 1.0 for q, o in zip(positions, objects)):
            break
        g = (float(rng.uniform(WORK[0], WORK[2])), float(rng.uniform(WORK[1], WORK[3])))
    z0 = Z_DOWN if rng.random() < 0.8 else Z_UP
    return Scene(tuple(objects), tuple(positions), angles, g, z0)


def px_to_metres(u: float, v: float) -> tuple[float, float]:
    """Gripper image position -> BAIR-like (x, y) metres (also elementwise on arrays)."""
    return X0_M + (v - V0_PX) * M_PER_PX, (u - U0_PX) * M_PER_PX


def metres_to_px(x: float, y: float) -> tuple[float, float]:
    """BAIR-like (x, y) metres -> image (u, v) pixels."""
    return U0_PX + y / M_PER_PX, V0_PX + (x - X0_M) / M_PER_PX


def arm_points(g: Sequence[float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Shoulder and elbow for a gripper at g: the forearm reaches in from the top edge like the Sawyer's."""
    elbow = (SHOULDER[0] + ELBOW_FOLLOW * (g[0] - SHOULDER[0]) + 6.0, -4.0 + 0.12 * g[1])
    return SHOULDER, elbow


def _contact_shape(shape: pymunk.Shape, friction: float, kind: int = 0) -> pymunk.Shape:
    shape.friction, shape.elasticity, shape.collision_type = friction, 0.0, kind
    return shape


class _World:
    """The pymunk space for one sequence."""

    def __init__(self, scene: Scene) -> None:
        self.space = pymunk.Space()
        self.space.gravity, self.space.iterations = (0.0, 0.0), 20
        (u0, v0, u1, v1), t = FLOOR, 20.0  # thick walls so squeezed objects cannot tunnel out
        self.walls = [_contact_shape(pymunk.Poly(self.space.static_body, corners), 0.5) for corners in (
            [(u0 - t, v0 - t), (u1 + t, v0 - t), (u1 + t, v0), (u0 - t, v0)],
            [(u0 - t, v1), (u1 + t, v1), (u1 + t, v1 + t), (u0 - t, v1 + t)],
            [(u0 - t, v0 - t), (u0, v0 - t), (u0, v1 + t), (u0 - t, v1 + t)],
            [(u1, v0 - t), (u1 + t, v0 - t), (u1 + t, v1 + t), (u1, v1 + t)])]
        self.space.add(*self.walls)
        self.bodies = [self._add_object(*args) for args in zip(scene.objects, scene.positions, scene.angles)]
        # Kinematic: its velocity is set every substep to land on the commanded position at the end of
        # the frame, whatever the objects' masses. An object squeezed against a wall is let through.
        self.gripper = pymunk.Body(body_type=pymunk.Body.KINEMATIC)
        self.gripper.position = scene.gripper
        # Local +x is "forward" (along the forearm), where the fingers reach.
        self.grip_shape = _contact_shape(pymunk.Circle(self.gripper, GRIP_R, offset=(GRIP_OFFSET, 0.0)), 0.8,
                                         KIND_GRIPPER)
        self.space.add(self.gripper, self.grip_shape)
        self.space.on_collision(KIND_GRIPPER, KIND_OBJECT, pre_solve=self._squeeze)

    def _add_object(self, spec: ObjectSpec, pos: tuple[float, float], ang: float) -> pymunk.Body:
        body = pymunk.Body()
        shape = _contact_shape(pymunk.Circle(body, spec.radius) if spec.kind == "circle"
                               else pymunk.Poly(body, list(spec.verts)), 0.6, KIND_OBJECT)
        shape.density, shape.filter = spec.density, pymunk.ShapeFilter(categories=CAT_OBJECT)
        body.position, body.angle = pos, ang
        self.space.add(body, shape)
        # Top-down table friction: joints that only resist motion (max_bias 0) with a bounded force.
        drag = body.mass * FRICTION_ACC * spec.friction * DENSITY_REF / spec.density  # footprint, not mass
        pivot = pymunk.PivotJoint(self.space.static_body, body, (0, 0), (0, 0))
        pivot.max_bias, pivot.max_force = 0.0, drag
        gear = pymunk.GearJoint(self.space.static_body, body, 0.0, 1.0)
        # Friction torque of a uniformly pressed disc: the drag times (2/3) r.
        gear.max_bias, gear.max_force = 0.0, drag * (2.0 / 3.0) * spec.radius
        self.space.add(pivot, gear)
        return body

    def _wall_overlap(self, arb: pymunk.Arbiter) -> bool:
        """A wall holds the object in real overlap (deeper than pymunk's slop)."""
        return any(s in self.walls for s in arb.shapes) and min(
            (c.distance for c in arb.contact_point_set.points), default=0.0) < -WALL_SLOP

    def _squeeze(self, arbiter: pymunk.Arbiter, space: pymunk.Space, data: object) -> None:
        # The kinematic gripper would force an object pressed into a wall through it: it passes over
        # the object instead, as a real arm's compliance would.
        body = next(s.body for s in arbiter.shapes if s is not self.grip_shape)
        pressed: list[bool] = []
        body.each_arbiter(lambda arb: pressed.append(self._wall_overlap(arb)))
        if any(pressed):
            arbiter.process_collision = False

    def step_frame(self, target: tuple[float, float]) -> tuple[tuple[float, float], np.ndarray]:
        """Drive the gripper to ``target`` over one frame: its position, and the objects pushed (by the gripper,
        another object, or a wall undoing an overlap)."""
        touched, g, dt = np.zeros(len(self.bodies), bool), tuple(self.gripper.position), DT_FRAME / SUBSTEPS
        _, elbow = arm_points(g)
        self.gripper.angle = math.atan2(g[1] - elbow[1], g[0] - elbow[0])  # forward: along the forearm
        for k in range(SUBSTEPS):
            p = self.gripper.position
            left = dt * (SUBSTEPS - k)
            self.gripper.velocity = ((target[0] - p[0]) / left, (target[1] - p[1]) / left)
            self.space.step(dt)
            for i, body in enumerate(self.bodies):
                def note(arb: pymunk.Arbiter, i: int = i) -> None:
                    # Resting against a wall is not a push; a wall pushing an object back out
                    # after a squeeze (real overlap) is.
                    if not any(s in self.walls for s in arb.shapes) or self._wall_overlap(arb):
                        touched[i] = True
                body.each_arbiter(note)
        self.gripper.velocity = (0.0, 0.0)
        if math.dist(self.gripper.position, target) < 1e-6:
            # Remove float round-off so a free move lands exactly on the command.
            self.gripper.position = target
        p = self.gripper.position
        return (float(p[0]), float(p[1])), touched


class _Policy:
    """Random pushing controller: drive through objects, sometimes wander, lift or close."""

    def __init__(self, seed: int, stream: int = 0) -> None:
        # Stream 0 is the data's policy; another stream pushes the same scene another way.
        entropy = [int(seed), 1] + ([int(stream)] if stream else [])
        self.rng = np.random.default_rng(np.random.SeedSequence(entropy))
        self.target: tuple[float, float] | None = None
        self.speed, self.age = 0.05, 0
        self.lift: list[int] = []  # queued height commands
        self.held = np.zeros(ACTION_COLUMNS, np.float32)

    def _new_target(self, grip: tuple[float, float], objs: list[tuple[float, float]]) -> None:
        r = self.rng
        if objs and r.random() < 0.75:
            o = np.array(objs[int(r.integers(len(objs)))])
            d = o - np.array(grip)
            # Aim past the object so the gripper pushes through it.
            t = o + d / (float(np.linalg.norm(d)) or 1.0) * float(r.uniform(4.0, 10.0)) + r.normal(0, 1.5, 2)
        else:
            t = np.array([r.uniform(WORK[0], WORK[2]), r.uniform(WORK[1], WORK[3])])
        t = np.clip(t, [WORK[0], WORK[1]], [WORK[2], WORK[3]])
        self.target = (float(t[0]), float(t[1]))
        self.speed = float(r.uniform(SPEED[0], SPEED[1]))  # metres per held pair
        self.age = 0

    def act(self, t: int, grip: tuple[float, float], objs: list[tuple[float, float]]) -> np.ndarray:
        """The action of frame ``t``: a new one on even frames, held for two frames as in BAIR."""
        if t % 2:
            return self.held
        r = self.rng
        if self.target is None or self.age >= 5 or math.dist(grip, self.target) < 1.5:
            self._new_target(grip, objs)
        self.age += 1
        assert self.target is not None
        d = np.array([self.target[1] - grip[1], self.target[0] - grip[0]]) * M_PER_PX  # (x, y) metres
        n = float(np.linalg.norm(d))
        if n > self.speed:
            d *= self.speed / n
        # BAIR's actions are large but jittery (a random policy), so the net drift is small: drift plus noise.
        d = np.clip(d + r.normal(0, NOISE, 2), -ACTION_CLIP, ACTION_CLIP)
        # Height: mostly down, sometimes a short lift (up, hold, then down).
        if not self.lift and r.random() < 0.07:
            self.lift = [2] * int(r.integers(1, 3)) + [1] * int(r.integers(0, 3))
        h = self.lift.pop(0) if self.lift else 0
        u = r.random()
        self.held = np.array([d[0], d[1], 4 if u < 0.06 else (1 if u < 0.16 else 0), h], np.float32)
        return self.held


def _step_gripper(world: _World, g: tuple[float, float], z: float,
                  a: np.ndarray) -> tuple[tuple[float, float], float, float, np.ndarray]:
    """One frame of action ``a`` from gripper ``g`` at height ``z``: new position, height, closure, objects pushed."""
    x, y = px_to_metres(*g)
    u, v = metres_to_px(x + 0.5 * float(a[0]), y + 0.5 * float(a[1]))  # half the held pair's step
    # Lowered, the gripper hits objects (never walls: the workspace keeps it inside); lifted, nothing.
    world.grip_shape.filter = pymunk.ShapeFilter(categories=CAT_GRIPPER, mask=CAT_OBJECT if z < Z_CONTACT else 0)
    g, touched = world.step_frame((float(np.clip(u, WORK[0], WORK[2])), float(np.clip(v, WORK[1], WORK[3]))))
    h = float(a[3])  # arbitrary floats from user-provided actions round to a height command
    z = float(np.clip(z + Z_STEP[0 if h < 0.5 else (1 if h < 1.5 else 2)], Z_DOWN, Z_UP))
    closure = math.sqrt(min(max(float(a[2]), 0.0), 4.0) / 4.0)  # column 2: 0 open, 1 half, 4 closed
    return g, z, closure, touched


def simulate_states(seed: int, n_frames: int = N_FRAMES, actions: np.ndarray | None = None,
                    scene: Scene | None = None, policy_stream: int = 0) -> dict:
    """The physics of sequence ``seed`` (its scene, or ``scene``) without rendering, driven by ``actions [T, 4]``
    or else the policy on random stream ``policy_stream`` (0: the data's). Returns the ``scene``, ``actions``
    [T,4], ``endeffector`` [T,3], ``gripper`` [T,2] (u, v px), ``z`` and ``closure`` [T], ``object_pos`` [T,N,2],
    ``object_angle`` [T,N] and ``touched`` [T,N] (the object was pushed in the step that led to frame t)."""
    scene = make_scene(seed) if scene is None else scene
    if actions is not None:
        actions = np.asarray(actions, np.float32)
        if actions.shape != (n_frames, ACTION_COLUMNS):
            raise ValueError(f"actions must have shape ({n_frames}, {ACTION_COLUMNS}), got {actions.shape}")
    world, policy, n = _World(scene), _Policy(seed, policy_stream), len(scene.objects)
    s = {"scene": scene, "actions": np.zeros((n_frames, ACTION_COLUMNS), np.float32),
         "endeffector": np.zeros((n_frames, 3), np.float32), "gripper": np.zeros((n_frames, 2)),
         "z": np.zeros(n_frames), "closure": np.zeros(n_frames), "object_pos": np.zeros((n_frames, n, 2)),
         "object_angle": np.zeros((n_frames, n)), "touched": np.zeros((n_frames, n), bool)}
    g, z = scene.gripper, scene.z0
    for t in range(n_frames):
        s["gripper"][t], s["z"][t] = g, z
        for i, b in enumerate(world.bodies):
            s["object_pos"][t, i], s["object_angle"][t, i] = tuple(b.position), b.angle
        a = policy.act(t, g, [tuple(b.position) for b in world.bodies]) if actions is None else actions[t]
        s["actions"][t] = a
        if t + 1 < n_frames:
            g, z, s["closure"][t + 1], s["touched"][t + 1] = _step_gripper(world, g, z, a)
    s["endeffector"][:, :2] = np.stack(px_to_metres(s["gripper"][:, 0], s["gripper"][:, 1]), 1)
    s["endeffector"][:, 2] = s["z"]
    return s
