"""Training forward passes: the per-frame reference, the exact encode-once path, the fast path.

All three compute the per-sequence loss  Σ_t MSE(x̂_t, x_t) + β·Σ_t KL(q_t ‖ p_t)
over frames t = 1..T−1 of a time-major batch ``x [T,B,3,H,W]``, ``c [T,B,C]``.

* ``reference_step`` is the lab's loop (and SVG-LP's): frame by frame, encoding each
  frame twice per step (as the previous frame and as the posterior's target).
* ``exact_step`` is the same maths with each ground-truth frame encoded once and reused.
  Loss and gradients equal the reference's up to float rounding; BatchNorm running
  statistics differ because each frame passes the encoder once instead of twice.
* ``fast_step``, under teacher forcing, runs the encoder once over all T·B frames and
  the decoder once over all (T−1)·B predictions (BatchNorm then normalises over time
  too: different maths, same quality). Without teacher forcing predictions are fed
  back, so it falls back to ``exact_step``. bf16 autocast and channels_last are
  applied by ``train_forward`` for every path.

Inputs of conditioning frames (index < n_past) are always ground truth; teacher forcing
decides whether later inputs are ground truth or the model's own previous prediction.
Skips come from the last conditioning frame unless ``last_frame_skip``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from lab5.config import Config
from lab5.losses import frame_mse, kl_gaussian
from lab5.models.cvae import CVAE
from lab5.models.encoders import per_frame_batchnorm


@dataclass
class StepResult:
    loss: torch.Tensor
    mse: torch.Tensor
    kld: torch.Tensor


def _kl(model: CVAE, mu: torch.Tensor, logvar: torch.Tensor, mu_p: torch.Tensor,
        logvar_p: torch.Tensor) -> torch.Tensor:
    if model.z_dim == 0:
        return mu.new_zeros((), dtype=torch.float32)
    if model.prior_net is None:
        return kl_gaussian(mu, logvar)
    return kl_gaussian(mu, logvar, mu_p, logvar_p)


def _uses_skip_of(model: CVAE, i: int, n_past: int) -> bool:
    """Whether the input of step i (frame i−1) provides the skip features."""
    return model.last_frame_skip or i <= n_past


def reference_step(model: CVAE, x: torch.Tensor, c: torch.Tensor, beta: float,
                   teacher_forcing: bool, n_past: int) -> StepResult:
    """The lab's training loop, one frame at a time, two encoder calls per step."""
    T, B = x.shape[:2]
    hidden = model.init_hidden(B, x.device)
    mse = kld = x.new_zeros((), dtype=torch.float32)
    x_pred, skip = x[0], None
    for i in range(1, T):
        x_in = x[i - 1] if teacher_forcing or i - 1 < n_past else x_pred
        h, frame_skip = model.encoder(x_in)
        if _uses_skip_of(model, i, n_past):
            skip = frame_skip
        h_target = model.encoder(x[i])[0]
        z, mu, logvar = model.posterior(h_target, hidden)
        _, mu_p, logvar_p = model.prior(h, hidden) if model.prior_net is not None else (None, None, None)
        x_pred = model.predict(h, z, c[i - 1], skip, hidden)
        mse = mse + frame_mse(x_pred, x[i])
        kld = kld + _kl(model, mu, logvar, mu_p, logvar_p)
    return StepResult(mse + beta * kld, mse, kld)


def _sample_major(x: torch.Tensor) -> torch.Tensor:
    """Time-major ``[T,B,...]`` -> ``[B*T,...]`` with row b*T + t (a view when x came batch-major)."""
    return x.transpose(0, 1).reshape(-1, *x.shape[2:])


def _skip_sources(model: CVAE, T: int, n_past: int) -> list[int]:
    """For each predicted frame i = 1..T−1, the input frame whose skips its decoder uses."""
    return [i - 1 if _uses_skip_of(model, i, n_past) else n_past - 1 for i in range(1, T)]


