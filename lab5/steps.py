"""The training step's loop over frames, three ways: reference, exact and fast.

Each computes the per-sequence loss  Σ_t MSE(x̂_t, x_t) + β·Σ_t KL(q_t ‖ p_t)  over frames
t = 1..T−1 of a time-major batch ``x [T,B,3,H,W]``, ``c [T,B,C]``, and returns ``Loss``.
``CVAE.forward`` runs the one ``cfg.step`` names.

* ``reference_step`` is the lab's loop (and SVG's): frame by frame, each frame encoded twice
  per step (as the previous frame and as the posterior's target).
* ``exact_step`` is the same maths with each ground-truth frame encoded once, all frames in
  one encoder call and, under teacher forcing, all predictions in one decoder call, with
  per-frame BatchNorm statistics (``per_frame_batchnorm``): loss and gradients equal the
  reference's up to float rounding. (BatchNorm running statistics differ a little: the
  reference updates them twice for frames it encodes twice.)
* ``fast_step`` is ``exact_step`` with BatchNorm over all T·B frames at once under teacher
  forcing: other maths, same quality (``benchmarks/fast_quality.py``).

Teacher forcing decides whether an input is the ground truth or the model's previous prediction;
the first input (``tf_style='listing'``, the report's) or all conditioning inputs
(``'conditioned'``) are always ground truth. The LSTMs run
frame by frame in every path, drawing the posterior's (and learned prior's) noise in the
same order, so the three paths see the same random numbers.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from torch import nn

from lab5.losses import frame_mse, kl_gaussian
from lab5.models.encoders import per_frame_batchnorm

# Above this many frames in one encoder call (B·T), the batched paths recompute the encoder's
# two highest-resolution stages in backward instead of keeping their activations: those are
# back-propagated last, so they would sit in memory through the whole backward pass.
RECOMPUTE_ABOVE_FRAMES = 256


class Loss(NamedTuple):
    loss: torch.Tensor
    mse: torch.Tensor
    kld: torch.Tensor


def kl_term(model: nn.Module, posterior: tuple, prior: tuple | None) -> torch.Tensor:
    """KL(q ‖ p) of one frame: against the learned prior when there is one, else N(0, I)."""
    _, mu, logvar = posterior
    if model.z_dim == 0:
        return mu.new_zeros((), dtype=torch.float32)
    if prior is None:
        return kl_gaussian(mu, logvar)
    return kl_gaussian(mu, logvar, prior[1], prior[2])


def reference_step(model: nn.Module, x: torch.Tensor, c: torch.Tensor, beta: float,
                   teacher_forcing: bool, n_past: int) -> Loss:
    """The lab's training loop, one frame at a time, two encoder calls per step."""
    T, B = x.shape[:2]
    c = model.visible_condition(c, n_past)
    hidden = model.init_hidden(B, x.device)
    mse = kld = x.new_zeros((), dtype=torch.float32)
    x_pred, skip = x[0], None
    for i in range(1, T):
        x_in = x[i - 1] if teacher_forcing or i - 1 < model.truth_inputs(n_past) else x_pred
        h, frame_skip = model.encoder(x_in)
        if model.updates_skip(i, n_past):
            skip = frame_skip
        posterior = model.posterior(model.encoder(x[i])[0], hidden)
        prior = model.prior(h, hidden) if model.prior_net is not None else None
        x_pred = model.predict(h, posterior[0], c[i - 1], skip, hidden)
        mse = mse + frame_mse(x_pred, x[i])
        kld = kld + kl_term(model, posterior, prior)
    return Loss(mse + beta * kld, mse, kld)


