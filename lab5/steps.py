"""Training forward passes: the per-frame reference, the exact encode-once path, the fast path.

All three compute the per-sequence loss  Σ_t MSE(x̂_t, x_t) + β·Σ_t KL(q_t ‖ p_t)
over frames t = 1..T−1 of a time-major batch ``x [T,B,3,H,W]``, ``c [T,B,C]``.

* ``reference_step`` is the lab's loop (and SVG-LP's): frame by frame, encoding each
  frame twice per step (as the previous frame and as the posterior's target).
* ``exact_step`` is the same maths for 62% of the FLOPs (VGG64, 2 + 10 frames): each
  ground-truth frame is encoded once, and under teacher forcing the skip half of each
  decoder stage's first convolution runs once per distinct skip frame. It batches all
  frames in one encoder call (and, under teacher forcing, one decoder call) with
  per-frame BatchNorm statistics (``per_frame_batchnorm``). Loss and gradients equal the
  reference's up to float rounding. BatchNorm *running* statistics differ: frames
  encoded twice by the reference update them twice, and the batched form makes one
  update with frame-averaged statistics (they only matter in eval mode).
* ``fast_step`` batches over time with BatchNorm over all T·B frames at once: different
  maths, same quality (``benchmarks/fast_quality.py``); with ``bf16`` and
  ``channels_last`` on a CPU with native bf16 it runs on oneDNN's bf16 (AMX) kernels. Without teacher forcing
  predictions are fed back, so its BatchNorm is per frame as in ``exact_step``.

bf16 autocast and channels_last are applied by ``train_forward`` for every path, as
``lab5.hardware.resolve_precision`` resolves them for the device. Large
batches (B·T > ``RECOMPUTE_ABOVE_FRAMES``) recompute the two highest-resolution encoder
stages in backward instead of keeping their activations (same results, less memory).

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
from lab5.hardware import resolve_precision
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


# --- decoding with shared skip convolutions ----------------------------------------------
# Each decoder stage starts with a convolution of cat([upsampled features, skip]). Being
# linear in its input channels, it is conv_u(upsampled) + conv_s(skip), and all predicted
# frames after the n_past-th take the skips of the same (last conditioning) frame: conv_s
# need only run once per distinct skip frame (on VGG64 at 2 + 10 frames, 28% of the
# decoder's FLOPs), and the concatenated tensor is never built nor kept for backward.
# Both helpers walk the decoders' shared layout: ``upc1``, then stages ``upc2..upc5``
# fed ``skip[3]..skip[0]``, each after ``up`` when the decoder has one (VGG64).

def _partial_conv(conv: nn.Module, x: torch.Tensor, first_channel: int, bias: bool) -> torch.Tensor:
    """``conv`` applied to ``x`` as input channels first_channel.. of its input, the others 0."""
    channels = slice(first_channel, first_channel + x.shape[1])
    b = conv.bias if bias else None
    if isinstance(conv, nn.ConvTranspose2d):  # weight [in, out, kh, kw]
        return F.conv_transpose2d(x, conv.weight[channels], b, conv.stride, conv.padding,
                                  conv.output_padding, 1, conv.dilation)
    return F.conv2d(x, conv.weight[:, channels], b, conv.stride, conv.padding, conv.dilation)


def _stages(decoder: nn.Module) -> list[tuple[nn.Module, list[nn.Module]]]:
    """(first convolution, remaining layers) of each skip-fed decoder stage."""
    out = []
    for stage in (decoder.upc2, decoder.upc3, decoder.upc4, decoder.upc5):
        conv, *rest = [m for m in stage.modules() if not list(m.children())]  # layers, in order
        out.append((conv, rest))
    return out


def decode_frame(decoder: nn.Module, g: torch.Tensor, skip: list[torch.Tensor],
                 skip_parts: dict[int, torch.Tensor]) -> torch.Tensor:
    """``decoder(g, skip)`` for one frame batch; ``skip_parts`` caches the skip halves of the
    stages' first convolutions for this skip frame (filled on first use, reused after)."""
    up = getattr(decoder, "up", nn.Identity())
    d = decoder.upc1(g.view(-1, decoder.dim, 1, 1))
    for k, ((conv, rest), s) in enumerate(zip(_stages(decoder), reversed(skip))):
        u = up(d)
        if k not in skip_parts:
            skip_parts[k] = _partial_conv(conv, s, u.shape[1], bias=False)
        d = _partial_conv(conv, u, 0, bias=True) + skip_parts[k]
        for layer in rest:
            d = layer(d)
    return d


