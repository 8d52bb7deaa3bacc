"""lab5: a workbook for action-conditioned video prediction with a conditional VAE + LSTM.

The package holds every piece of logic the notebooks show: data (``lab5.data``),
models (``lab5.models``, which compute their own loss), the training ``Solver``, evaluation
and plotting. Notebooks only call into it.
"""

__version__ = "1.0.0"
