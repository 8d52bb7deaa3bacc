"""The players' stored outputs: a display bundle that shows a still view where the widget cannot render (an untrusted
notebook), and widget state pruned to what the outputs show (tests/test_browser.py opens the stored 05)."""

from __future__ import annotations

import base64
import copy
import io

import nbformat
import pytest
import torch
from PIL import Image

from lab5 import viz
from lab5 import workbook as wb

pytest.importorskip("ipywidgets")


def _bundle(box) -> dict:
    from IPython.core.formatters import DisplayFormatter  # what a kernel sends for display(box)
    data, _ = DisplayFormatter().format(box)
    return data


@pytest.mark.parametrize("player", ["frame", "sample"])
def test_the_bundle_holds_a_still_of_a_predicted_frame_and_says_what_it_is(player):
    n_past, frames, samples = 2, 12, 4
    gen = torch.Generator().manual_seed(0)
    truth, draws = torch.rand(frames, 3, 64, 64, generator=gen), torch.rand(samples, frames, 3, 64, 64, generator=gen)
    box = viz.frame_player(truth, draws, n_past) if player == "frame" else viz.sample_player(truth, draws, n_past)
    controls, caption, image = box.children
    slider = controls.children[1]
    assert n_past <= slider.value < frames and f"t = {slider.value}" in caption.value   # opens on a prediction
    data = _bundle(box)
    assert set(data) == {"text/plain", "image/png", wb.WIDGET_VIEW}
    assert data[wb.WIDGET_VIEW]["model_id"] == box.model_id
    assert data["text/plain"].startswith(f"{player} player (") and "run the cell" in data["text/plain"]
    assert "VBox(" not in data["text/plain"]
    still = Image.open(io.BytesIO(base64.b64decode(data["image/png"])))   # base64 text, as IPython stores a PNG
    widget_view = Image.open(io.BytesIO(image.value))
    assert still.width == widget_view.width and still.height > widget_view.height   # the caption above the panels
    slider.value = n_past - 1   # the still is the view at display time
    assert _bundle(box)["image/png"] != data["image/png"]


TINY = """import ipywidgets as w
hidden = w.IntSlider(description="never shown")
w.VBox([w.IntSlider(value=3, description="shown"), w.HTML("a caption")])"""


def test_the_runner_keeps_the_state_of_shown_widgets_only(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01_derivation.ipynb").touch()   # what notebooks_dir() checks for
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# tiny"), nbformat.v4.new_code_cell(TINY)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "notebooks" / "tiny.ipynb")
    monkeypatch.setenv("LAB5_HOME", str(tmp_path))
    monkeypatch.setitem(wb.NOTEBOOKS, "tiny", {})
    prune, seen = wb.prune_widget_state, {}
    monkeypatch.setattr(wb, "prune_widget_state", lambda nb: (seen.update(before=copy.deepcopy(nb)), prune(nb)))
    wb.execute_notebook("tiny", tmp_path / "out.ipynb", {}, progress=False)

    def by_description(nb) -> dict:
        states = nb.metadata.widgets[wb.WIDGET_STATE]["state"]
        return {s["state"]["description"]: s["state"] for s in states.values() if s["model_name"] == "IntSliderModel"}

    assert set(by_description(seen["before"])) == {"never shown", "shown"}   # nbclient stored both
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    nbformat.validate(out)   # as the runner stored it (no outputs field on a markdown cell)
    kept = by_description(out)
    assert set(kept) == {"shown"} and kept["shown"]["value"] == 3 and kept["shown"]["disabled"]   # a still view
    states = out.metadata.widgets[wb.WIDGET_STATE]["state"]
    models = sorted(s["model_name"] for s in states.values())
    assert models == sorted(["VBoxModel", "LayoutModel", "IntSliderModel", "LayoutModel", "SliderStyleModel",
                             "HTMLModel", "LayoutModel", "HTMLStyleModel"])   # the box and what it refers to
    for cell in seen["before"].cells:   # no widget shown: no widget state at all
        cell.outputs = []
    prune(seen["before"])
    assert "widgets" not in seen["before"].metadata
