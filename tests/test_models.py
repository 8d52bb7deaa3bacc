"""Shapes and contracts of every module: encoders/decoders, the LSTMs, the CVAE's per-frame operations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lab5.config import get_preset
from lab5.models.cvae import CVAE, count_parameters
from lab5.models.networks import (DcganDecoder, DcganEncoder, VggDecoder, VggEncoder,
                                  build_encoder_decoder)
from lab5.models.networks import GaussianLstm, Lstm

COND = 7  # 4 action columns + 3 end-effector position columns, as in BAIR


def _smoke(**kw):
    return get_preset("smoke").replace(**kw)


def test_vgg_encoder_decoder_shapes() -> None:
    torch.manual_seed(0)
    enc, dec = VggEncoder(128), VggDecoder(128)
    x = torch.rand(2, 3, 64, 64)
    h, skips = enc(x)
    assert h.shape == (2, 128)
    assert [tuple(s.shape) for s in skips] == [(2, 64, 64, 64), (2, 128, 32, 32), (2, 256, 16, 16), (2, 512, 8, 8)]
    assert h.abs().max() <= 1  # Tanh head
    out = dec(h, skips)
    assert out.shape == (2, 3, 64, 64)
    assert 0 <= out.min() and out.max() <= 1  # Sigmoid head
    # The report's Listing 2.1 layer for layer: 2 + 2 + 3 + 3 VggLayers (3x3 conv) and a 4x4 conv.
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert [m.kernel_size for m in convs] == [(3, 3)] * 10 + [(4, 4)]
    assert [m.out_channels for m in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 128]
    slopes = {m.negative_slope for m in enc.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.2}
    assert sum(isinstance(m, nn.BatchNorm2d) for m in enc.modules()) == 11


@pytest.mark.parametrize("nf", [8, 16])
def test_dcgan_encoder_decoder_shapes(nf: int) -> None:
    enc, dec = DcganEncoder(32, nf), DcganDecoder(32, nf)
    h, skips = enc(torch.rand(2, 3, 64, 64))
    assert h.shape == (2, 32)
    assert [tuple(s.shape) for s in skips] == [(2, nf, 32, 32), (2, 2 * nf, 16, 16), (2, 4 * nf, 8, 8),
                                               (2, 8 * nf, 4, 4)]
    out = dec(h, skips)
    assert out.shape == (2, 3, 64, 64) and 0 <= out.min() and out.max() <= 1


def test_build_encoder_decoder_rejects_unknown_arch() -> None:
    assert isinstance(build_encoder_decoder("dcgan64", 16, 8)[0], DcganEncoder)
    with pytest.raises(ValueError, match="resnet"):
        build_encoder_decoder("resnet", 16)


@pytest.mark.parametrize("layers", [1, 2])
def test_lstm_shapes(layers: int) -> None:
    lstm = Lstm(input_size=20, output_size=12, hidden_size=16, num_layers=layers)
    hidden = lstm.init_hidden(3, "cpu")
    assert len(hidden) == layers and all(h.shape == c.shape == (3, 16) for h, c in hidden)
    out, hidden2 = lstm(torch.randn(3, 20), hidden)
    assert out.shape == (3, 12) and out.abs().max() <= 1  # Linear -> BatchNorm1d -> Tanh
    assert len(hidden2) == layers and all(h.shape == (3, 16) for h, _ in hidden2)
    assert isinstance(lstm.output[1], nn.BatchNorm1d)


def test_gaussian_lstm_shapes_and_generator() -> None:
    net = GaussianLstm(input_size=10, output_size=4, hidden_size=8, num_layers=2)
    x = torch.randn(5, 10)
    z, mu, logvar, hidden = net(x, net.init_hidden(5, "cpu"))
    assert z.shape == mu.shape == logvar.shape == (5, 4) and len(hidden) == 2
    draws = [net(x, net.init_hidden(5, "cpu"), torch.Generator().manual_seed(s))[0] for s in (1, 1, 2)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    # z = mu + sigma * eps with the generator's eps.
    eps = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(draws[0], mu + eps * torch.exp(0.5 * logvar))


@pytest.mark.parametrize("prior, z_dim", [("fixed", 4), ("learned", 4), ("none", 0)])
def test_cvae_per_frame_operations(prior: str, z_dim: int) -> None:
    cfg = _smoke(prior=prior, z_dim=z_dim, predictor_rnn_layers=2)
    model = CVAE(cfg, COND)
    assert (model.prior_net is not None) == (prior == "learned")
    assert (model.posterior_net is not None) == (z_dim > 0)
    B = 3
    hidden = model.init_hidden(B, "cpu")
    assert set(hidden) == {"predictor", *(["posterior"] if z_dim else []), *(["prior"] if prior == "learned" else [])}
    h, skips = model.encoder(torch.rand(B, 3, 64, 64))
    assert h.shape == (B, cfg.g_dim)
    z, mu, logvar = model.posterior(h, hidden)
    assert z.shape == mu.shape == logvar.shape == (B, z_dim)
    zp, mu_p, logvar_p = model.prior(h, hidden)
    assert zp.shape == mu_p.shape == logvar_p.shape == (B, z_dim)
    if prior == "fixed":
        assert torch.equal(mu_p, torch.zeros(B, z_dim)) and torch.equal(logvar_p, torch.zeros(B, z_dim))
    g, kl = model.step(h, torch.randn(B, COND), model.init_hidden(B, "cpu"), h_target=h)
    assert model.decoder(g, skips).shape == (B, 3, 64, 64) and kl.shape == ()
    assert (float(kl.detach()) > 0) == (z_dim > 0)
    assert model.predictor.embed.in_features == cfg.g_dim + z_dim + COND  # [h_{t-1}, z_t, c_{t-1}]


def test_cvae_needs_64_pixel_frames() -> None:
    with pytest.raises(ValueError, match="64x64"):
        CVAE(_smoke(), COND, image_size=32)


def test_hidden_state_is_per_batch() -> None:
    """The same model trains and generates with batch 3, then batch 5 (the report's fixed-size
    hidden state breaks on a short last batch)."""
    cfg = _smoke(prior="learned")
    torch.manual_seed(0)
    model = CVAE(cfg, COND)
    for B in (3, 5):
        x, c = torch.rand(B, cfg.n_frames, 3, 64, 64), torch.randn(B, cfg.n_frames, COND)
        model.train()
        out = model(x, c, beta=1.0, teacher_forcing=False)
        out.loss.backward()
        assert torch.isfinite(out.loss)
        model.eval()
        assert model.generate(x, c, cfg.n_past, cfg.n_future).shape == (B, cfg.n_future, 3, 64, 64)
        hidden = model.init_hidden(B, "cpu")
        assert all(h.shape[0] == B for net in hidden.values() for pair in net for h in pair)


def test_lab_model_size() -> None:
    """The lab preset builds the report's VGG64 model (pins the parameter count)."""
    model = CVAE(get_preset("lab"), COND)
    assert isinstance(model.encoder, VggEncoder) and isinstance(model.decoder, VggDecoder)
    assert model.prior_net is None and len(model.predictor.lstm) == 2 and len(model.posterior_net.lstm) == 1
    assert model.posterior_net.mu_net.out_features == 64
    # predictor: embed (128+64+7)->256, 2 LSTMCells of 256, Linear 256->128, BatchNorm1d(128)
    assert count_parameters(model.predictor) == 199 * 256 + 256 + 2 * (4 * 256 * 512 + 8 * 256) + 256 * 128 + 128 + 256
    # posterior: embed 128->256, 1 LSTMCell, mu and logvar heads 256->64
    assert count_parameters(model.posterior_net) == 128 * 256 + 256 + 4 * 256 * 512 + 8 * 256 + 2 * (256 * 64 + 64)
    assert (count_parameters(model.encoder), count_parameters(model.decoder)) == (8_689_600, 11_822_659)


