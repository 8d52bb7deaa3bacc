"""Numerical checks of the CVAE derivation that ``notebooks/01_derivation`` walks through: each computes one
quantity two ways, one of them lab5's own code (``kl_gaussian``, ``reparameterize``, the loss of ``CVAE``), and
returns plain numbers for the notebook to print."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.distributions import Normal

from lab5.config import get_preset
from lab5.models.cvae import CVAE, frame_mse, kl_gaussian
from lab5.models.networks import reparameterize


def _normal_logpdf(x: torch.Tensor, mean: torch.Tensor | float, var: torch.Tensor | float) -> torch.Tensor:
    var = torch.as_tensor(var, dtype=torch.float64)
    return -0.5 * (torch.log(2 * math.pi * var) + (x - mean) ** 2 / var)


def toy_elbo(x: float = 1.5, w: float = 2.0, noise: float = 0.5, q_mu: float | None = None,
             q_var: float | None = None, n: int = 200_000, seed: int = 0) -> dict[str, float]:
    """For ``z ~ N(0,1), x|z ~ N(w·z, noise²)`` and q(z) = N(q_mu, q_var) (default: the exact posterior): log p(x),
    the ELBO analytically and by Monte Carlo, the gap (= KL(q ‖ p(z|x))) and the report's eq. 1.1 value (+KL)."""
    post_var = 1.0 / (1.0 + w * w / noise**2)
    post_mu = post_var * w * x / noise**2
    q_mu, q_var = post_mu if q_mu is None else q_mu, post_var if q_var is None else q_var
    t = lambda v: torch.tensor([[float(v)]], dtype=torch.float64)  # noqa: E731  [batch 1, z 1]
    x_t = torch.tensor(x, dtype=torch.float64)
    log_px = float(_normal_logpdf(x_t, 0.0, w * w + noise**2))
    # E_q log p(x|z) in closed form: E[(x − w z)²] = (x − w·q_mu)² + w²·q_var.
    expected_loglik = -0.5 * (math.log(2 * math.pi * noise**2) + ((x - w * q_mu) ** 2 + w * w * q_var) / noise**2)
    mu, lv = t(q_mu), t(math.log(q_var))
    kl_prior = float(kl_gaussian(mu, lv))                                # KL(q ‖ N(0,1))
    kl_post = float(kl_gaussian(mu, lv, t(post_mu), t(math.log(post_var))))
    z = reparameterize(mu.expand(n, 1), lv.expand(n, 1), torch.Generator().manual_seed(seed))[:, 0]
    # log p(x,z) − log q(z) per sample: its mean under q is the ELBO.
    terms = _normal_logpdf(x_t, w * z, noise**2) + _normal_logpdf(z, 0.0, 1.0) - _normal_logpdf(z, q_mu, q_var)
    elbo = expected_loglik - kl_prior
    return {"log p(x)": log_px, "ELBO": elbo, "ELBO (Monte Carlo)": float(terms.mean()),
            "MC standard error": float(terms.std() / math.sqrt(n)), "log p(x) - ELBO": log_px - elbo,
            "KL(q || p(z|x))": kl_post, "report eq. 1.1 (+KL)": expected_loglik + kl_prior}


def kl_check(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor | None = None,
             logvar_p: torch.Tensor | None = None, n: int = 200_000, seed: int = 0) -> dict[str, float]:
    """``kl_gaussian`` of ``[B, Z]`` Gaussians (summed over z, batch mean) against Monte Carlo, and the ELBO's term
    E_q[log p(z) − log q(z)] = −KL; the prior is N(0, I) when ``mu_p`` is None, else a diagonal Gaussian."""
    mu_p = torch.zeros_like(mu_q) if mu_p is None else mu_p
    logvar_p = torch.zeros_like(logvar_q) if logvar_p is None else logvar_p
    analytic = float(kl_gaussian(mu_q, logvar_q, mu_p, logvar_p))
    B, Z = mu_q.shape
    z = reparameterize(mu_q.expand(n, B, Z), logvar_q.expand(n, B, Z), torch.Generator().manual_seed(seed))
    log_q = Normal(mu_q, torch.exp(0.5 * logvar_q)).log_prob(z).sum(-1)   # [n, B]
    log_p = Normal(mu_p, torch.exp(0.5 * logvar_p)).log_prob(z).sum(-1)
    per_sample = (log_q - log_p).mean(1)                                    # batch mean, [n]
    return {"analytic KL": analytic, "Monte-Carlo KL": float(per_sample.mean()),
            "MC standard error": float(per_sample.std() / math.sqrt(n)),
            "E_q[log p - log q]": float(-per_sample.mean())}


