"""Progress bars refresh a bounded number of times (lab5.files).

The kernel test runs a training-shaped loop (600 steps, a postfix per step, six bars) in a
real Jupyter kernel, where plain ``tqdm.auto`` draws ipywidgets and lab5's bars are text, and
counts the IOPub messages the cell sends: nbval reads them only after the cell ends, 5 s per message at most, and a backlog of
about 1,000 timed out 04_training in CI. Plain tqdm is measured side by side, so the test
shows the bound matters, not only that it holds.
"""

from __future__ import annotations

import io
import queue

import pytest

from lab5 import files
from lab5.files import progress_bar

LOOP = """
import time
from tqdm.auto import tqdm
from lab5.files import progress_bar
for epoch in range(6):
    bar = {make}(range(100), desc=f"epoch {{epoch + 1}}/6", leave=False)
    for i in bar:
        time.sleep(0.01)
        bar.set_postfix(loss=f"{{1 / (i + 1):.4f}}"{refresh})
    bar.close()
    tqdm.write(f"epoch {{epoch + 1}} done")
"""


def _iopub(kc, code: str) -> list[dict]:
    """The IOPub messages executing ``code`` sends, through the kernel's final idle."""
    msg_id = kc.execute(code)
    reply = kc.get_shell_msg(timeout=120)
    assert reply["content"]["status"] == "ok", reply["content"]
    msgs = []
    while True:
        msg = kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        msgs.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return msgs


def _iopub_messages(kc, code: str) -> int:
    return len(_iopub(kc, code))


def test_text_bar_refreshes_about_refreshes_times():
    out = io.StringIO()
    bar = progress_bar(range(1000), desc="x", file=out, mininterval=0)
    for i in bar:
        bar.set_postfix(i=i, refresh=False)
    bar.close()
    draws = out.getvalue().count("\r")
    assert 2 <= draws <= files.REFRESHES + 3, draws


def test_unknown_total_still_makes_a_bar():
    out = io.StringIO()
    bar = progress_bar(iter(range(5)), desc="x", file=out)
    assert list(bar) == list(range(5))
    bar.close()
    assert "5it" in out.getvalue()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_training_loop_in_a_kernel_sends_a_bounded_number_of_messages():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=120)
    try:
        # Drain the start-up chatter so that only the cells' messages are counted.
        while True:
            try:
                kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                break
        ours = _iopub_messages(kc, LOOP.format(make="progress_bar", refresh=", refresh=False"))
        plain = _iopub_messages(kc, LOOP.format(make="tqdm", refresh=""))
        # A stored notebook keeps what a bar streamed: text on stdout, ending in its final state.
        kept = _iopub(kc, "from lab5.files import progress_bar\nfor _ in progress_bar(range(40), desc='gen'): pass")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    # Each bar: its widgets (about 10 messages) and up to REFRESHES refreshes of 2-3 messages.
    print("iopub messages: progress.bar", ours, "plain tqdm", plain)
    assert ours <= 6 * (12 + 3 * files.REFRESHES), ours
    assert plain > 3 * ours, (plain, ours)
    assert not [m for m in kept if m["msg_type"].startswith("comm")]
    text = "".join(m["content"]["text"] for m in kept if m["msg_type"] == "stream"
                   and m["content"]["name"] == "stdout")
    assert text.rstrip().split("\r")[-1].startswith("gen: 100%") and "40/40" in text