def decode_shared_skips(decoder: nn.Module, g: torch.Tensor, skips: list[torch.Tensor],
                        n_past: int) -> torch.Tensor:
    """``decoder`` on the codes of all predicted frames at once, ``g [B*(T−1), dim]``
    (sample-major), given ``skips`` of the n_past conditioning frames only (each
    ``[B, n_past, C, H, W]``); frame i takes those of frame min(i−1, n_past−1).
    Returns ``[B*(T−1), 3, H, W]``."""
    B, n_pred = skips[0].shape[0], g.shape[0] // skips[0].shape[0]
    src = torch.tensor([min(i, n_past - 1) for i in range(n_pred)], device=g.device)
    up = getattr(decoder, "up", nn.Identity())
    d = decoder.upc1(g.view(-1, decoder.dim, 1, 1))
    for (conv, rest), s in zip(_stages(decoder), reversed(skips)):
        u = up(d)
        y = _partial_conv(conv, u, 0, bias=True)
        y_skip = _partial_conv(conv, s.flatten(0, 1), u.shape[1], bias=False)
        # index_select + add, not in-place adds into slices of y: their backward would
        # copy the whole gradient of y once per slice.
        y_skip = y_skip.view(B, n_past, *y_skip.shape[1:]).index_select(1, src)
        d = y.view(B, n_pred, *y.shape[1:]).add(y_skip).flatten(0, 1)
        for layer in rest:
            d = layer(d)
    return d


# --- memory: recomputing the first encoder stages ------------------------------------------
# Above this many frames in one encoder call (B·T), the batched paths recompute the
# encoder's two highest-resolution stages in backward instead of keeping their
# activations (~6% more FLOPs). They are the last to be back-propagated, so their
# activations would otherwise sit in memory through the whole backward pass; with them
# recomputed the lab preset's batch 64 fits in 8 GiB with bf16. (Recomputing decoder
# stages would not lower the peak: they are back-propagated first, while everything
# else is still kept.) Batch 16 (192 frames) keeps everything.
RECOMPUTE_ABOVE_FRAMES = 256


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


@contextlib.contextmanager
def _recompute_in_backward(modules: list[nn.Module]) -> Iterator[None]:
    """Within the block, calls of ``modules`` keep only their input for backward."""
    for m in modules:
        m.forward = functools.partial(_recomputed, m.forward, m)  # shadows the class's forward
    try:
        yield
    finally:
        for m in modules:
            del m.forward


# --- the exact and fast steps --------------------------------------------------------------
def _sample_major(x: torch.Tensor) -> torch.Tensor:
    """Time-major ``[T,B,...]`` -> ``[B*T,...]`` with row b*T + t (a view when x came batch-major)."""
    return x.transpose(0, 1).reshape(-1, *x.shape[2:])


def _encode_once(model: CVAE, x: torch.Tensor, batched: bool, per_frame_bn: bool):
    """The encoding of every ground-truth frame, each computed once: per frame t, (h, skips).

    ``batched`` encodes all B·T frames in one call, frames laid out sample-major so that
    ``per_frame_batchnorm`` can normalise each frame batch separately; otherwise one call
    per frame (BatchNorm statistics per frame by construction)."""
    T, B = x.shape[:2]
    if not batched:
        return [model.encoder(x[t]) for t in range(T)], None
    recomputed = list(model.encoder.children())[:2] if B * T > RECOMPUTE_ABOVE_FRAMES else []
    with per_frame_batchnorm(model.encoder, T if per_frame_bn else 1, updates=T), \
            _recompute_in_backward(recomputed):
        h_all, skips_all = model.encoder(_sample_major(x))
    h_all = h_all.view(B, T, -1)
    skips_all = [s.view(B, T, *s.shape[1:]) for s in skips_all]
    return [(h_all[:, t], [s[:, t] for s in skips_all]) for t in range(T)], skips_all


