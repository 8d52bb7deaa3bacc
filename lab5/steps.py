"""Training forward passes: the per-frame reference, the exact encode-once path, the fast path.

All three compute the per-sequence loss  Σ_t MSE(x̂_t, x_t) + β·Σ_t KL(q_t ‖ p_t)
over frames t = 1..T−1 of a time-major batch ``x [T,B,3,H,W]``, ``c [T,B,C]``.

* ``reference_step`` is the lab's loop (and SVG-LP's): frame by frame, encoding each
  frame twice per step (as the previous frame and as the posterior's target).
* ``exact_step`` is the same maths for 62% of the FLOPs (VGG64, 2 + 10 frames). Each
  ground-truth frame is encoded once, all T·B frames in one call; under teacher forcing
  the decoder runs once over all (T−1)·B predictions, and the skip half of each decoder
  stage's first convolution runs once per distinct skip frame (``decode_shared_skips``).
  BatchNorm keeps per-frame statistics (``per_frame_batchnorm``), so loss and gradients
  equal the reference's up to float rounding. BatchNorm *running* statistics differ:
  one update per call with frame-averaged statistics, instead of one per frame and two
  for frames encoded twice (they only matter in eval mode).
* ``fast_step`` is ``exact_step`` with BatchNorm over all T·B frames at once: different
  maths, same quality (``benchmarks/fast_quality.py``), and with ``bf16`` and
  ``channels_last`` the speed of oneDNN's bf16 (AMX) kernels. Without teacher forcing
  predictions are fed back, so it is ``exact_step``.

bf16 autocast and channels_last are applied by ``train_forward`` for every path. Large
batches (B·T > ``RECOMPUTE_ABOVE_FRAMES``) recompute the full-resolution encoder and
decoder stages in backward instead of keeping their activations (same results).

Inputs of conditioning frames (index < n_past) are always ground truth; teacher forcing
decides whether later inputs are ground truth or the model's own previous prediction.
Skips come from the last conditioning frame unless ``last_frame_skip``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

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


# Above this many frames in one encoder call (B·T), the batched paths recompute the
# highest-resolution encoder and decoder stages in backward instead of keeping their
# activations (a third of all kept activations, for ~5% more FLOPs): the lab preset's
# batch 64 then fits in 8 GiB with bf16. Batch 16 (192 frames) keeps everything.
RECOMPUTE_ABOVE_FRAMES = 256


def _sample_major(x: torch.Tensor) -> torch.Tensor:
    """Time-major ``[T,B,...]`` -> ``[B*T,...]`` with row b*T + t (a view when x came batch-major)."""
    return x.transpose(0, 1).reshape(-1, *x.shape[2:])


def _recomputed(fn: Callable[..., torch.Tensor], module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """``fn(*args)`` keeping only its inputs for backward, where it is run again (activation
    checkpointing). ``module`` holds the BatchNorms ``fn`` uses: the rerun sees the same
    per-frame setting as the first run (it happens after ``per_frame_batchnorm`` has exited)
    and leaves their running statistics as the first run left them."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    frames = [getattr(m, "frames", 1) for m in bns]
    first_run = True

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        nonlocal first_run
        if first_run:
            first_run = False
            return fn(*inputs)
        state = [(getattr(m, "frames", 1), [b.clone() for b in m.buffers(recurse=False)]) for m in bns]
        for m, f in zip(bns, frames):
            m.frames = f
        try:
            return fn(*inputs)
        finally:
            with torch.no_grad():
                for m, (f, buffers) in zip(bns, state):
                    m.frames = f
                    for b, saved in zip(m.buffers(recurse=False), buffers):
                        b.copy_(saved)

    return checkpoint(run, *args, use_reentrant=False)


