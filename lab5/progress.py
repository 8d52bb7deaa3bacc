"""Progress bars as text, refreshing a bounded number of times, whatever the speed.

Text, not ipywidgets, in a notebook too: a widget bar is stored in a notebook file as its
first state (``epoch 1/6: 0%``), since the widget's later state lives in the browser; a
text bar is a stream whose last carriage return leaves its final state, in JupyterLab, in
a papermill output and in a committed notebook alike. In a Jupyter kernel the bars go to
stdout (a notebook shows stderr as warnings), elsewhere to stderr.

Each bar refreshes at most about ``REFRESHES`` times over its total, plus once when it
closes: by default tqdm refreshes whenever 0.1 s has passed, and ``set_postfix`` forces a
refresh, so a bar would refresh about once per training step, every refresh a message on
the kernel's IOPub channel; nbval reads them only after the cell has finished, waiting at
most 5 s for each, and a backlog of them once timed out 04_training in CI.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.std import tqdm

REFRESHES = 25


def progress_bar(iterable: Iterable[Any] | None = None, *, total: float | None = None, **kwargs: Any) -> tqdm:
    """``tqdm.auto.tqdm(iterable, total=..., **kwargs)`` refreshing every ``total / REFRESHES``
    steps (and at least 0.5 s apart). Without a known total it refreshes at most every 2 s.
    Use ``set_postfix(..., refresh=False)``: the next refresh shows it."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if total:
        # A fixed miniters turns off tqdm's dynamic one; an infinite maxinterval stops its
        # monitor thread from resetting miniters to 1 when steps are slow (lab preset, CPU).
        kwargs = {"miniters": max(1, math.ceil(total / REFRESHES)), "mininterval": 0.5,
                  "maxinterval": math.inf, **kwargs}
    else:
        kwargs = {"mininterval": 2.0, **kwargs}
    kwargs.setdefault("file", sys.stdout if "ipykernel" in sys.modules else sys.stderr)
    return tqdm(iterable, total=total, **kwargs)


def write(message: str) -> None:
    """Print a line between the bars (``tqdm.write``: the bars are redrawn below it)."""
    tqdm.write(message, file=sys.stdout)
