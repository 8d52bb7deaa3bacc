"""The grader's metrics on frame tensors ``[B,T,3,H,W]`` with pixels in [0, 1]: PSNR and SSIM per frame as
``finn_eval_seq`` of SVG's utils.py computes them (after Finn et al. 2016), PSNR over the pixels that
change, and the copy-last-frame baseline every prediction has to beat."""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity

#: A pixel of a predicted frame has changed when it differs from the last conditioning frame by more
#: than this in some colour channel (pixels in [0, 1]).
CHANGED_THRESHOLD = 0.1


def psnr_per_frame(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """PSNR of each frame as the grader computes it: 10·log10(1/MSE) per colour channel (pixels in
    [0, 1]; an exact channel counts as 100 dB), averaged over the channels. ``[B,T,3,H,W]`` -> ``[B,T]``."""
    mse = ((pred.double() - truth.double()) ** 2).flatten(3).mean(3)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean(2).float()


def ssim_per_frame(pred: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """SSIM of each frame as the grader computes it (``finn_ssim``): per colour channel, an 11x11 Gaussian window
    of sigma 1.5 where it fits, data range 1; averaged over the channels. ``[B,T,3,H,W]`` -> ``[B,T]``."""
    p, t = (a.double().permute(0, 1, 3, 4, 2).cpu().numpy() for a in (pred, truth))
    out = np.empty(p.shape[:2])
    for b, k in np.ndindex(out.shape):
        out[b, k] = structural_similarity(t[b, k], p[b, k], channel_axis=2, data_range=1.0,
                                          gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    return out


def changed_mask(last: torch.Tensor, truth: torch.Tensor, threshold: float = CHANGED_THRESHOLD) -> torch.Tensor:
    """``[B,T,H,W]``: where ``truth [B,T,3,H,W]`` differs from ``last [B,3,H,W]`` by over ``threshold`` in a channel."""
    return ((truth - last[:, None]).abs().amax(2) > threshold)


def changed_psnr_per_frame(pred: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR of each frame over the pixels of ``mask [B,T,H,W]`` (NaN if none). ``[B,T,3,H,W]`` -> ``[B,T]``."""
    m = mask[:, :, None].double()
    err = ((pred.double() - truth.double()) ** 2 * m).sum((2, 3, 4))
    count = m.sum((2, 3, 4)) * pred.shape[2]
    mse = err / count.clamp_min(1)
    psnr = 10 * torch.log10(1.0 / mse.clamp_min(1e-10))
    return torch.where(count > 0, psnr, torch.full_like(psnr, float("nan"))).float()


def copy_last(x: torch.Tensor, n_past: int, n_future: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The copy-last-frame baseline of ``x [B,T,3,H,W]``: the last conditioning frame repeated, and the true
    frames it stands for, each ``[B, n_future, 3, H, W]``."""
    truth = x[:, n_past:n_past + n_future]
    return x[:, n_past - 1:n_past].expand_as(truth), truth


def copy_last_psnr(x: torch.Tensor, n_past: int = 2, n_future: int | None = None) -> torch.Tensor:
    """``[B, n_future]``: the PSNR of each frame the copy-last-frame baseline predicts for ``x [B,T,3,H,W]``."""
    return psnr_per_frame(*copy_last(x, n_past, n_future or x.shape[1] - n_past))
