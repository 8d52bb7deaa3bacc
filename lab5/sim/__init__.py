"""The embedded default dataset: a small physically simulated robot-pushing world written in the
lab layout (``world``: scenes, physics, policy; ``render``: frames; ``generate``: the dataset)."""

from lab5.data.layout import SPLITS
from lab5.sim.generate import (DEFAULTS, EVAL_SEED, TRAIN_SEED, copy_last_psnr, embedded_root, make_synthetic,
                               sequence_seed, simulate_sequence, traj_dir)
from lab5.sim.render import render_states
from lab5.sim.world import (ACTION_CLIP, FLOOR, Z_DOWN, Z_UP, ObjectSpec, Scene, make_scene, metres_to_px,
                            px_to_metres, simulate_states)

__all__ = ["SPLITS", "DEFAULTS", "EVAL_SEED", "TRAIN_SEED", "copy_last_psnr", "embedded_root",
           "make_synthetic", "sequence_seed", "simulate_sequence", "traj_dir", "render_states", "ACTION_CLIP",
           "FLOOR", "Z_DOWN", "Z_UP", "ObjectSpec", "Scene", "make_scene", "metres_to_px", "px_to_metres",
           "simulate_states"]
