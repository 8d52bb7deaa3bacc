"""The conditional VAE: encoder, decoder, LSTM predictor, posterior and prior, wired per frame.

``CVAE`` holds the modules and the per-frame operations every loop needs (``posterior``,
``prior``, ``predict``); ``forward`` returns the training loss through the loop over frames
that ``cfg.step`` names (``lab5.steps``); generation's loop is ``lab5.evaluate.generate``.

Predictor input at step t (predicting x_t) is ``[h_{t-1}, z_t, c_{t-1}]``: the encoding
of the previous frame, the latent and the condition (action and end-effector
position) of the previous frame.
"""

from __future__ import annotations

import torch
from torch import nn

from lab5.config import Config
from lab5.models.encoders import build_encoder_decoder
from lab5.models.lstm import GaussianLstm, Hidden, Lstm
from lab5.steps import STEPS, Loss

Gaussian = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # z, mu, logvar


class CVAE(nn.Module):
    """SVG-style conditional VAE; ``cfg.prior`` picks fixed N(0, I), learned, or none."""

    def __init__(self, cfg: Config, cond_dim: int, channels: int = 3, image_size: int = 64,
                 action_dim: int | None = None) -> None:
        super().__init__()
        if image_size != 64:
            raise ValueError(f"the {cfg.arch} encoder needs 64x64 frames, the data has {image_size}x{image_size}")
        self.cfg = cfg
        # The data's condition holds action_dim action columns, then the end-effector position's
        # (BAIR: 4 + 3); ``cfg.condition`` picks the columns the predictor sees.
        self.cond_dim = cond_dim
        self.action_dim = cond_dim - 3 if action_dim is None else action_dim
        width = {"actions+positions": cond_dim, "actions+start": cond_dim, "actions": self.action_dim,
                 "none": 0}[cfg.condition]
        self.cond_columns = slice(0, width)
        self.z_dim = cfg.z_dim
        self.prior_kind = cfg.prior
        self.last_frame_skip = cfg.last_frame_skip
        self.encoder, self.decoder = build_encoder_decoder(cfg.arch, cfg.g_dim, cfg.nf, channels)
        self.predictor = Lstm(cfg.g_dim + cfg.z_dim + width, cfg.g_dim, cfg.rnn_size,
                              cfg.predictor_rnn_layers)
        self.posterior_net = (GaussianLstm(cfg.g_dim, cfg.z_dim, cfg.rnn_size, cfg.posterior_rnn_layers)
                              if cfg.z_dim > 0 else None)
        self.prior_net = (GaussianLstm(cfg.g_dim, cfg.z_dim, cfg.rnn_size, cfg.prior_rnn_layers)
                          if cfg.prior == "learned" else None)
        if cfg.init == "svg":
            self.apply(svg_init)

    def forward(self, x: torch.Tensor, c: torch.Tensor, beta: float, teacher_forcing: bool) -> Loss:
        """``(loss, mse, kld)`` of batch-major frames ``x [B,T,3,H,W]`` and conditions ``c [B,T,C]``."""
        return STEPS[self.cfg.step](self, x.transpose(0, 1), c.transpose(0, 1), beta, teacher_forcing,
                                    self.cfg.n_past)

    def visible_condition(self, c: torch.Tensor, n_past: int) -> torch.Tensor:
        """Time-major conditions ``c [T,B,C]`` as the predictor may see them: with ``actions+start`` the
        end-effector positions of frames n_past on are zeroed, so the arm's future comes from the actions."""
        if self.cfg.condition != "actions+start":
            return c
        c = c.clone()
        c[n_past:, :, self.action_dim:] = 0
        return c

    def skip_source(self, n_past: int) -> int:
        """The frame whose skips the later frames take (without ``last_frame_skip``): x[n_past−2] with
        ``skip_frame='svg'``, the last conditioning frame x[n_past−1] with ``'last'``."""
        return n_past - 2 if self.cfg.skip_frame == "svg" else n_past - 1

    def updates_skip(self, i: int, n_past: int) -> bool:
        """Whether the input of step i (frame i−1) provides the skips from step i on."""
        return self.last_frame_skip or i - 1 <= self.skip_source(n_past)

    def truth_inputs(self, n_past: int) -> int:
        """How many first inputs are ground truth in a step without teacher forcing: the conditioning
        frames (``tf_style='conditioned'``), or the first frame alone (Listing 2.7's ``'listing'``)."""
        return n_past if self.cfg.tf_style == "conditioned" else 1

    def init_hidden(self, batch_size: int, device: torch.device | str) -> dict[str, Hidden]:
        """Fresh LSTM states for one batch of sequences."""
        hidden = {"predictor": self.predictor.init_hidden(batch_size, device)}
        if self.posterior_net is not None:
            hidden["posterior"] = self.posterior_net.init_hidden(batch_size, device)
        if self.prior_net is not None:
            hidden["prior"] = self.prior_net.init_hidden(batch_size, device)
        return hidden

    def posterior(self, h_target: torch.Tensor, hidden: dict[str, Hidden],
                  generator: torch.Generator | None = None) -> Gaussian:
        """q(z_t | x_<=t), fed the encoding of the frame being predicted."""
        if self.posterior_net is None:
            return _empty_gaussian(h_target)
        z, mu, logvar, hidden["posterior"] = self.posterior_net(h_target, hidden["posterior"], generator)
        return z, mu, logvar

    def prior(self, h_prev: torch.Tensor, hidden: dict[str, Hidden],
              generator: torch.Generator | None = None) -> Gaussian:
        """p(z_t | x_<t): learned LSTM, or N(0, I) for the fixed prior."""
        if self.prior_net is not None:
            z, mu, logvar, hidden["prior"] = self.prior_net(h_prev, hidden["prior"], generator)
            return z, mu, logvar
        if self.z_dim == 0:
            return _empty_gaussian(h_prev)
        zeros = torch.zeros(h_prev.shape[0], self.z_dim, device=h_prev.device, dtype=h_prev.dtype)
        z = torch.randn(zeros.shape, generator=generator, device=zeros.device, dtype=zeros.dtype)
        return z, zeros, zeros

    def predict(self, h_prev: torch.Tensor, z: torch.Tensor, c_prev: torch.Tensor,
                skip: list[torch.Tensor], hidden: dict[str, Hidden]) -> torch.Tensor:
        """One predicted frame from [h_{t-1}, z_t, c_{t-1}] and the skip features."""
        return self.decoder(self.predict_code(h_prev, z, c_prev, hidden), skip)

    def predict_code(self, h_prev: torch.Tensor, z: torch.Tensor, c_prev: torch.Tensor,
                     hidden: dict[str, Hidden]) -> torch.Tensor:
        """The predictor's code for frame t (``predict`` without the decoder)."""
        cond = c_prev[:, self.cond_columns].to(h_prev.dtype)
        g, hidden["predictor"] = self.predictor(torch.cat([h_prev, z, cond], 1), hidden["predictor"])
        return g


def svg_init(m: nn.Module) -> None:
    """SVG's (and the lab template's) initialisation: conv and linear weights N(0, 0.02), BatchNorm
    weights N(1, 0.02), their biases 0; the LSTM cells keep PyTorch's."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def _empty_gaussian(like: torch.Tensor) -> Gaussian:
    empty = like.new_zeros(like.shape[0], 0)
    return empty, empty, empty


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
