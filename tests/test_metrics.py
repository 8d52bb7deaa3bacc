"""lab5's PSNR and SSIM against the grader's formulas (``finn_eval_seq`` in SVG's utils.py), computed
here independently with scipy: per colour channel, then averaged over the channels; SSIM with an
11x11 Gaussian window of sigma 1.5, a 'valid' border and data range 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import signal

from lab5.data.dataset import BairDataset
from lab5.metrics import copy_last, psnr_per_frame, ssim_per_frame

BAIR_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "bair_real"


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    offsets = np.arange(size) - (size - 1) / 2
    g = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


def grader_psnr(truth: np.ndarray, pred: np.ndarray) -> float:
    """One frame [3, H, W] in [0, 1]: 10·log10(1/MSE) of each channel, then their mean."""
    return float(np.mean([10 * np.log10(1 / np.mean((t - p) ** 2)) for t, p in zip(truth, pred)]))


def grader_ssim(truth: np.ndarray, pred: np.ndarray) -> float:
    """One frame [3, H, W]: the SSIM map of each channel over the 'valid' window positions, its mean,
    then the mean over the channels."""
    w, c1, c2 = gaussian_window(), 0.01**2, 0.03**2
    values = []
    for a, b in zip(truth.astype(np.float64), pred.astype(np.float64)):
        filt = lambda img: signal.fftconvolve(img, w, mode="valid")  # noqa: E731
        mu_a, mu_b = filt(a), filt(b)
        var_a, var_b, cov = filt(a * a) - mu_a**2, filt(b * b) - mu_b**2, filt(a * b) - mu_a * mu_b
        ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        values.append(ssim_map.mean())
    return float(np.mean(values))


def grader(pred: torch.Tensor, truth: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    p, t = pred.double().numpy(), truth.double().numpy()
    shape = p.shape[:2]
    psnr = np.array([[grader_psnr(t[b, k], p[b, k]) for k in range(shape[1])] for b in range(shape[0])])
    ssim = np.array([[grader_ssim(t[b, k], p[b, k]) for k in range(shape[1])] for b in range(shape[0])])
    return psnr, ssim


def test_metrics_match_the_grader_on_random_frames() -> None:
    gen = torch.Generator().manual_seed(0)
    truth = torch.rand(2, 3, 3, 64, 64, generator=gen)
    # Channels disturbed by different amounts, so per-channel averaging differs from pooling.
    noise = torch.randn(2, 3, 3, 64, 64, generator=gen) * torch.tensor([0.02, 0.1, 0.3]).view(1, 1, 3, 1, 1)
    pred = (truth + noise).clamp(0, 1)
    psnr, ssim = grader(pred, truth)
    np.testing.assert_allclose(psnr_per_frame(pred, truth).numpy(), psnr, atol=1e-4)
    np.testing.assert_allclose(ssim_per_frame(pred, truth), ssim, atol=1e-6)
    pooled = 10 * torch.log10(1 / ((pred - truth) ** 2).flatten(2).mean(2))
    assert (pooled - psnr_per_frame(pred, truth)).abs().min() > 0.5  # the test can tell the two apart


@pytest.mark.skipif(not BAIR_REAL.is_dir(), reason="the real BAIR sequence is not beside this checkout")
def test_evaluate_scores_copy_last_on_the_real_bair_sequence_as_the_grader(tmp_path: Path, lab5_cli) -> None:
    x = BairDataset(BAIR_REAL, "test", n_frames=12)[0][0][None]
    psnr, ssim = grader(*copy_last(x, 2, 10))
    assert psnr.mean() == pytest.approx(24.0432, abs=1e-4) and ssim.mean() == pytest.approx(0.93979, abs=1e-5)
    out = tmp_path / "bair.json"
    r = lab5_cli("evaluate", "--data", BAIR_REAL, "--json", out, "--no-progress", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    results = json.loads(out.read_text())
    assert results["protocol"]["name"] == "lab" and "per colour channel" in results["protocol"]["psnr"]
    assert results["copy_last"]["psnr"] == pytest.approx(psnr.mean(), abs=1e-4)
    assert results["copy_last"]["ssim"] == pytest.approx(ssim.mean(), abs=1e-4)
    assert results["copy_last"]["psnr_per_frame"] == pytest.approx(psnr.mean(0).tolist(), abs=1e-4)
