"""Progress bars as text, refreshing about ``REFRESHES`` times over their total whatever the speed.

Text, not ipywidgets: a notebook file keeps a widget bar's first state (the later ones live in the
browser) but a text bar's final one. Few refreshes: each is a message on a kernel's IOPub channel.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.std import tqdm

REFRESHES = 25


def progress_bar(iterable: Iterable[Any] | None = None, *, total: float | None = None, **kwargs: Any) -> tqdm:
    """A text ``tqdm(iterable, total=..., **kwargs)`` refreshing every ``total / REFRESHES`` steps, at
    least 0.5 s apart (at most every 2 s without a known total), and once when it closes.
    Use ``set_postfix(..., refresh=False)`` (by default it redraws at once): the next refresh shows it."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if total:
        # A fixed miniters turns off tqdm's dynamic one; an infinite maxinterval stops its
        # monitor thread from resetting miniters to 1 when steps are slow (lab preset, CPU).
        kwargs = {"miniters": max(1, math.ceil(total / REFRESHES)), "mininterval": 0.5,
                  "maxinterval": math.inf, **kwargs}
    else:
        kwargs = {"mininterval": 2.0, **kwargs}
    # In a Jupyter kernel, stdout: a notebook shows stderr as warnings.
    kwargs.setdefault("file", sys.stdout if "ipykernel" in sys.modules else sys.stderr)
    return tqdm(iterable, total=total, **kwargs)


def write(message: str) -> None:
    """Print a line between the bars (``tqdm.write``: the bars are redrawn below it)."""
    tqdm.write(message, file=sys.stdout)
