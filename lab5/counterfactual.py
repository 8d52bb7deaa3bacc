"""Counterfactual actions on the embedded data: each test scene is re-simulated from its own start,
with its own actions up to the last conditioning frame (so the conditioning frames are the same) and
from there on with the actions of the same random pushing policy on another random stream. The
policy aims at this scene's objects, so about as many counterfactual futures push an object as real
ones do (``contact_fraction`` measures both). The model, given the new actions (and the positions
they lead to, when its condition reads them), is scored against the re-simulated truth, beside two
baselines on that truth: copy-last-frame, and the same model given the factual conditions, the
prediction of a model that ignores the new actions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lab5.data.dataset import frames_to_tensor
from lab5.data.layout import DatasetError
from lab5.evaluate import Protocol, changed_scores, evaluate_model, generate, get_protocol
from lab5.metrics import copy_last, psnr_per_frame, ssim_per_frame
from lab5.models.cvae import CVAE
from lab5.sim.generate import MANIFEST, sequence_seed, simulate_sequence
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


def counterfactual_actions(seed: int, n_frames: int, n_past: int) -> np.ndarray:
    """``[T, 4]``: the scene's own actions before frame n_past−1 (they make the conditioning frames),
    then the policy's on ``COUNTERFACTUAL_STREAM``."""
    own = simulate_states(seed, n_frames)["actions"]
    other = simulate_states(seed, n_frames, policy_stream=COUNTERFACTUAL_STREAM)["actions"]
    return np.concatenate([own[:n_past - 1], other[n_past - 1:]])


def counterfactual_data(dataset: Dataset, root: str | Path, split: str, protocol: Protocol,
                        max_sequences: int = 0) -> dict[str, Any]:
    """The counterfactual futures of the first ``max_sequences`` (0: all) scenes: ``x [N,T,3,H,W]`` and
    ``c [N,T,A+P]`` (the new actions and the positions they lead to), ``factual_c`` (the data's
    conditions) and ``contact_fraction`` (the share of scenes in which an object is pushed in frames
    1..T−1, real and counterfactual). Simulating the first scene must give back its frames: otherwise
    ``root`` is not what this simulator wrote."""
    base, T = embedded_seed(root), protocol.n_frames
    n = min(max_sequences or len(dataset), len(dataset))
    own, _, _ = simulate_sequence(sequence_seed(base, split, 0), T)
    if not torch.equal(frames_to_tensor(own.transpose(0, 3, 1, 2)), dataset[0][0][:T]):
        raise DatasetError(f"{root}: simulating {split} sequence 0 of seed {base} does not reproduce its frames "
                           "(not the embedded set this simulator generates)")
    xs, cs, real, new = [], [], [], []
    for i in range(n):
        seed = sequence_seed(base, split, i)
        st = simulate_states(seed, T, actions=counterfactual_actions(seed, T, protocol.n_past))
        xs.append(frames_to_tensor(render_states(st).transpose(0, 3, 1, 2)))
        cs.append(torch.from_numpy(np.concatenate([st["actions"], st["endeffector"]], 1)))
        new.append(bool(st["touched"][1:].any()))
        real.append(bool(simulate_states(seed, T)["touched"][1:].any()))
    return {"x": torch.stack(xs), "c": torch.stack(cs),
            "factual_c": torch.stack([dataset[i][1][:T] for i in range(n)]),
            "contact_fraction": {"real": float(np.mean(real)), "counterfactual": float(np.mean(new))}}


