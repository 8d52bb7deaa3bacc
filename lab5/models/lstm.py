"""The recurrent parts: ``Lstm`` (frame predictor) and ``GaussianLstm`` (posterior / learned prior).

Unlike the report's listings, hidden state is not stored at construction: it is
created per batch by ``init_hidden(batch_size, device)`` and threaded through
``forward`` explicitly, so a short last batch, DDP and evaluation with another batch
size all just work.
"""

from __future__ import annotations

import torch
from torch import nn

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
