"""Loss terms of the per-sequence objective: Σ_t MSE(x̂_t, x_t) + β · Σ_t KL(q ‖ p).

The ELBO is E_q[log p(x|z)] − KL(q ‖ p) (the report's eq. 1.1 writes + KL: a sign error).
With a fixed-variance Gaussian likelihood, −log p(x|z) is MSE up to scale and constant, so
minimising MSE + β·KL maximises a β-weighted ELBO.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