def gradient_check(mu: float = 0.5, logvar: float = -0.4, n: int = 100_000,
                   seed: int = 0) -> dict[str, dict[str, float]]:
    """Gradients of E_{z~N(mu, e^logvar)}[z²] in (mu, logvar): exact, reparameterised (through ``reparameterize``)
    and score function (REINFORCE), each estimate with its standard error from per-sample gradients."""
    m, lv, m2, lv2 = (torch.full((n,), v, dtype=torch.float64, requires_grad=True) for v in (mu, logvar) * 2)
    z = reparameterize(m, lv, torch.Generator().manual_seed(seed))
    g_mu, g_lv = torch.autograd.grad((z**2).sum(), (m, lv))        # per-sample pathwise gradients
    zd = z.detach()
    log_q = Normal(m2, torch.exp(0.5 * lv2)).log_prob(zd)
    s_mu, s_lv = torch.autograd.grad((zd**2 * log_q).sum(), (m2, lv2))  # f(z)·∇log q(z) per sample
    out = {"exact": {"d/d mu": 2 * mu, "d/d logvar": math.exp(logvar)}}
    for name, (a, b) in (("reparameterised", (g_mu, g_lv)), ("score function", (s_mu, s_lv))):
        out[name] = {"d/d mu": float(a.mean()), "d/d logvar": float(b.mean()),
                     "se mu": float(a.std() / math.sqrt(n)), "se logvar": float(b.std() / math.sqrt(n))}
    return out


def likelihood_vs_mse(dim: int = 3 * 64 * 64, sigma: float = 0.1, seed: int = 0) -> dict[str, float]:
    """−log N(x; x̂, σ²I) against ``dim/(2σ²)·MSE + dim/2·log(2πσ²)`` for random frames in [0, 1]:
    a fixed-variance Gaussian likelihood is MSE up to scale and constant."""
    gen = torch.Generator().manual_seed(seed)
    x, x_hat = torch.rand(dim, generator=gen), torch.rand(dim, generator=gen)
    nll = float(-Normal(x_hat.double(), sigma).log_prob(x.double()).sum())
    mse = float(frame_mse(x_hat, x))
    return {"-log N(x; x_hat, sigma^2 I)": nll,
            "D/(2 sigma^2) MSE + D/2 log(2 pi sigma^2)": dim / (2 * sigma**2) * mse
            + dim / 2 * math.log(2 * math.pi * sigma**2), "MSE": mse}


def equivalent_sigma(beta: float, dim: int = 3 * 64 * 64) -> float:
    """The pixel noise σ for which MSE (mean over D pixels) + β·KL (sum over z) is proportional to the negative ELBO:
    MSE + β·KL = (2σ²/D)·(‖x − x̂‖²/(2σ²) + KL)  when  β = 2σ²/D."""
    return math.sqrt(beta * dim / 2)


def loss_decomposition(seed: int = 0) -> dict[str, float]:
    """lab5's training loss is Σ_t MSE_t + β·Σ_t KL_t: the step at β = 0 and β = 0.5 on a tiny model."""
    cfg = get_preset("smoke")
    torch.manual_seed(seed)
    model = CVAE(cfg, cond_dim=7)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(cfg.n_frames, 4, 3, 64, 64, generator=gen)   # time-major [T, B, 3, 64, 64]
    c = torch.randn(cfg.n_frames, 4, 7, generator=gen)
    out = {}
    for beta in (0.0, 0.5):
        torch.manual_seed(seed)   # the same posterior noise for both
        with torch.no_grad():
            r = model(x.transpose(0, 1), c.transpose(0, 1), beta, True, step="exact")
        out[beta] = (float(r.loss), float(r.mse), float(r.kld))
    (l0, m0, _), (l1, _, k1) = out[0.0], out[0.5]
    return {"loss(beta=0)": l0, "sum_t MSE_t": m0, "loss(beta=0.5)": l1, "sum_t KL_t": k1,
            "(loss(0.5) - loss(0)) / 0.5": (l1 - l0) / 0.5, "frames predicted": cfg.n_frames - 1}


def per_frame_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor) -> dict[str, Any]:
    """KL of a sequence with factorised q and p is the sum of the per-frame KLs: for ``[T, B, Z]`` ``mu_q``/
    ``logvar_q``, one KL over the joint (T·Z)-dimensional Gaussian against Σ_t ``kl_gaussian``."""
    T, B, Z = mu_q.shape
    joint = kl_gaussian(mu_q.permute(1, 0, 2).reshape(B, T * Z), logvar_q.permute(1, 0, 2).reshape(B, T * Z))
    summed = sum(kl_gaussian(mu_q[t], logvar_q[t]) for t in range(T))
    return {"KL of the whole sequence": float(joint), "sum of per-frame KLs": float(summed)}