def resimulate(base_seed: int, split: str, index: int, actions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Scene ``index`` of an embedded split replayed from its own start with ``actions [T, 4]``: frames
    ``[T,3,H,W]`` in [0, 1] and conditions ``[T, 4+3]`` (those actions, the positions they lead to)."""
    frames, actions, positions = simulate_sequence(sequence_seed(base_seed, split, index), len(actions),
                                                   actions=actions)
    return frames_to_tensor(frames.transpose(0, 3, 1, 2)), torch.from_numpy(np.concatenate([actions, positions], 1))


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
    """Action sequences to drive scene ``index`` with: its own, those of the next ``others`` test
    sequences, and each of `DIRECTIONS`; ``[n_frames, 4]`` each."""
    own = {"its own actions": dataset[index][1][:n_frames, :ACTION_COLUMNS].numpy()}
    for j in range(1, others + 1):
        k = (index + j) % len(dataset)
        own[f"actions of test sequence {k}"] = dataset[k][1][:n_frames, :ACTION_COLUMNS].numpy()
    return {**own, **{f"drive {name}": direction_actions(name, n_frames) for name in DIRECTIONS}}


@torch.no_grad()
def drive(model: CVAE, root: str | Path, split: str, index: int, actions: np.ndarray,
          n_past: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scene ``index`` driven by ``actions [T, 4]``: the simulator's truth ``[T,3,H,W]`` and the model's
    prediction from its first ``n_past`` frames given those actions (and positions), one prior sample
    (conditioning frames included, as ``viz.predict_samples``)."""
    x, c = resimulate(embedded_seed(root), split, index, actions)
    device = next(model.parameters()).device
    model.eval()
    pred = generate(model, x[None].to(device), c[None].to(device), n_past, len(x) - n_past,
                    torch.Generator(device=device).manual_seed(seed))[0].cpu()
    return x, torch.cat([x[:n_past], pred])


@torch.no_grad()
def counterfactual(model: CVAE, dataset: Dataset, root: str | Path, split: str = "test",
                   protocol: str | Protocol = "lab", seed: int = 0, device: str | torch.device = "cpu",
                   max_sequences: int = 0) -> dict[str, Any]:
    """On the counterfactual truth: the model given the new actions (one prior sample), the same model
    given the factual conditions (same noise), and copy-last-frame; whole-frame PSNR and SSIM and
    changed-pixel PSNR (``evaluate.changed_scores``) for each."""
    p = get_protocol(protocol)
    data = counterfactual_data(dataset, root, split, p, max_sequences)
    x = data["x"]
    model.eval()
    preds = {name: generate(model, x.to(device), c.to(device), p.n_past, p.n_future,
                            torch.Generator(device=device).manual_seed(seed)).cpu()
             for name, c in (("model", data["c"]), ("factual_conditions", data["factual_c"]))}
    preds["copy_last"], truth = copy_last(x, p.n_past, p.n_future)
    changed = changed_scores(x[:, p.n_past - 1], truth, preds)

    def scores(name: str, ssim: bool = True) -> dict[str, float]:
        out = {"psnr": float(psnr_per_frame(preds[name], truth).mean()),
               "changed_psnr": changed[name]["psnr"]["mean"]}
        return {**out, "ssim": float(ssim_per_frame(preds[name], truth).mean())} if ssim else out

    return {**scores("model"), "copy_last": scores("copy_last"),
            "factual_conditions": scores("factual_conditions", ssim=False),
            "changed_fraction": changed["fraction"], "contact_fraction": data["contact_fraction"],
            "sequences": len(x),
            "what": "each test scene re-simulated from its own start, its own actions up to the last conditioning "
                    "frame and then another push of the same random policy; the model given those actions (and "
                    "positions); factual_conditions: the same model given the data's conditions (it ignores the "
                    "new actions)"}


def evaluate_with_counterfactual(model: CVAE, dataset: Dataset, root: str | Path, samples: int,
                                 max_sequences: int = 0, device: str | torch.device = "cpu") -> dict[str, Any]:
    """``evaluate_model`` under the lab protocol (seed 0), plus ``counterfactual`` for a model that reads
    actions when ``root`` is embedded data the simulator can replay (it has a ``SYNTHETIC.json``)."""
    results = evaluate_model(model, dataset, "lab", samples=samples, seed=0, device=device,
                             max_sequences=max_sequences, progress=False)
    if model.cfg.condition != "none" and (Path(root) / MANIFEST).is_file():
        results["counterfactual"] = counterfactual(model, dataset, root, "test", "lab", 0, device, max_sequences)
    return results
