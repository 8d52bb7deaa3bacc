"""Counterfactual actions on the embedded data: each test scene is re-simulated from its own initial
state with another sequence's actions, and the model, given those actions (and the end-effector
positions they lead to, when its condition uses them), is scored against the re-simulated truth.
A model that ignores the actions stays near copy-last-frame there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lab5.data.dataset import frames_to_tensor
from lab5.data.layout import DatasetError
from lab5.evaluate import Protocol, ShuffledConditions, copy_last, generate, get_protocol, psnr_per_frame, ssim_per_frame
from lab5.models.cvae import CVAE
from lab5.sim.generate import MANIFEST, sequence_seed, simulate_sequence


def embedded_seed(root: str | Path) -> int:
    """The seed an embedded data root was generated with (its SYNTHETIC.json)."""
    path = Path(root) / MANIFEST
    try:
        return int(json.loads(path.read_text())["seed"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: counterfactual actions need the embedded simulated data (its {MANIFEST} "
                           f"names the seed to re-simulate from): {type(exc).__name__}: {exc}") from None


def counterfactual_data(dataset: Dataset, root: str | Path, split: str, protocol: Protocol, seed: int = 0,
                        max_sequences: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``[N,T,3,H,W]`` and conditions ``[N,T,A+P]`` of each scene re-simulated with the actions
    of another sequence (the derangement ``ShuffledConditions`` uses). Simulating the first scene must
    give back its frames: otherwise ``root`` is not what this simulator wrote."""
    base, T = embedded_seed(root), protocol.n_frames
    n = min(max_sequences or len(dataset), len(dataset))
    source = ShuffledConditions(dataset, seed).source
    own, own_actions, _ = simulate_sequence(sequence_seed(base, split, 0), T)
    width = own_actions.shape[1]  # the simulator's action columns; its positions follow in the data
    if not torch.equal(frames_to_tensor(own.transpose(0, 3, 1, 2)), dataset[0][0][:T]):
        raise DatasetError(f"{root}: simulating {split} sequence 0 of seed {base} does not reproduce its frames "
                           "(not the embedded set this simulator generates)")
    xs, cs = [], []
    for i in range(n):
        actions = dataset[int(source[i])][1][:T, :width].numpy()
        frames, actions, positions = simulate_sequence(sequence_seed(base, split, i), T, actions=actions)
        xs.append(frames_to_tensor(frames.transpose(0, 3, 1, 2)))
        cs.append(torch.from_numpy(np.concatenate([actions, positions], 1)))
    return torch.stack(xs), torch.stack(cs)


@torch.no_grad()
def counterfactual(model: CVAE, dataset: Dataset, root: str | Path, split: str = "test",
                   protocol: str | Protocol = "lab", seed: int = 0, device: str | torch.device = "cpu",
                   max_sequences: int = 0) -> dict[str, Any]:
    """The model's PSNR and SSIM on the counterfactual truth (one prior sample), and copy-last-frame's."""
    p = get_protocol(protocol)
    x, c = counterfactual_data(dataset, root, split, p, seed, max_sequences)
    model.eval()
    pred = generate(model, x.to(device), c.to(device), p.n_past, p.n_future,
                    torch.Generator(device=device).manual_seed(seed)).cpu()
    copy, truth = copy_last(x, p.n_past, p.n_future)
    return {"psnr": float(psnr_per_frame(pred, truth).mean()), "ssim": float(ssim_per_frame(pred, truth).mean()),
            "copy_last": {"psnr": float(psnr_per_frame(copy, truth).mean()),
                          "ssim": float(ssim_per_frame(copy, truth).mean())},
            "sequences": len(x), "what": "each test scene re-simulated from its own start with another "
                                         "sequence's actions; the model given those actions (and positions)"}
