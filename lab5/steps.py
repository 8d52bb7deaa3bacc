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


def exact_step(model: CVAE, x: torch.Tensor, c: torch.Tensor, beta: float,
               teacher_forcing: bool, n_past: int) -> StepResult:
    """The reference's maths, encoding each ground-truth frame once and reusing it."""
    T, B = x.shape[:2]
    hidden = model.init_hidden(B, x.device)
    encoded: dict[int, tuple[torch.Tensor, list[torch.Tensor]]] = {}

    def encode_truth(j: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if j not in encoded:
            encoded[j] = model.encoder(x[j])
        return encoded[j]

    mse = kld = x.new_zeros((), dtype=torch.float32)
    x_pred, skip = x[0], None
    for i in range(1, T):
        if teacher_forcing or i - 1 < n_past:
            h, frame_skip = encode_truth(i - 1)
        else:
            h, frame_skip = model.encoder(x_pred)
        if _uses_skip_of(model, i, n_past):
            skip = frame_skip
        z, mu, logvar = model.posterior(encode_truth(i)[0], hidden)
        _, mu_p, logvar_p = model.prior(h, hidden) if model.prior_net is not None else (None, None, None)
        x_pred = model.predict(h, z, c[i - 1], skip, hidden)
        mse = mse + frame_mse(x_pred, x[i])
        kld = kld + _kl(model, mu, logvar, mu_p, logvar_p)
    return StepResult(mse + beta * kld, mse, kld)


def fast_step(model: CVAE, x: torch.Tensor, c: torch.Tensor, beta: float,
              teacher_forcing: bool, n_past: int) -> StepResult:
    """Encoder and decoder batched over time under teacher forcing; exact_step otherwise."""
    if not teacher_forcing:
        return exact_step(model, x, c, beta, teacher_forcing, n_past)
    T, B = x.shape[:2]
    h_all, skips_all = model.encoder(x.flatten(0, 1))
    h_all = h_all.view(T, B, -1)
    hidden = model.init_hidden(B, x.device)
    codes, kld = [], x.new_zeros((), dtype=torch.float32)
    for i in range(1, T):
        z, mu, logvar = model.posterior(h_all[i], hidden)
        _, mu_p, logvar_p = model.prior(h_all[i - 1], hidden) if model.prior_net is not None else (None, None, None)
        codes.append(model.predict_code(h_all[i - 1], z, c[i - 1], hidden))
        kld = kld + _kl(model, mu, logvar, mu_p, logvar_p)
    # Frame whose skips feed the prediction of frame i (the last conditioning frame, or i-1).
    src = torch.tensor([i - 1 if _uses_skip_of(model, i, n_past) else n_past - 1 for i in range(1, T)],
                       device=x.device)
    skips = [s.view(T, B, *s.shape[1:])[src].flatten(0, 1) for s in skips_all]
    x_hat = model.decoder(torch.cat(codes, 0), skips).view(T - 1, B, *x.shape[2:])
    # Σ_t of per-frame means equals (T−1) × the mean over all predicted frames.
    mse = frame_mse(x_hat, x[1:]) * (T - 1)
    return StepResult(mse + beta * kld, mse, kld)


STEPS = {"reference": reference_step, "exact": exact_step, "fast": fast_step}


def autocast_context(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast when ``cfg.bf16`` (CPU with AVX-512 BF16, or CUDA); a no-op otherwise."""
    if not cfg.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train_forward(model: CVAE, x: torch.Tensor, c: torch.Tensor, beta: float,
                  teacher_forcing: bool, cfg: Config) -> StepResult:
    """Batch-major inputs ``x [B,T,3,H,W]``, ``c [B,T,C]`` through the path ``cfg.step`` selects."""
    x, c = x.transpose(0, 1), c.transpose(0, 1)
    if cfg.channels_last:
        T, B = x.shape[:2]
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(T, B, *x.shape[2:])
    with autocast_context(cfg, x.device):
        return STEPS[cfg.step](model, x, c, beta, teacher_forcing, cfg.n_past)
