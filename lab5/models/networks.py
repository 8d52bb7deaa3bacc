"""The CVAE's networks: frame encoders and decoders with skip connections (VGG64, the report's, and
DCGAN64), and the LSTMs (the frame predictor; the Gaussian LSTM of the posterior and learned prior).

Encoders and decoders share one interface: ``encoder(x [B,3,64,64]) -> (h [B,dim], skips [4 maps])``
and ``decoder(h [B,dim], skips) -> x_hat [B,3,64,64] in (0, 1)``. VGG64 follows the report's Listings
2.1 and 2.2 layer for layer; DCGAN64 (SVG's ``dcgan_64``) replaces each VGG stage by one stride-2 4x4
convolution, about 20x cheaper (the ``demo`` preset).

Every BatchNorm2d is a ``FrameBatchNorm2d``: an ordinary BatchNorm2d (same state_dict) that, inside
``per_frame_batchnorm(module, T)``, normalises a sample-major batch of T frames per sequence
``[B*T, C, H, W]`` frame by frame, so a training step can run the encoder and decoder once over all
frames and keep the per-frame statistics of a frame-by-frame loop.

Unlike the report's listings, an LSTM's hidden state is not stored at construction: ``init_hidden``
creates it per batch and ``forward`` threads it through, so a short last batch, DDP and evaluation
with another batch size all work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class FrameBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with optional per-frame training statistics (see ``per_frame_batchnorm``).

    With ``frames = T`` and a sample-major input (row b*T + t: frame t of sequence b), the view ``[B, T*C, H, W]``
    puts frame t's channel c in channel t*C + c, so one ``F.batch_norm`` call normalises each (frame, channel) over
    (sequence, pixel), as T separate calls would. A call that stands for ``updates`` per-frame calls updates the
    running statistics once, at momentum 1 − (1 − m)^updates, so they decay as much as over the loop's calls.
    Eval mode is unaffected."""

    frames: int = 1
    updates: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = self.frames
        if not self.training or (T == 1 and self.updates == 1):
            return super().forward(x)
        N, C = x.shape[:2]
        if N % T:
            raise ValueError(f"per-frame BatchNorm over {T} frames got a batch of {N} rows")
        track = self.track_running_stats and self.running_mean is not None
        momentum = 0.0
        if track:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d does
                momentum = 1.0 / float(self.num_batches_tracked)
            else:
                momentum = 1.0 - (1.0 - self.momentum) ** self.updates
        if T == 1:
            return F.batch_norm(x, self.running_mean if track else None, self.running_var if track else None,
                                self.weight, self.bias, True, momentum, self.eps)
        if track:
            running_mean, running_var = self.running_mean.repeat(T), self.running_var.repeat(T)
        else:
            running_mean = running_var = None
        weight = self.weight.repeat(T) if self.weight is not None else None
        bias = self.bias.repeat(T) if self.bias is not None else None
        y = F.batch_norm(x.reshape(N // T, T * C, *x.shape[2:]), running_mean, running_var,
                         weight, bias, True, momentum, self.eps)
        if track:
            with torch.no_grad():  # T per-frame updates of a copy each -> their mean
                self.running_mean.copy_(running_mean.view(T, C).mean(0))
                self.running_var.copy_(running_var.view(T, C).mean(0))
        # A plain view would make the in-place LeakyReLU that follows an in-place op on a view,
        # which autograd pays for with full-size copies in backward; _unsafe_view is the same
        # reshape without view tracking (safe: batch_norm's backward does not use its output).
        return torch.ops.aten._unsafe_view(y, x.shape)


@contextlib.contextmanager
def per_frame_batchnorm(module: nn.Module, frames: int, updates: int | None = None) -> Iterator[None]:
    """Within the block, every FrameBatchNorm2d of ``module`` normalises ``frames`` frames
    separately, and a call updates the running statistics as ``updates`` per-frame calls
    would (default ``frames``; a call over T frames normalised together passes T)."""
    layers = [m for m in module.modules() if isinstance(m, FrameBatchNorm2d)]
    for m in layers:
        m.frames, m.updates = frames, updates or frames
    try:
        yield
    finally:
        for m in layers:
            m.frames = m.updates = 1


def recomputed(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` keeping only ``x`` for backward, where it runs again (activation checkpointing).
    The rerun happens after ``per_frame_batchnorm`` has exited: it sees the module's BatchNorms
    set as the first run saw them, and leaves their running statistics as the first run left them."""
    bns = [m for m in module.modules() if isinstance(m, FrameBatchNorm2d)]
    settings = [(m.frames, m.updates) for m in bns]
    first_run = True

    def run(inp: torch.Tensor) -> torch.Tensor:
        nonlocal first_run
        if first_run:
            first_run = False
            return module(inp)
        state = [(m.frames, m.updates, [b.clone() for b in m.buffers(recurse=False)]) for m in bns]
        for m, (frames, updates) in zip(bns, settings):
            m.frames, m.updates = frames, updates
        try:
            return module(inp)
        finally:
            with torch.no_grad():
                for m, (frames, updates, buffers) in zip(bns, state):
                    m.frames, m.updates = frames, updates
                    for b, saved in zip(m.buffers(recurse=False), buffers):
                        b.copy_(saved)

    return checkpoint(run, x, use_reentrant=False)


class VggLayer(nn.Sequential):
    """3x3 conv + BatchNorm + LeakyReLU(0.2), as in the report."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__(nn.Conv2d(n_in, n_out, 3, 1, 1), FrameBatchNorm2d(n_out),
                         nn.LeakyReLU(0.2, inplace=True))


class SkipEncoder(nn.Module):
    """Stages c1..c4 (each output a skip), each after ``pool``, then c5 to the code h."""

    pool: nn.Module

    def forward(self, x: torch.Tensor, recompute: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``recompute``: how many of the first (highest-resolution) stages keep only their input
        for backward and run again there, which lowers the peak memory of a long batch."""
        skips, h = [], x
        for k, stage in enumerate((self.c1, self.c2, self.c3, self.c4)):
            h = self.pool(h) if k else h
            h = recomputed(stage, h) if k < recompute else stage(h)
            skips.append(h)
        return self.c5(self.pool(h)).view(-1, self.dim), skips


class SkipDecoder(nn.Module):
    """upc1 from the code, then stages upc2..upc5, each fed ``cat([up(d), skip])`` with skips
    skip[3]..skip[0]; a Sigmoid at the end."""

    up: nn.Module

    def forward(self, h: torch.Tensor, skip: list[torch.Tensor], skip_of: torch.Tensor | None = None
                ) -> torch.Tensor:
        """With ``skip_of``, ``h`` holds frames ``[B*F, dim]`` (sample-major) and ``skip`` the skips of
        K distinct frames, each ``[B, K, C, H, W]``: frame f takes those of frame ``skip_of[f]``.
        A stage's first convolution is linear in its input channels, conv(cat[u, s]) = conv_u(u)
        + conv_s(s), so conv_s runs once per distinct skip frame, not once per predicted frame, and
        the concatenated tensor is never built."""
        d = self.upc1(h.view(-1, self.dim, 1, 1))
        for stage, s in zip((self.upc2, self.upc3, self.upc4, self.upc5), reversed(skip)):
            u = self.up(d)
            if skip_of is None:
                d = stage(torch.cat([u, s], 1))
                continue
            conv, *rest = [m for m in stage.modules() if not list(m.children())]  # its layers, in order
            B, K = s.shape[:2]
            y_skip = partial_conv(conv, s.flatten(0, 1), u.shape[1], bias=False)
            # index_select + add, not in-place adds into slices: their backward would copy the
            # whole gradient once per slice.
            y_skip = y_skip.view(B, K, *y_skip.shape[1:]).index_select(1, skip_of)
            y = partial_conv(conv, u, 0, bias=True)
            d = y.view(B, len(skip_of), *y.shape[1:]).add(y_skip).flatten(0, 1)
            for layer in rest:
                d = layer(d)
        return d


def partial_conv(conv: nn.Module, x: torch.Tensor, first_channel: int, bias: bool) -> torch.Tensor:
    """``conv`` applied to ``x`` as its input channels first_channel.., the others taken as 0."""
    channels = slice(first_channel, first_channel + x.shape[1])
    b = conv.bias if bias else None
    if isinstance(conv, nn.ConvTranspose2d):  # weight [in, out, kh, kw]
        return F.conv_transpose2d(x, conv.weight[channels], b, conv.stride, conv.padding,
                                  conv.output_padding, 1, conv.dilation)
    return F.conv2d(x, conv.weight[:, channels], b, conv.stride, conv.padding, conv.dilation)


class VggEncoder(SkipEncoder):
    """Listing 2.1: 64 -> 32 -> 16 -> 8 -> 4 -> 1, skips at 64, 32, 16 and 8 pixels."""

    def __init__(self, dim: int, channels: int = 3) -> None:
        super().__init__()
        self.dim = dim
        self.c1 = nn.Sequential(VggLayer(channels, 64), VggLayer(64, 64))
        self.c2 = nn.Sequential(VggLayer(64, 128), VggLayer(128, 128))
        self.c3 = nn.Sequential(VggLayer(128, 256), VggLayer(256, 256), VggLayer(256, 256))
        self.c4 = nn.Sequential(VggLayer(256, 512), VggLayer(512, 512), VggLayer(512, 512))
        self.c5 = nn.Sequential(nn.Conv2d(512, dim, 4, 1, 0), FrameBatchNorm2d(dim), nn.Tanh())
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, padding=0)


class VggDecoder(SkipDecoder):
    """Listing 2.2: mirrors VggEncoder, concatenating the skips, ending in a Sigmoid."""

    def __init__(self, dim: int, channels: int = 3) -> None:
        super().__init__()
        self.dim = dim
        self.upc1 = nn.Sequential(nn.ConvTranspose2d(dim, 512, 4, 1, 0), FrameBatchNorm2d(512),
                                  nn.LeakyReLU(0.2, inplace=True))
        self.upc2 = nn.Sequential(VggLayer(512 * 2, 512), VggLayer(512, 512), VggLayer(512, 256))
        self.upc3 = nn.Sequential(VggLayer(256 * 2, 256), VggLayer(256, 256), VggLayer(256, 128))
        self.upc4 = nn.Sequential(VggLayer(128 * 2, 128), VggLayer(128, 64))
        self.upc5 = nn.Sequential(VggLayer(64 * 2, 64), nn.ConvTranspose2d(64, channels, 3, 1, 1), nn.Sigmoid())
        self.up = nn.UpsamplingNearest2d(scale_factor=2)


def _down(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(n_in, n_out, 4, 2, 1), FrameBatchNorm2d(n_out), nn.LeakyReLU(0.2, inplace=True))


def _up(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(n_in, n_out, 4, 2, 1), FrameBatchNorm2d(n_out),
                         nn.LeakyReLU(0.2, inplace=True))


class DcganEncoder(SkipEncoder):
    """Stride-2 4x4 convs: 64 -> 32 -> 16 -> 8 -> 4 -> 1, skips at 32, 16, 8 and 4 pixels."""

    def __init__(self, dim: int, nf: int = 64, channels: int = 3) -> None:
        super().__init__()
        self.dim = dim
        self.c1 = _down(channels, nf)
        self.c2 = _down(nf, nf * 2)
        self.c3 = _down(nf * 2, nf * 4)
        self.c4 = _down(nf * 4, nf * 8)
        self.c5 = nn.Sequential(nn.Conv2d(nf * 8, dim, 4, 1, 0), FrameBatchNorm2d(dim), nn.Tanh())
        self.pool = nn.Identity()


class DcganDecoder(SkipDecoder):
    """Mirror of DcganEncoder with the same skip layout, ending in a Sigmoid."""

    def __init__(self, dim: int, nf: int = 64, channels: int = 3) -> None:
        super().__init__()
        self.dim = dim
        self.upc1 = nn.Sequential(nn.ConvTranspose2d(dim, nf * 8, 4, 1, 0), FrameBatchNorm2d(nf * 8),
                                  nn.LeakyReLU(0.2, inplace=True))
        self.upc2 = _up(nf * 8 * 2, nf * 4)
        self.upc3 = _up(nf * 4 * 2, nf * 2)
        self.upc4 = _up(nf * 2 * 2, nf)
        self.upc5 = nn.Sequential(nn.ConvTranspose2d(nf * 2, channels, 4, 2, 1), nn.Sigmoid())
        self.up = nn.Identity()


def build_encoder_decoder(arch: str, dim: int, nf: int = 64, channels: int = 3) -> tuple[SkipEncoder, SkipDecoder]:
    """The encoder/decoder pair of an architecture family."""
    if arch == "vgg64":
        return VggEncoder(dim, channels), VggDecoder(dim, channels)
    if arch == "dcgan64":
        return DcganEncoder(dim, nf, channels), DcganDecoder(dim, nf, channels)
    raise ValueError(f"unknown architecture {arch!r} (known: vgg64, dcgan64)")


Hidden = list[tuple[torch.Tensor, torch.Tensor]]


class _StackedLstm(nn.Module):
    """Linear embed followed by a stack of LSTMCells."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.embed = nn.Linear(input_size, hidden_size)
        self.lstm = nn.ModuleList([nn.LSTMCell(hidden_size, hidden_size) for _ in range(num_layers)])

    def init_hidden(self, batch_size: int, device: torch.device | str) -> Hidden:
        zeros = torch.zeros(batch_size, self.hidden_size, device=device)
        return [(zeros, zeros) for _ in range(self.num_layers)]

    def _run(self, x: torch.Tensor, hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        h_in = self.embed(x)
        new_hidden: Hidden = []
        for cell, state in zip(self.lstm, hidden):
            h, c = cell(h_in, state)
            new_hidden.append((h, c))
            h_in = h
        return h_in, new_hidden


class Lstm(_StackedLstm):
    """Frame predictor: embed -> LSTMs -> Linear -> BatchNorm1d -> Tanh (the report's head)."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__(input_size, hidden_size, num_layers)
        self.output = nn.Sequential(nn.Linear(hidden_size, output_size),
                                    nn.BatchNorm1d(output_size), nn.Tanh())

    def forward(self, x: torch.Tensor, hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        h, hidden = self._run(x, hidden)
        return self.output(h), hidden


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps: a sample whose gradient flows into mu and logvar."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + eps * torch.exp(0.5 * logvar)


class GaussianLstm(_StackedLstm):
    """q(z_t | x_<=t) or p(z_t | x_<t): embed -> LSTMs -> (mu, logvar) -> reparameterised z."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__(input_size, hidden_size, num_layers)
        self.mu_net = nn.Linear(hidden_size, output_size)
        self.logvar_net = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor, hidden: Hidden, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Hidden]:
        h, hidden = self._run(x, hidden)
        mu, logvar = self.mu_net(h), self.logvar_net(h)
        return reparameterize(mu, logvar, generator), mu, logvar, hidden
