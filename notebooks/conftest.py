"""nbval settings for the committed notebooks.

nbval waits at most 5 s for each output message after a cell's reply (``output_timeout``,
hard-coded, not an option: nbval issues #136, #231). A training cell's messages can arrive
later than that on a loaded CI machine, which failed 04_training once ("Timeout of 5 seconds
exceeded waiting for output"). Progress bars now send few messages (lab5.files); this
gives the remaining ones a minute. A cell that really hangs still fails, at
``--nbval-cell-timeout``.
"""

from __future__ import annotations

import pytest

OUTPUT_TIMEOUT_S = 60


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if hasattr(item, "output_timeout"):  # an nbval cell
        item.output_timeout = OUTPUT_TIMEOUT_S
