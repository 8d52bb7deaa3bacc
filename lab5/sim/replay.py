"""Replaying embedded scenes with other actions, each from its own start (its seed, from SYNTHETIC.json), so the
hidden masses and frictions stay the data's. Counterfactual futures: the scene's own actions up to the last
conditioning frame, then the same pushing policy on another random stream, which aims at the scene's objects:
about as many push an object as real futures do (``contact_fraction`` measures both)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lab5.data.dataset import frames_to_tensor
from lab5.data.layout import DatasetError
from lab5.sim.generate import MANIFEST, sequence_seed
from lab5.sim.render import render_states
from lab5.sim.world import ACTION_COLUMNS, simulate_states

#: The policy stream the counterfactual actions come from (0 is the data's own).
COUNTERFACTUAL_STREAM = 1


def embedded_seed(root: str | Path) -> int:
    """The seed an embedded data root was generated with (its SYNTHETIC.json)."""
    path = Path(root) / MANIFEST
    try:
        return int(json.loads(path.read_text())["seed"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: counterfactual actions need the embedded simulated data (its {MANIFEST} "
                           f"names the seed to re-simulate from): {type(exc).__name__}: {exc}") from None


def _as_tensors(states: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``[T,3,H,W]`` in [0, 1] and conditions ``[T, 4+3]`` (actions, positions) of simulated states."""
    frames = frames_to_tensor(render_states(states).transpose(0, 3, 1, 2))
    return frames, torch.from_numpy(np.concatenate([states["actions"], states["endeffector"]], 1))


def counterfactual_actions(seed: int, n_frames: int, n_past: int, own: np.ndarray | None = None) -> np.ndarray:
    """``[T, 4]``: the scene's own actions before frame n_past−1 (they make the conditioning frames),
    then the policy's on ``COUNTERFACTUAL_STREAM``. ``own``: the scene's own actions, if simulated already."""
    own = simulate_states(seed, n_frames)["actions"] if own is None else own
    other = simulate_states(seed, n_frames, policy_stream=COUNTERFACTUAL_STREAM)["actions"]
    return np.concatenate([own[:n_past - 1], other[n_past - 1:]])


def counterfactual_data(dataset: Dataset, root: str | Path, split: str, n_past: int, n_frames: int,
                        max_sequences: int = 0) -> dict[str, Any]:
    """The counterfactual futures of the first ``max_sequences`` (0: all) scenes: ``x [N,T,3,H,W]``, ``c [N,T,A+P]``
    (the new actions and the positions they lead to), ``factual_c`` (the data's) and ``contact_fraction`` (the share
    of scenes with an object pushed in frames 1..T−1, real and counterfactual). DatasetError if the first scene's
    frames do not come back (``root`` is not what this simulator wrote)."""
    base, T, scenes = embedded_seed(root), n_frames, []
    for i in range(min(max_sequences or len(dataset), len(dataset))):
        seed = sequence_seed(base, split, i)
        own = simulate_states(seed, T)
        if i == 0 and not torch.equal(_as_tensors(own)[0], dataset[0][0][:T]):
            raise DatasetError(f"{root}: simulating {split} sequence 0 of seed {base} does not reproduce its "
                               "frames (not the embedded set this simulator generates)")
        st = simulate_states(seed, T, actions=counterfactual_actions(seed, T, n_past, own["actions"]))
        scenes.append((*_as_tensors(st), bool(own["touched"][1:].any()), bool(st["touched"][1:].any())))
    x, c, real, new = zip(*scenes)
    return {"x": torch.stack(x), "c": torch.stack(c),
            "factual_c": torch.stack([dataset[i][1][:T] for i in range(len(x))]),
            "contact_fraction": {"real": float(np.mean(real)), "counterfactual": float(np.mean(new))}}


def resimulate(base_seed: int, split: str, index: int, actions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Scene ``index`` of an embedded split replayed with ``actions [T, 4]``: frames and conditions ``[T, 4+3]``."""
    return _as_tensors(simulate_states(sequence_seed(base_seed, split, index), len(actions), actions))


#: Simple drives for the "drive the robot" widget: the gripper's (x, y) step in metres per frame
#: pair (x down the image, y to the right), held for the whole sequence, lowered and open.
DIRECTIONS = {"up": (-0.05, 0.0), "down": (0.05, 0.0), "left": (0.0, -0.05), "right": (0.0, 0.05),
              "stay": (0.0, 0.0)}


def direction_actions(name: str, n_frames: int) -> np.ndarray:
    """``[T, 4]`` actions that drive the gripper one way (`DIRECTIONS`) for ``n_frames`` frames."""
    if name not in DIRECTIONS:
        raise ValueError(f"unknown direction '{name}' (known: {', '.join(DIRECTIONS)})")
    actions = np.zeros((n_frames, ACTION_COLUMNS), np.float32)
    actions[:, :2] = DIRECTIONS[name]
    return actions


def drive_choices(dataset: Dataset, index: int, n_frames: int, others: int = 3) -> dict[str, np.ndarray]:
    """Actions ``[n_frames, 4]`` for scene ``index``: its own, the next ``others`` scenes', each of `DIRECTIONS`."""
    ks = [(index + j) % len(dataset) for j in range(1, others + 1)]
    picks = {"its own actions": index, **{f"actions of test sequence {k}": k for k in ks}}
    own = {name: dataset[k][1][:n_frames, :ACTION_COLUMNS].numpy() for name, k in picks.items()}
    return {**own, **{f"drive {name}": direction_actions(name, n_frames) for name in DIRECTIONS}}