def _batched_step(model: CVAE, x: torch.Tensor, c: torch.Tensor, beta: float,
                  teacher_forcing: bool, n_past: int, per_frame_bn: bool) -> StepResult:
    """Encoder once over all B·T ground-truth frames; under teacher forcing the decoder once
    over all B·(T−1) predictions, otherwise per frame with the predictions fed back.

    Frames are laid out sample-major (row b·T + t), which lets ``per_frame_batchnorm``
    normalise each frame batch separately as the per-frame loop does (``per_frame_bn``).
    The LSTMs stay sequential over t, drawing the posterior (and learned prior) noise in
    the reference's order.
    """
    T, B = x.shape[:2]
    bn_frames = T if per_frame_bn else 1
    with per_frame_batchnorm(model.encoder, bn_frames):
        h_all, skips_all = model.encoder(_sample_major(x))
    h_all = h_all.view(B, T, -1)
    skips_all = [s.view(B, T, *s.shape[1:]) for s in skips_all]
    hidden = model.init_hidden(B, x.device)
    mse = kld = x.new_zeros((), dtype=torch.float32)
    codes, x_pred, skip = [], x[0], None
    for i in range(1, T):
        if teacher_forcing or i - 1 < n_past:
            h, frame_skip = h_all[:, i - 1], [s[:, i - 1] for s in skips_all]
        else:  # the previous prediction, fed back: its own (per-frame) encoder call
            h, frame_skip = model.encoder(x_pred)
        if _uses_skip_of(model, i, n_past):
            skip = frame_skip
        z, mu, logvar = model.posterior(h_all[:, i], hidden)
        _, mu_p, logvar_p = model.prior(h, hidden) if model.prior_net is not None else (None, None, None)
        kld = kld + _kl(model, mu, logvar, mu_p, logvar_p)
        if teacher_forcing:  # decoded below, all frames at once
            codes.append(model.predict_code(h, z, c[i - 1], hidden))
        else:
            x_pred = model.predict(h, z, c[i - 1], skip, hidden)
            mse = mse + frame_mse(x_pred, x[i])
    if teacher_forcing:
        src = torch.tensor(_skip_sources(model, T, n_past), device=x.device)
        skips = [s[:, src].flatten(0, 1) for s in skips_all]
        with per_frame_batchnorm(model.decoder, T - 1 if per_frame_bn else 1):
            x_hat = model.decoder(torch.stack(codes, 1).flatten(0, 1), skips)
        # Σ_t of per-frame means = (T−1) × the mean over all predicted frames.
        mse = frame_mse(x_hat.view(B, T - 1, *x.shape[2:]), x.transpose(0, 1)[:, 1:]) * (T - 1)
    return StepResult(mse + beta * kld, mse, kld)


def exact_step(model: CVAE, x: torch.Tensor, c: torch.Tensor, beta: float,
               teacher_forcing: bool, n_past: int) -> StepResult:
    """The reference's maths, each ground-truth frame encoded once, batched over time.

    BatchNorm keeps per-frame statistics (``per_frame_batchnorm``), so loss and gradients
    equal the reference's up to float rounding; only BatchNorm running statistics differ
    (one update with frame-averaged statistics instead of one per encoder call).
    """
    return _batched_step(model, x, c, beta, teacher_forcing, n_past, per_frame_bn=True)


def fast_step(model: CVAE, x: torch.Tensor, c: torch.Tensor, beta: float,
              teacher_forcing: bool, n_past: int) -> StepResult:
    """Like ``exact_step`` but BatchNorm normalises over all frames at once (different maths).

    Without teacher forcing it is ``exact_step``: predictions are fed back frame by frame.
    """
    return _batched_step(model, x, c, beta, teacher_forcing, n_past, per_frame_bn=not teacher_forcing)


STEPS = {"reference": reference_step, "exact": exact_step, "fast": fast_step}


def autocast_context(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast when ``cfg.bf16`` (CPU with AVX-512 BF16, or CUDA); a no-op otherwise."""
    if not cfg.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train_forward(model: CVAE, x: torch.Tensor, c: torch.Tensor, beta: float,
                  teacher_forcing: bool, cfg: Config) -> StepResult:
    """Batch-major inputs ``x [B,T,3,H,W]``, ``c [B,T,C]`` through the path ``cfg.step`` selects."""
    if cfg.channels_last:  # each frame NHWC; rows stay batch-major so _sample_major is a view
        B, T = x.shape[:2]
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(B, T, *x.shape[2:])
    x, c = x.transpose(0, 1), c.transpose(0, 1)
    with autocast_context(cfg, x.device):
        return STEPS[cfg.step](model, x, c, beta, teacher_forcing, cfg.n_past)
