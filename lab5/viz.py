"""Figures and animations: plot helpers return a ``Figure``; the caller decides where to save it."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image

from lab5.config import Config
from lab5.evaluate import generate


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``[..., 3, H, W]`` floats in [0, 1] -> ``[..., H, W, 3]`` uint8."""
    arr = frames.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return arr.movedim(-3, -1).cpu().numpy()


@torch.no_grad()
def predict_samples(model: torch.nn.Module, x: torch.Tensor, c: torch.Tensor, cfg: Config,
                    samples: int = 1, seed: int = 0) -> torch.Tensor:
    """``[S, B, T, 3, H, W]``: each sample is the conditioning frames followed by predictions."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    out = []
    for _ in range(samples):
        pred = generate(model, x, c, cfg.n_past, cfg.n_future, gen)
        out.append(torch.cat([x[:, :cfg.n_past], pred], 1))
    return torch.stack(out)


def prediction_gif(model: torch.nn.Module, dataset: torch.utils.data.Dataset, cfg: Config,
                   out: str | Path, indices: Iterable[int] = range(4), samples: int = 3,
                   seed: int = 0, device: str | torch.device = "cpu", fps: int = 4) -> Path:
    """A GIF with one row per sequence: ground truth, then ``samples`` predictions, side by side.

    Predicted frames get a red border so they are told apart from conditioning frames.
    """
    idx = [i for i in indices if i < len(dataset)]
    x = torch.stack([dataset[i][0][:cfg.n_frames] for i in idx]).to(device)
    c = torch.stack([dataset[i][1][:cfg.n_frames] for i in idx]).to(device)
    pred = to_uint8(predict_samples(model, x, c, cfg, samples, seed))   # [S,B,T,H,W,3]
    truth = to_uint8(x)                                                  # [B,T,H,W,3]
    for t in range(cfg.n_past, cfg.n_frames):  # red border on predicted frames
        for edge in (np.s_[:, :, t, :2], np.s_[:, :, t, -2:], np.s_[:, :, t, :, :2], np.s_[:, :, t, :, -2:]):
            pred[edge] = (220, 30, 30)
    frames = []
    for t in range(cfg.n_frames):
        rows = [np.concatenate([truth[b, t]] + [pred[s, b, t] for s in range(samples)], 1)
                for b in range(len(idx))]
        frames.append(Image.fromarray(np.concatenate(rows, 0)).resize(
            (64 * (samples + 1) * 2, 64 * len(idx) * 2), Image.NEAREST))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=1000 // fps, loop=0)
    return out