def _step(model: CVAE, x: torch.Tensor, c: torch.Tensor, beta: float, teacher_forcing: bool,
          n_past: int, batched: bool, per_frame_bn: bool) -> StepResult:
    """The reference's loop with each ground-truth frame encoded once (``_encode_once``) and
    the skip halves of the decoder's convolutions computed once per skip frame. With
    ``batched`` and teacher forcing, the decoder runs once over all B·(T−1) predictions
    after the loop; otherwise per frame (predictions are fed back without teacher forcing).
    The LSTMs stay sequential over t, drawing the posterior (and learned prior) noise in
    the reference's order."""
    T, B = x.shape[:2]
    truth, skips_all = _encode_once(model, x, batched, per_frame_bn)
    decode_after = batched and teacher_forcing
    hidden = model.init_hidden(B, x.device)
    mse = kld = x.new_zeros((), dtype=torch.float32)
    codes, x_pred, skip, skip_parts = [], x[0], None, {}
    for i in range(1, T):
        if teacher_forcing or i - 1 < n_past:
            h, frame_skip = truth[i - 1]
        else:  # the previous prediction, fed back: its own encoder call
            h, frame_skip = model.encoder(x_pred)
        if _uses_skip_of(model, i, n_past):
            skip, skip_parts = frame_skip, {}
        z, mu, logvar = model.posterior(truth[i][0], hidden)
        _, mu_p, logvar_p = model.prior(h, hidden) if model.prior_net is not None else (None, None, None)
        kld = kld + _kl(model, mu, logvar, mu_p, logvar_p)
        g = model.predict_code(h, z, c[i - 1], hidden)
        if decode_after:
            codes.append(g)
            continue
        # A prediction that is fed back goes through the decoder as the reference calls it:
        # its rounding reaches every later frame, and shared skip convolutions round
        # differently (gradients 3e-5 from the reference's in float32 instead of < 1e-5).
        x_pred = decode_frame(model.decoder, g, skip, skip_parts) if teacher_forcing else model.decoder(g, skip)
        mse = mse + frame_mse(x_pred, x[i])
    if decode_after:
        g = torch.stack(codes, 1).flatten(0, 1)
        with per_frame_batchnorm(model.decoder, T - 1 if per_frame_bn else 1, updates=T - 1):
            if model.last_frame_skip:  # frame i takes the skips of frame i−1
                x_hat = model.decoder(g, [s[:, :T - 1].flatten(0, 1) for s in skips_all])
            else:
                x_hat = decode_shared_skips(model.decoder, g, [s[:, :n_past] for s in skips_all], n_past)
        # Σ_t of per-frame means = (T−1) × the mean over all predicted frames.
        mse = frame_mse(x_hat.view(B, T - 1, *x.shape[2:]), x.transpose(0, 1)[:, 1:]) * (T - 1)
    return StepResult(mse + beta * kld, mse, kld)


def exact_step(model: CVAE, x: torch.Tensor, c: torch.Tensor, beta: float,
               teacher_forcing: bool, n_past: int, batched: bool = True) -> StepResult:
    """The reference's maths for 62% of its FLOPs (``_step``), batched over time with
    per-frame BatchNorm statistics; ``batched=False`` runs the same maths frame by frame
    (the tests hold both against the reference).

    On a CPU, batching pays only with ``lab5.hardware.tune_cpu_allocator`` in effect (the
    Solver and the benchmark apply it): glibc would otherwise serve each large tensor with
    fresh mmap'd pages and page-fault through them on every iteration.
    """
    return _step(model, x, c, beta, teacher_forcing, n_past, batched, per_frame_bn=True)


def fast_step(model: CVAE, x: torch.Tensor, c: torch.Tensor, beta: float,
              teacher_forcing: bool, n_past: int) -> StepResult:
    """Batched over time, BatchNorm over all frames at once under teacher forcing (different
    maths, same quality). Without teacher forcing its BatchNorm is per frame, as in
    ``exact_step``: predictions are fed back frame by frame."""
    return _step(model, x, c, beta, teacher_forcing, n_past, batched=True, per_frame_bn=not teacher_forcing)


STEPS = {"reference": reference_step, "exact": exact_step, "fast": fast_step}


def autocast_context(bf16: bool, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast when ``bf16``; a no-op otherwise."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def train_forward(model: CVAE, x: torch.Tensor, c: torch.Tensor, beta: float,
                  teacher_forcing: bool, cfg: Config) -> StepResult:
    """Batch-major inputs ``x [B,T,3,H,W]``, ``c [B,T,C]`` through the path ``cfg.step`` selects,
    with ``cfg.bf16`` and ``cfg.channels_last`` resolved for the device (``lab5.hardware``)."""
    precision = resolve_precision(cfg.bf16, cfg.channels_last, x.device)
    if precision.channels_last:  # each frame NHWC; rows stay batch-major so _sample_major is a view
        B, T = x.shape[:2]
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(B, T, *x.shape[2:])
    x, c = x.transpose(0, 1), c.transpose(0, 1)
    with autocast_context(precision.bf16, x.device):
        return STEPS[cfg.step](model, x, c, beta, teacher_forcing, cfg.n_past)