def encode_all(model: nn.Module, x: torch.Tensor, per_frame_bn: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Every frame of ``x [T,B,...]`` encoded in one call: ``h [B,T,dim]`` and skips ``[B,T,C,H,W]``.
    Frames go in sample-major (row b·T + t), the layout ``per_frame_batchnorm`` normalises per frame."""
    T, B = x.shape[:2]
    recompute = 2 if B * T > RECOMPUTE_ABOVE_FRAMES else 0
    with per_frame_batchnorm(model.encoder, T if per_frame_bn else 1, updates=T):
        h, skips = model.encoder(x.transpose(0, 1).reshape(-1, *x.shape[2:]), recompute=recompute)
    return h.view(B, T, -1), [s.view(B, T, *s.shape[1:]) for s in skips]


def exact_step(model: nn.Module, x: torch.Tensor, c: torch.Tensor, beta: float,
               teacher_forcing: bool, n_past: int, per_frame_bn: bool = True) -> Loss:
    """The reference's maths with each ground-truth frame encoded once (and, under teacher forcing,
    the decoder run once over all predictions, after the loop)."""
    T, B = x.shape[:2]
    c = model.visible_condition(c, n_past)
    h_all, skips = encode_all(model, x, per_frame_bn or not teacher_forcing)
    hidden = model.init_hidden(B, x.device)
    mse = kld = x.new_zeros((), dtype=torch.float32)
    codes, x_pred, skip = [], x[0], None
    for i in range(1, T):
        if teacher_forcing or i - 1 < model.truth_inputs(n_past):
            h, frame_skip = h_all[:, i - 1], [s[:, i - 1] for s in skips]
        else:  # the previous prediction, fed back: its own encoder call
            h, frame_skip = model.encoder(x_pred)
        if model.updates_skip(i, n_past):
            skip = frame_skip
        posterior = model.posterior(h_all[:, i], hidden)
        prior = model.prior(h, hidden) if model.prior_net is not None else None
        kld = kld + kl_term(model, posterior, prior)
        g = model.predict_code(h, posterior[0], c[i - 1], hidden)
        if teacher_forcing:
            codes.append(g)
        else:  # decoded now: the prediction is the next frame's input
            x_pred = model.decoder(g, skip)
            mse = mse + frame_mse(x_pred, x[i])
    if teacher_forcing:
        x_hat = decode_all(model, torch.stack(codes, 1).flatten(0, 1), skips, n_past, per_frame_bn)
        # Σ_t of per-frame means = (T−1) × the mean over all predicted frames.
        mse = frame_mse(x_hat.view(B, T - 1, *x.shape[2:]), x.transpose(0, 1)[:, 1:]) * (T - 1)
    return Loss(mse + beta * kld, mse, kld)


def decode_all(model: nn.Module, g: torch.Tensor, skips: list[torch.Tensor], n_past: int,
               per_frame_bn: bool) -> torch.Tensor:
    """The codes of all predicted frames ``g [B*(T−1), dim]`` (sample-major) decoded in one call:
    frame i takes the skips of frame i−1 with ``last_frame_skip``, else of frame min(i−1, skip_source)."""
    T = skips[0].shape[1]
    with per_frame_batchnorm(model.decoder, T - 1 if per_frame_bn else 1, updates=T - 1):
        if model.last_frame_skip:
            return model.decoder(g, [s[:, :T - 1].flatten(0, 1) for s in skips])
        k = model.skip_source(n_past)
        skip_of = torch.tensor([min(i, k) for i in range(T - 1)], device=g.device)
        return model.decoder(g, [s[:, :k + 1] for s in skips], skip_of=skip_of)


def fast_step(model: nn.Module, x: torch.Tensor, c: torch.Tensor, beta: float,
              teacher_forcing: bool, n_past: int) -> Loss:
    """``exact_step`` with BatchNorm statistics over all frames at once under teacher forcing.
    Without teacher forcing predictions are fed back frame by frame, and BatchNorm is per frame."""
    return exact_step(model, x, c, beta, teacher_forcing, n_past, per_frame_bn=False)


STEPS = {"reference": reference_step, "exact": exact_step, "fast": fast_step}


def autocast(bf16: bool, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast when ``bf16``; a no-op otherwise."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Batch-major frames ``[B,T,3,H,W]`` with each frame NHWC in memory, rows kept batch-major so
    that ``encode_all``'s sample-major reshape stays a view."""
    B, T = x.shape[:2]
    return x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(B, T, *x.shape[2:])
