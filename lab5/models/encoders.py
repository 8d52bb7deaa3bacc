"""Frame encoders and decoders with skip connections: VGG64 (the report's) and DCGAN64.

Both families share one interface:
``encoder(x [B,3,64,64]) -> (h [B,dim], skips [4 feature maps])`` and
``decoder(h [B,dim], skips) -> x_hat [B,3,64,64] in (0, 1)``.
VGG64 follows the report's Listings 2.1 and 2.2 layer for layer; DCGAN64 (SVG's
``dcgan_64``) replaces each VGG stage by one stride-2 4x4 convolution, which makes it
about 20x cheaper and is what the CPU ``demo`` preset uses.

Every BatchNorm2d here is a ``FrameBatchNorm2d``: an ordinary BatchNorm2d (same
parameters, buffers and state_dict keys) that, inside ``per_frame_batchnorm(module, T)``,
normalises a sample-major batch of T frames per sequence ``[B*T, C, H, W]`` frame by
frame. That lets the exact training path run the encoder once over all frames while
keeping the per-frame statistics of the reference's frame-by-frame loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


class FrameBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with optional per-frame training statistics (see ``per_frame_batchnorm``).

    With ``frames = T`` and a sample-major input (row b*T + t holds frame t of sequence b),
    the view ``[B, T*C, H, W]`` puts frame t's channel c in channel t*C + c, so one
    ``F.batch_norm`` call normalises every (frame, channel) pair over (sequence, pixel) --
    exactly what T separate calls on the frame batches compute, since convolutions act on
    each sample alone. No copy is made for a contiguous (NCHW) input.

    Running statistics: the per-frame loop updates them once per frame call, in frame
    order. A call that stands for ``updates`` such calls takes one update with the
    frame-averaged batch statistics (or, with ``frames = 1``, the statistics over all
    frames) at momentum 1 − (1 − m)^updates, so the old statistics decay as much as they
    would over the loop's calls; with plain momentum m they would lag ~``updates`` times
    further behind the weights than the loop's do. Eval mode (running statistics, per
    sample) is unaffected by ``frames`` and ``updates``.
    """

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


class VggLayer(nn.Sequential):
    """3x3 conv + BatchNorm + LeakyReLU(0.2), as in the report."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__(nn.Conv2d(n_in, n_out, 3, 1, 1), FrameBatchNorm2d(n_out),
                         nn.LeakyReLU(0.2, inplace=True))


class VggEncoder(nn.Module):
    """Listing 2.1: 64 -> 32 -> 16 -> 8 -> 4 -> 1, skips at 64, 32, 16 and 8 pixels."""

    def __init__(self, dim: int, channels: int = 3) -> None:
        super().__init__()
        self.dim = dim
        self.c1 = nn.Sequential(VggLayer(channels, 64), VggLayer(64, 64))
        self.c2 = nn.Sequential(VggLayer(64, 128), VggLayer(128, 128))
        self.c3 = nn.Sequential(VggLayer(128, 256), VggLayer(256, 256), VggLayer(256, 256))
        self.c4 = nn.Sequential(VggLayer(256, 512), VggLayer(512, 512), VggLayer(512, 512))
        self.c5 = nn.Sequential(nn.Conv2d(512, dim, 4, 1, 0), FrameBatchNorm2d(dim), nn.Tanh())
        self.mp = nn.MaxPool2d(kernel_size=2, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h1 = self.c1(x)
        h2 = self.c2(self.mp(h1))
        h3 = self.c3(self.mp(h2))
        h4 = self.c4(self.mp(h3))
        h5 = self.c5(self.mp(h4))
        return h5.view(-1, self.dim), [h1, h2, h3, h4]


class VggDecoder(nn.Module):
    """Listing 2.2: mirrors VggEncoder, concatenating the skips, ending in a Sigmoid."""

    def __init__(self, dim: int, channels: int = 3) -> None:
        super().__init__()
        self.dim = dim
        self.upc1 = nn.Sequential(nn.ConvTranspose2d(dim, 512, 4, 1, 0), FrameBatchNorm2d(512),
                                  nn.LeakyReLU(0.2, inplace=True))
        self.upc2 = nn.Sequential(VggLayer(512 * 2, 512), VggLayer(512, 512), VggLayer(512, 256))
        self.upc3 = nn.Sequential(VggLayer(256 * 2, 256), VggLayer(256, 256), VggLayer(256, 128))
        self.upc4 = nn.Sequential(VggLayer(128 * 2, 128), VggLayer(128, 64))
        self.upc5 = nn.Sequential(VggLayer(64 * 2, 64), nn.ConvTranspose2d(64, channels, 3, 1, 1),
                                  nn.Sigmoid())
        self.up = nn.UpsamplingNearest2d(scale_factor=2)

    def forward(self, h: torch.Tensor, skip: list[torch.Tensor]) -> torch.Tensor:
        d1 = self.upc1(h.view(-1, self.dim, 1, 1))
        d2 = self.upc2(torch.cat([self.up(d1), skip[3]], 1))
        d3 = self.upc3(torch.cat([self.up(d2), skip[2]], 1))
        d4 = self.upc4(torch.cat([self.up(d3), skip[1]], 1))
        return self.upc5(torch.cat([self.up(d4), skip[0]], 1))


def _down(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(n_in, n_out, 4, 2, 1), FrameBatchNorm2d(n_out),
                         nn.LeakyReLU(0.2, inplace=True))


def _up(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(n_in, n_out, 4, 2, 1), FrameBatchNorm2d(n_out),
                         nn.LeakyReLU(0.2, inplace=True))


class DcganEncoder(nn.Module):
    """Stride-2 4x4 convs: 64 -> 32 -> 16 -> 8 -> 4 -> 1, skips at 32, 16, 8 and 4 pixels."""

    def __init__(self, dim: int, nf: int = 64, channels: int = 3) -> None:
        super().__init__()
        self.dim = dim
        self.c1 = _down(channels, nf)
        self.c2 = _down(nf, nf * 2)
        self.c3 = _down(nf * 2, nf * 4)
        self.c4 = _down(nf * 4, nf * 8)
        self.c5 = nn.Sequential(nn.Conv2d(nf * 8, dim, 4, 1, 0), FrameBatchNorm2d(dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h1 = self.c1(x)
        h2 = self.c2(h1)
        h3 = self.c3(h2)
        h4 = self.c4(h3)
        return self.c5(h4).view(-1, self.dim), [h1, h2, h3, h4]


class DcganDecoder(nn.Module):
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

    def forward(self, h: torch.Tensor, skip: list[torch.Tensor]) -> torch.Tensor:
        d1 = self.upc1(h.view(-1, self.dim, 1, 1))
        d2 = self.upc2(torch.cat([d1, skip[3]], 1))
        d3 = self.upc3(torch.cat([d2, skip[2]], 1))
        d4 = self.upc4(torch.cat([d3, skip[1]], 1))
        return self.upc5(torch.cat([d4, skip[0]], 1))


def build_encoder_decoder(arch: str, dim: int, nf: int = 64,
                          channels: int = 3) -> tuple[nn.Module, nn.Module]:
    """The encoder/decoder pair of an architecture family."""
    if arch == "vgg64":
        return VggEncoder(dim, channels), VggDecoder(dim, channels)
    if arch == "dcgan64":
        return DcganEncoder(dim, nf, channels), DcganDecoder(dim, nf, channels)
    raise ValueError(f"unknown architecture {arch!r} (known: vgg64, dcgan64)")