def _split_conv(conv: nn.Module, u: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``conv(cat([u, s], 1))`` as two parts ``conv_u(u) + conv_s(s)`` (convolution is linear
    in its input channels); the bias goes with the u part."""
    k = u.shape[1]
    if isinstance(conv, nn.ConvTranspose2d):  # weight [in, out, kh, kw]
        args = dict(stride=conv.stride, padding=conv.padding, output_padding=conv.output_padding,
                    dilation=conv.dilation)
        return (F.conv_transpose2d(u, conv.weight[:k], conv.bias, **args),
                F.conv_transpose2d(s, conv.weight[k:], None, **args))
    args = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation)  # weight [out, in, kh, kw]
    return F.conv2d(u, conv.weight[:, :k], conv.bias, **args), F.conv2d(s, conv.weight[:, k:], None, **args)


def _decoder_stage(stage: nn.Sequential, up: nn.Module, n_past: int, d: torch.Tensor,
                   skip: torch.Tensor) -> torch.Tensor:
    """One decoder stage on ``d [B*(T−1),...]`` with the skips ``skip [B, n_past, ...]`` shared as
    described in ``decode_shared_skips``."""
    B = skip.shape[0]
    conv, *rest = [m for m in stage.modules() if not list(m.children())]  # its layers, in order
    y, y_skip = _split_conv(conv, up(d), skip.flatten(0, 1))
    y_frames = y.view(B, -1, *y.shape[1:])  # in place: conv outputs are not kept for backward
    y_skip = y_skip.view(B, n_past, *y_skip.shape[1:])
    # Frames 1..n_past use their own input's skips, later ones the last conditioning frame's.
    y_frames[:, :n_past] += y_skip
    y_frames[:, n_past:] += y_skip[:, -1:]
    for layer in rest:
        y = layer(y)
    return y


def decode_shared_skips(decoder: nn.Module, g: torch.Tensor, skips: list[torch.Tensor], n_past: int,
                        recompute_last: bool = False) -> torch.Tensor:
    """``decoder`` on codes ``g [B*(T−1), dim]`` (sample-major) whose frame i takes the skips of
    input frame min(i−1, n_past−1), given ``skips`` of the n_past conditioning frames only
    (each ``[B, n_past, C, H, W]``); returns ``[B*(T−1), 3, H, W]``.

    Equal to ``decoder(g, skips gathered per frame)``, cheaper: each decoder stage starts
    with a convolution of cat([upsampled features, skip]), split by ``_split_conv`` so that
    the skip half runs on the n_past distinct skip frames instead of on all T−1 predictions
    (on VGG64 at 2 + 10 frames: 28% fewer decoder FLOPs), and the concatenated tensor is
    never built nor kept for backward. Walks the decoders' shared layout: ``upc1``, then
    stages ``upc2..upc5`` fed ``skip[3]..skip[0]``, each after ``up`` when the decoder has
    one (VGG64). ``recompute_last`` recomputes the last (full-resolution) stage in backward.
    """
    up = getattr(decoder, "up", nn.Identity())
    d = decoder.upc1(g.view(-1, decoder.dim, 1, 1))
    stages = (decoder.upc2, decoder.upc3, decoder.upc4, decoder.upc5)
    for k, (stage, skip) in enumerate(zip(stages, reversed(skips))):
        fn = functools.partial(_decoder_stage, stage, up, n_past)
        d = _recomputed(fn, stage, d, skip) if recompute_last and k == len(stages) - 1 else fn(d, skip)
    return d


@contextlib.contextmanager
def _recompute_in_backward(module: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, calls of ``module`` keep only their input for backward."""
    if not enabled:
        yield
        return
    forward = module.forward
    module.forward = lambda *args: _recomputed(forward, module, *args)  # shadows the class's forward
    try:
        yield
    finally:
        del module.forward


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
    recompute = B * T > RECOMPUTE_ABOVE_FRAMES
    first_stage = next(model.encoder.children())  # c1: the full-resolution stage
    with per_frame_batchnorm(model.encoder, T if per_frame_bn else 1), \
            _recompute_in_backward(first_stage, recompute):
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
        g = torch.stack(codes, 1).flatten(0, 1)
        with per_frame_batchnorm(model.decoder, T - 1 if per_frame_bn else 1):
            if model.last_frame_skip:  # frame i takes the skips of frame i−1
                x_hat = model.decoder(g, [s[:, :T - 1].flatten(0, 1) for s in skips_all])
            else:
                x_hat = decode_shared_skips(model.decoder, g, [s[:, :n_past] for s in skips_all],
                                            n_past, recompute_last=recompute)
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
