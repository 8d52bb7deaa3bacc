"""The loss terms: analytic KL against Monte Carlo, and the per-frame MSE."""

from __future__ import annotations

import math

import pytest
import torch

from lab5.models.cvae import frame_mse, kl_gaussian

N_SAMPLES = 100_000


def _log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, e^logvar), summed over the last dimension."""
    return (-0.5 * (math.log(2 * math.pi) + logvar + (z - mu) ** 2 / logvar.exp())).sum(-1)


def _monte_carlo_kl(mu_q, logvar_q, mu_p, logvar_p) -> tuple[float, float]:
    """E_q[log q(z) − log p(z)] over N_SAMPLES draws, and its standard error."""
    gen = torch.Generator().manual_seed(0)
    eps = torch.randn(N_SAMPLES, mu_q.shape[-1], generator=gen, dtype=torch.float64)
    z = mu_q + eps * torch.exp(0.5 * logvar_q)
    terms = _log_normal(z, mu_q, logvar_q) - _log_normal(z, mu_p, logvar_p)
    return float(terms.mean()), float(terms.std() / math.sqrt(N_SAMPLES))


@pytest.mark.parametrize("prior", ["fixed", "learned"])
def test_kl_matches_monte_carlo(prior: str) -> None:
    gen = torch.Generator().manual_seed(1)
    d = 6
    mu_q = torch.randn(1, d, generator=gen, dtype=torch.float64)
    logvar_q = torch.randn(1, d, generator=gen, dtype=torch.float64) * 0.5
    if prior == "fixed":
        mu_p, logvar_p = torch.zeros(1, d, dtype=torch.float64), torch.zeros(1, d, dtype=torch.float64)
        analytic = float(kl_gaussian(mu_q, logvar_q))
    else:
        mu_p = torch.randn(1, d, generator=gen, dtype=torch.float64)
        logvar_p = torch.randn(1, d, generator=gen, dtype=torch.float64) * 0.5
        analytic = float(kl_gaussian(mu_q, logvar_q, mu_p, logvar_p))
    estimate, stderr = _monte_carlo_kl(mu_q, logvar_q, mu_p, logvar_p)
    assert analytic > 0.5  # a non-trivial divergence
    assert abs(analytic - estimate) < 4 * stderr, (analytic, estimate, stderr)


def test_kl_closed_form_values() -> None:
    zeros = torch.zeros(2, 3)
    assert kl_gaussian(zeros, zeros).item() == 0.0  # q == p
    # KL(N(1, 1) || N(0, 1)) = 1/2 per dimension; 3 dimensions; summed, divided by batch size 2.
    assert kl_gaussian(torch.ones(2, 3), zeros).item() == pytest.approx(2 * 3 * 0.5 / 2)
    # KL(N(0, e^2) || N(0, 1)) = (e^2 − 1 − 2) / 2 per dimension.
    assert kl_gaussian(zeros[:1, :1], torch.full((1, 1), 2.0)).item() == pytest.approx((math.exp(2) - 3) / 2)
    # Learned prior equal to q: zero.
    mu, logvar = torch.randn(4, 5), torch.randn(4, 5)
    assert kl_gaussian(mu, logvar, mu, logvar).item() == pytest.approx(0.0, abs=1e-6)


def test_kl_is_divided_by_batch_size() -> None:
    mu, logvar = torch.randn(1, 4), torch.randn(1, 4)
    one = kl_gaussian(mu, logvar)
    assert kl_gaussian(mu.repeat(5, 1), logvar.repeat(5, 1)).item() == pytest.approx(one.item(), rel=1e-6)
    assert one.item() > 0


def test_kl_gradient_flows_and_fp32_under_bf16() -> None:
    mu = torch.randn(3, 4, dtype=torch.bfloat16, requires_grad=True)
    kl = kl_gaussian(mu, torch.zeros(3, 4, dtype=torch.bfloat16))
    assert kl.dtype == torch.float32
    kl.backward()
    assert torch.allclose(mu.grad.float(), mu.detach().float() / 3, rtol=1e-2)  # d/dmu (mu^2/2)/B


def test_frame_mse() -> None:
    x = torch.zeros(2, 3, 4, 4)
    x_hat = torch.full_like(x, 0.5)
    assert frame_mse(x_hat, x).item() == 0.25
    assert frame_mse(x_hat.bfloat16(), x.bfloat16()).dtype == torch.float32