@pytest.mark.parametrize("condition,seen", [("actions+positions", 7), ("actions", 4), ("none", 0)])
def test_condition_picks_the_columns_the_predictor_sees(condition: str, seen: int) -> None:
    cfg = _smoke(condition=condition)
    torch.manual_seed(0)
    model = CVAE(cfg, COND, action_dim=4).eval()
    assert model.predictor.embed.in_features == cfg.g_dim + cfg.z_dim + seen
    x, c = torch.rand(2, cfg.n_frames, 3, 64, 64), torch.randn(2, cfg.n_frames, COND)

    def run(cond: torch.Tensor) -> torch.Tensor:
        return model.generate(x, cond, cfg.n_past, cfg.n_future, torch.Generator().manual_seed(0))

    pred = run(c)
    other_positions, other_actions = c.clone(), c.clone()
    other_positions[..., 4:] += 1
    other_actions[..., :4] += 1
    assert torch.equal(pred, run(other_positions)) == (seen < 7)   # positions matter only when seen
    assert torch.equal(pred, run(other_actions)) == (seen == 0)     # actions matter unless action-free


def test_cond_norm_is_the_raw_model_with_rescaled_input_weights() -> None:
    """A cond_norm model reads (c − mean) / std: the predictor's input layer computes what a raw model's
    computes with its condition weights divided by std and its bias shifted by −W·mean/std."""
    torch.manual_seed(0)
    normed = CVAE(_smoke(cond_norm=True), COND, action_dim=4).eval()
    n_past, T = normed.cfg.n_past, normed.cfg.n_frames
    c = torch.randn(T, 3, COND) * torch.tensor([0.03, 0.04, 1, 0.6, 0.1, 0.13, 0.03]) \
        + torch.tensor([0.0, 0.0, 0.3, 0.2, 0.6, 0.0, 0.2])  # time-major, BAIR-like scales
    normed.set_condition_stats(torch.cat([c, c.flip(0) * 1.1]))
    raw = CVAE(_smoke(), COND, action_dim=4).eval()
    state = {k: v.clone() for k, v in normed.state_dict().items() if not k.startswith("cond_")}
    g_z = normed.cfg.g_dim + normed.cfg.z_dim
    w, mean, std = state["predictor.embed.weight"], normed.cond_mean, normed.cond_std
    state["predictor.embed.bias"] = state["predictor.embed.bias"] - (w[:, g_z:] * (mean / std)).sum(1)
    state["predictor.embed.weight"] = torch.cat([w[:, :g_z], w[:, g_z:] / std], 1)
    raw.load_state_dict(state)
    hz = torch.randn(3, g_z)

    @torch.no_grad()
    def embed(model: CVAE, cond: torch.Tensor) -> torch.Tensor:
        return torch.stack([model.predictor.embed(torch.cat([hz, ct], 1))
                            for ct in model.visible_condition(cond, n_past)])

    torch.testing.assert_close(embed(normed, c), embed(raw, c), atol=1e-5, rtol=1e-5)
    # Not vacuous: the same weights reading the raw numbers (cond_norm off) compute something else ...
    same = CVAE(_smoke(), COND, action_dim=4).eval()
    same.load_state_dict({k: v for k, v in normed.state_dict().items() if not k.startswith("cond_")})
    assert (embed(normed, c) - embed(same, c)).abs().max() > 0.1
    # ... and a pixel's move of the arm (0.0125 m along x) moves their input layer 1/std times less.
    shifted = c.clone()
    shifted[..., 4] += 0.0125
    moved = [float((embed(m, shifted) - embed(m, c)).abs().max()) for m in (normed, same)]
    assert moved[0] == pytest.approx(moved[1] / float(normed.cond_std[4]), rel=1e-3)


