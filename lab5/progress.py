"""Progress bars that refresh a bounded number of times, whatever the speed.

In a notebook a tqdm bar is an ipywidget, and every refresh sends comm messages on the
kernel's IOPub channel. By default tqdm refreshes whenever 0.1 s has passed, and
``set_postfix`` forces a refresh, so a bar refreshes about once per training step: a loop
shaped like the demo preset's training (six bars of 100 steps, a postfix per step) sends
about 900 messages; with these bars about 150 (tests/test_progress.py). JupyterLab reads
them as they come; nbval reads them only after the cell has finished, waiting at most 5 s
for each, and CI once failed 04_training with "Timeout of 5 seconds exceeded waiting for
output". Each bar here refreshes at most about ``REFRESHES`` times over its total, plus
once when it closes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

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
    return tqdm(iterable, total=total, **kwargs)
