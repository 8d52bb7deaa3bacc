"""The embedded default dataset: a small physically simulated robot-pushing world written in the
lab layout (``world``: scenes, physics, policy; ``render``: frames; ``generate``: the dataset)."""

from lab5.data.layout import SPLITS
from lab5.sim.generate import embedded_root, make_synthetic, sequence_seed, simulate_sequence, traj_dir
from lab5.sim.render import render_states
from lab5.sim.world import ACTION_CLIP, FLOOR, Z_DOWN, Z_UP, make_scene, simulate_states

__all__ = ["SPLITS", "embedded_root", "make_synthetic", "sequence_seed", "simulate_sequence", "traj_dir",
           "render_states", "ACTION_CLIP", "FLOOR", "Z_DOWN", "Z_UP", "make_scene", "simulate_states"]