def test_cond_norm_statistics_standardise_each_column_and_keep_a_constant_one() -> None:
    model = CVAE(_smoke(cond_norm=True), COND, action_dim=4)
    c = torch.randn(5, 10, COND, dtype=torch.float64) * torch.arange(1.0, 8.0, dtype=torch.float64) + 3
    c[..., 2] = 4.0  # a constant column (BAIR's closure may never change in a split)
    model.set_condition_stats(c)
    seen = model.visible_condition(c.float(), 2).reshape(-1, COND).double()
    torch.testing.assert_close(seen.mean(0), torch.zeros(COND, dtype=torch.float64), atol=1e-5, rtol=0)
    std = seen.std(0)
    torch.testing.assert_close(std[[0, 1, 3, 4, 5, 6]], torch.ones(6, dtype=torch.float64), atol=1e-5, rtol=0)
    assert model.cond_std[2] == 1 and std[2] == 0  # no division by zero: the constant reads as 0
    start = CVAE(_smoke(cond_norm=True, condition="actions+start"), COND, action_dim=4)
    start.set_condition_stats(c)
    later = start.visible_condition(c.float().transpose(0, 1), 2)[2:]  # time-major, frames 2 on
    # Positions hidden after standardising; actions (the constant column 2 aside) still read.
    assert torch.all(later[..., 4:] == 0) and torch.all(later[..., [0, 1, 3]] != 0)
    assert set(model.state_dict()) >= {"cond_mean", "cond_std"}
    assert "cond_mean" not in CVAE(_smoke(), COND, action_dim=4).state_dict()  # raw models keep their keys
