"""The conditional VAE (SVG's family): its networks wired per frame, the loss it trains on, and how it
generates.

Every loop over frames (training's forms, generation, the test-time KL) runs ``CVAE.step``: the predictor's
input for frame t is ``[h_{t-1}, z_t, c_{t-1}]``, and z_t comes from the posterior q(z_t | x_<=t) when frame t
is known, from the prior p(z_t | x_<t) when it is not.

The per-sequence loss is  Σ_t MSE(x̂_t, x_t) + β·Σ_t KL(q_t ‖ p_t)  over frames t = 1..T−1. The ELBO is
E_q[log p(x|z)] − KL(q ‖ p) (the report's eq. 1.1 writes + KL: a sign error); with a fixed-variance Gaussian
likelihood −log p(x|z) is MSE up to scale and constant, so minimising MSE + β·KL maximises a β-weighted ELBO.
``cfg.step`` picks how ``forward`` computes it: ``reference``, the lab's (and SVG's) loop, each frame encoded
twice; ``exact``, the same maths with each true frame encoded once and, under teacher forcing, all predictions
decoded in one call with per-frame BatchNorm statistics; ``fast``, ``exact`` with BatchNorm over all frames at
once (other maths, same quality: ``benchmarks/fast_quality.py``). All three draw the same random numbers.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lab5.config import CONDITIONS, Config
from lab5.models.networks import GaussianLstm, Hidden, Lstm, build_encoder_decoder, per_frame_batchnorm

Gaussian = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # z, mu, logvar

# Above this many frames in one encoder call (B·T), the batched forms recompute the encoder's two
# highest-resolution stages in backward instead of keeping their activations: those are
# back-propagated last, so they would sit in memory through the whole backward pass.
RECOMPUTE_ABOVE_FRAMES = 256


class Loss(NamedTuple):
    loss: torch.Tensor
    mse: torch.Tensor
    kld: torch.Tensor


def kl_gaussian(mu_q: torch.Tensor, logvar_q: torch.Tensor,
                mu_p: torch.Tensor | None = None, logvar_p: torch.Tensor | None = None) -> torch.Tensor:
    """Analytic KL(N(mu_q, e^logvar_q) ‖ N(mu_p, e^logvar_p)) in fp32, summed over z and divided by the
    batch size as in SVG's reference code (not by the element count). None for ``mu_p``/``logvar_p``:
    the fixed prior N(0, I)."""
    mu_q, logvar_q = mu_q.float(), logvar_q.float()
    if mu_p is None or logvar_p is None:
        mu_p, logvar_p = torch.zeros_like(mu_q), torch.zeros_like(logvar_q)
    mu_p, logvar_p = mu_p.float(), logvar_p.float()
    kld = 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1)
    return kld.sum() / mu_q.shape[0]


def frame_mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error of one frame batch, computed in fp32 even under bf16 autocast."""
    return F.mse_loss(x_hat.float(), x.float())


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
        actions, self.positions = CONDITIONS[cfg.condition]
        width = cond_dim if self.positions != "none" else self.action_dim if actions else 0
        self.cond_columns = slice(0, width)
        if cfg.cond_norm:  # buffers: saved and loaded with the weights; set_condition_stats fills them
            self.register_buffer("cond_mean", torch.zeros(cond_dim))
            self.register_buffer("cond_std", torch.ones(cond_dim))
        self.z_dim = cfg.z_dim
        self.encoder, self.decoder = build_encoder_decoder(cfg.arch, cfg.g_dim, cfg.nf, channels)
        self.predictor = Lstm(cfg.g_dim + cfg.z_dim + width, cfg.g_dim, cfg.rnn_size, cfg.predictor_rnn_layers)
        self.posterior_net = (GaussianLstm(cfg.g_dim, cfg.z_dim, cfg.rnn_size, cfg.posterior_rnn_layers)
                              if cfg.z_dim > 0 else None)
        self.prior_net = (GaussianLstm(cfg.g_dim, cfg.z_dim, cfg.rnn_size, cfg.prior_rnn_layers)
                          if cfg.prior == "learned" else None)
        if cfg.init == "svg":
            self.apply(svg_init)

    # --- one frame ------------------------------------------------------------------------
    def step(self, h: torch.Tensor, c_prev: torch.Tensor, hidden: dict[str, Hidden],
             h_target: torch.Tensor | None = None, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame t: the predictor's code for x_t (the decoder's input) and KL(q_t ‖ p_t).

        ``h`` encodes x_{t-1}, ``c_prev`` is c_{t-1}. Given ``h_target``, x_t's encoding, z_t comes from
        the posterior (training; generation's conditioning frames); without it, from the prior
        (generation's predicted frames), and the KL is 0. ``hidden`` is updated in place."""
        posterior = self.posterior(h_target, hidden, generator) if h_target is not None else None
        prior = self.prior(h, hidden, generator) if posterior is None or self.prior_net is not None else None
        if posterior is None:
            z, kld = prior[0], h.new_zeros((), dtype=torch.float32)
        else:
            z, kld = posterior[0], self.kl(posterior, prior)
        cond = c_prev[:, self.cond_columns].to(h.dtype)
        g, hidden["predictor"] = self.predictor(torch.cat([h, z, cond], 1), hidden["predictor"])
        return g, kld

    def posterior(self, h_target: torch.Tensor, hidden: dict[str, Hidden],
                  generator: torch.Generator | None = None) -> Gaussian:
        """q(z_t | x_<=t), fed the encoding of the frame being predicted."""
        if self.posterior_net is None:
            empty = h_target.new_zeros(h_target.shape[0], 0)
            return empty, empty, empty
        z, mu, logvar, hidden["posterior"] = self.posterior_net(h_target, hidden["posterior"], generator)
        return z, mu, logvar

    def prior(self, h_prev: torch.Tensor, hidden: dict[str, Hidden],
              generator: torch.Generator | None = None) -> Gaussian:
        """p(z_t | x_<t): the learned LSTM, or N(0, I) for the fixed prior."""
        if self.prior_net is not None:
            z, mu, logvar, hidden["prior"] = self.prior_net(h_prev, hidden["prior"], generator)
            return z, mu, logvar
        zeros = h_prev.new_zeros(h_prev.shape[0], self.z_dim)
        return torch.randn(zeros.shape, generator=generator, device=zeros.device, dtype=zeros.dtype), zeros, zeros

    def kl(self, posterior: Gaussian, prior: Gaussian | None) -> torch.Tensor:
        """KL(q ‖ p) of one frame: against the learned prior when there is one, else N(0, I)."""
        if self.z_dim == 0:
            return posterior[1].new_zeros((), dtype=torch.float32)
        return kl_gaussian(posterior[1], posterior[2], *(prior[1:] if prior is not None else ()))

    # --- the loss -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, c: torch.Tensor, beta: float, teacher_forcing: bool,
                step: str | None = None) -> Loss:
        """``(loss, mse, kld)`` of batch-major frames ``x [B,T,3,H,W]`` and conditions ``c [B,T,C]``,
        computed the way ``step`` (default ``cfg.step``) names."""
        x, c = x.transpose(0, 1), self.visible_condition(c.transpose(0, 1), self.cfg.n_past)
        if (step or self.cfg.step) == "reference":
            return self.reference_loss(x, c, beta, teacher_forcing)
        return self.batched_loss(x, c, beta, teacher_forcing, per_frame_bn=(step or self.cfg.step) == "exact")

    def reference_loss(self, x: torch.Tensor, c: torch.Tensor, beta: float, teacher_forcing: bool) -> Loss:
        """The lab's loop over time-major ``x [T,B,...]``, ``c [T,B,C]``: two encoder calls per frame."""
        hidden, n_past = self.init_hidden(x.shape[1], x.device), self.cfg.n_past
        loss = mse = kld = x.new_zeros((), dtype=torch.float32)
        x_pred, skip = x[0], None
        for i in range(1, len(x)):
            x_in = x[i - 1] if teacher_forcing or i - 1 < self.truth_inputs() else x_pred
            h, frame_skip = self.encoder(x_in)
            skip = frame_skip if self.updates_skip(i, n_past) else skip
            g, kl = self.step(h, c[i - 1], hidden, self.encoder(x[i])[0])
            x_pred, loss_t, mse_t = self.frame_loss(g, skip, x[i], kl, beta)
            loss, mse, kld = loss + loss_t, mse + mse_t, kld + kl
        return Loss(loss, mse, kld)

    def frame_loss(self, g: torch.Tensor, skip: list[torch.Tensor], x_t: torch.Tensor, kld: torch.Tensor,
                   beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Frame t of the reference loop: ``(x̂_t, MSE + β·KL, MSE)``, x̂_t the decoder's frame from the
        predictor's code ``g`` and the ``skip`` features, the MSE against the true frame ``x_t``."""
        x_pred = self.decoder(g, skip)
        mse = frame_mse(x_pred, x_t)
        return x_pred, mse + beta * kld, mse

    def batched_loss(self, x: torch.Tensor, c: torch.Tensor, beta: float, teacher_forcing: bool,
                     per_frame_bn: bool) -> Loss:
        """The reference's maths with each true frame encoded once (and, under teacher forcing, the
        decoder run once over all predictions, after the loop)."""
        T, B = x.shape[:2]
        h_all, skips = self.encode_all(x, per_frame_bn or not teacher_forcing)
        hidden = self.init_hidden(B, x.device)
        mse = kld = x.new_zeros((), dtype=torch.float32)
        codes, x_pred, skip = [], x[0], None
        for i in range(1, T):
            if teacher_forcing or i - 1 < self.truth_inputs():
                h, frame_skip = h_all[:, i - 1], [s[:, i - 1] for s in skips]
            else:  # the previous prediction, fed back: its own encoder call
                h, frame_skip = self.encoder(x_pred)
            skip = frame_skip if self.updates_skip(i, self.cfg.n_past) else skip
            g, kl = self.step(h, c[i - 1], hidden, h_all[:, i])
            kld = kld + kl
            if teacher_forcing:
                codes.append(g)
            else:  # decoded now: the prediction is the next frame's input
                x_pred = self.decoder(g, skip)
                mse = mse + frame_mse(x_pred, x[i])
        if teacher_forcing:
            x_hat = self.decode_all(torch.stack(codes, 1).flatten(0, 1), skips, per_frame_bn)
            # Σ_t of per-frame means = (T−1) × the mean over all predicted frames.
            mse = frame_mse(x_hat.view(B, T - 1, *x.shape[2:]), x.transpose(0, 1)[:, 1:]) * (T - 1)
        return Loss(mse + beta * kld, mse, kld)

    def encode_all(self, x: torch.Tensor, per_frame_bn: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Every frame of ``x [T,B,...]`` encoded in one call: ``h [B,T,dim]`` and skips ``[B,T,C,H,W]``.
        Frames go in sample-major (row b·T + t), the layout ``per_frame_batchnorm`` normalises per frame."""
        T, B = x.shape[:2]
        recompute = 2 if B * T > RECOMPUTE_ABOVE_FRAMES else 0
        with per_frame_batchnorm(self.encoder, T if per_frame_bn else 1, updates=T):
            h, skips = self.encoder(x.transpose(0, 1).reshape(-1, *x.shape[2:]), recompute=recompute)
        return h.view(B, T, -1), [s.view(B, T, *s.shape[1:]) for s in skips]

    def decode_all(self, g: torch.Tensor, skips: list[torch.Tensor], per_frame_bn: bool) -> torch.Tensor:
        """The codes of all predicted frames ``g [B*(T−1), dim]`` (sample-major) decoded in one call:
        frame i takes the skips of frame i−1 with ``last_frame_skip``, else of frame min(i−1, skip_source)."""
        T = skips[0].shape[1]
        with per_frame_batchnorm(self.decoder, T - 1 if per_frame_bn else 1, updates=T - 1):
            if self.cfg.last_frame_skip:
                return self.decoder(g, [s[:, :T - 1].flatten(0, 1) for s in skips])
            k = self.skip_source(self.cfg.n_past)
            skip_of = torch.tensor([min(i, k) for i in range(T - 1)], device=g.device)
            return self.decoder(g, [s[:, :k + 1] for s in skips], skip_of=skip_of)

    # --- generation -----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, x: torch.Tensor, c: torch.Tensor, n_past: int, n_future: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Frames n_past..n_past+n_future−1 of ``x [B,T,3,H,W]`` given ``c [B,T,C]``, ``[B,n_future,3,H,W]``:
        z from the posterior on the conditioning frames, from the prior after them, each prediction
        fed back as the next input. The model must be in eval mode."""
        x, c = x.transpose(0, 1), self.visible_condition(c.transpose(0, 1), n_past)
        hidden = self.init_hidden(x.shape[1], x.device)
        x_in, skip, preds = x[0], None, []
        for i in range(1, n_past + n_future):
            h, frame_skip = self.encoder(x_in)
            skip = frame_skip if self.updates_skip(i, n_past) else skip
            if i < n_past:  # a conditioning frame: it steps the LSTMs, the true frame comes next
                self.step(h, c[i - 1], hidden, self.encoder(x[i])[0], generator)
                x_in = x[i]
            else:
                x_in = self.predict_next(h, c[i - 1], hidden, skip, generator)
                preds.append(x_in)
        return torch.stack(preds, 1)

    def predict_next(self, h: torch.Tensor, c_prev: torch.Tensor, hidden: dict[str, Hidden],
                     skip: list[torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """One generated frame x̂_t from ``h``, the code of the frame fed back (x_{t-1}): z_t from the
        prior, the predictor, and the decoder with the ``skip`` features. ``hidden`` is updated in place."""
        return self.decoder(self.step(h, c_prev, hidden, None, generator)[0], skip)

    @torch.no_grad()
    def kl_per_frame(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """KL(q(z_t | x_<=t) ‖ p(z_t | x_<t)) of frames 1..T−1 along the true frames ``x [B,T,...]``, ``[T−1]``."""
        x, c = x.transpose(0, 1), self.visible_condition(c.transpose(0, 1), self.cfg.n_past)
        hidden = self.init_hidden(x.shape[1], x.device)
        return torch.stack([self.step(self.encoder(x[i - 1])[0], c[i - 1], hidden, self.encoder(x[i])[0])[1]
                            for i in range(1, len(x))])

    # --- what each loop asks ---------------------------------------------------------------
    def visible_condition(self, c: torch.Tensor, n_past: int) -> torch.Tensor:
        """Time-major conditions ``c [T,B,C]`` as the predictor may see them: standardised with ``cond_norm``;
        with ``actions+start`` the end-effector positions of frames n_past on are zeroed (after standardising:
        they read as the training mean), so the arm's future comes from the actions."""
        if self.cfg.cond_norm:
            c = (c - self.cond_mean) / self.cond_std
        if self.positions != "start":
            return c
        c = c.clone()
        c[n_past:, :, self.action_dim:] = 0
        return c

    def set_condition_stats(self, c: torch.Tensor) -> None:
        """``cond_norm``'s mean and std of each column of the training conditions ``c [..., C]``; a constant
        column keeps std 1, so that it reads as 0 rather than dividing by 0."""
        if not self.cfg.cond_norm:
            raise ValueError("set_condition_stats: this model reads raw conditions (cond_norm is off)")
        flat = c.reshape(-1, c.shape[-1]).double()
        std = flat.std(0)
        self.cond_mean.copy_(flat.mean(0))
        self.cond_std.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    def skip_source(self, n_past: int) -> int:
        """The frame whose skips the later frames take (without ``last_frame_skip``): x[n_past−2] with
        ``skip_frame='svg'``, the last conditioning frame x[n_past−1] with ``'last'``."""
        return n_past - 2 if self.cfg.skip_frame == "svg" else n_past - 1

    def updates_skip(self, i: int, n_past: int) -> bool:
        """Whether the input of step i (frame i−1) provides the skips from step i on."""
        return self.cfg.last_frame_skip or i - 1 <= self.skip_source(n_past)

    def truth_inputs(self) -> int:
        """How many first inputs are true frames in a step without teacher forcing: the conditioning
        frames (``tf_style='conditioned'``), or the first frame alone (Listing 2.7's ``'listing'``)."""
        return self.cfg.n_past if self.cfg.tf_style == "conditioned" else 1

    def init_hidden(self, batch_size: int, device: torch.device | str) -> dict[str, Hidden]:
        """Fresh LSTM states for one batch of sequences."""
        nets = {"predictor": self.predictor, "posterior": self.posterior_net, "prior": self.prior_net}
        return {name: net.init_hidden(batch_size, device) for name, net in nets.items() if net is not None}


def svg_init(m: nn.Module) -> None:
    """SVG's (and the lab template's) initialisation: conv and linear weights N(0, 0.02), BatchNorm
    weights N(1, 0.02), their biases 0; the LSTM cells keep PyTorch's."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module | None) -> int:
    """Parameters of ``module`` (0 for a part the model does not have)."""
    return sum(p.numel() for p in module.parameters()) if module is not None else 0
