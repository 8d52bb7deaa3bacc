"""Plots that read: every legend sits where it covers no curve, bar or tick label and stays in the figure;
β shows its epoch-1 zero on a symlog axis; best-of-N reads its N values on the x axis; axes carry units."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from lab5 import viz

HISTORY = [dict(epoch=e + 1, loss=0.1 / (e + 1), mse=0.05, kl=100.0 / 10 ** e, beta=b, tf_ratio=1 - e / 10,
                tf_used=1 - e / 10, val_psnr=23 + e / 3) for e, b in enumerate([0.0, 1 / 3, 2 / 3, 1, 1, 1])]
CURVE = {"n": [1, 2, 5, 10, 20], "psnr": [23.8, 24.2, 24.9, 25.3, 25.7], "ssim": [0.83, 0.84, 0.86, 0.87, 0.87]}
FLAT = {"n": CURVE["n"], "psnr": [30.1] * 5, "ssim": [0.93] * 5}


def conditions() -> Any:
    import pandas as pd
    rng = np.random.default_rng(0)
    n = 8 * 30
    return pd.DataFrame({"sequence": np.repeat(np.arange(8), 30), "t": np.tile(np.arange(30), 8),
                         "dx": rng.uniform(-0.07, 0.07, n), "dy": rng.uniform(-0.07, 0.07, n),
                         "closure": rng.choice([0.0, 1.0, 4.0], n), "height": rng.choice([0.0, 1.0, 2.0], n),
                         "ee_x": rng.uniform(0.4, 0.8, n), "ee_y": rng.uniform(-0.2, 0.2, n),
                         "ee_z": rng.uniform(0.2, 0.3, n)})


FIGURES: dict[str, Callable[[], Any]] = {
    "history": lambda: viz.plot_history(HISTORY, title="run", copy_last=23.5),
    "kl_runs": lambda: viz.plot_kl_runs({"collapsed, beta -> 1": HISTORY,
                                         "alive, beta 1e-5": [dict(r, beta=1e-5) for r in HISTORY]}),
    "best_of_n": lambda: viz.plot_best_of_n({"flat": FLAT, "rising": CURVE}, copy_last=23.5),
    "schedules": lambda: viz.plot_schedules({"β": {"up": lambda e: min(1.0, e / 10), "cycles": lambda e: e % 25 / 25},
                                             "tf": {"down": lambda e: max(0.2, 1 - e / 50)}}, 100),
    "per_frame": lambda: viz.plot_per_frame({"model": np.linspace(30, 25, 10), "copy": np.linspace(29, 20, 10)}, 2),
    "eval_curves": lambda: viz.plot_eval_curves({
        "protocol": {"n_past": 2, "split": "test", "sequences": 4, "samples": 3},
        "psnr": {"per_frame": list(np.linspace(32, 28, 10))}, "ssim": {"per_frame": list(np.linspace(0.96, 0.91, 10))},
        "copy_last": {"psnr_per_frame": list(np.linspace(29, 21, 10)),
                      "ssim_per_frame": list(np.linspace(0.94, 0.8, 10))}}),
    "conditions": lambda: viz.plot_conditions(conditions()),
}


def drawn(fig: Any) -> Any:
    fig.draw_without_rendering()  # lays out the figure: window extents are final
    return fig


@pytest.mark.parametrize("name", FIGURES)
def test_legends_cover_nothing(name: str) -> None:
    fig = drawn(FIGURES[name]())
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends, "the figure has no legend"
    for legend in legends:
        box = legend.get_window_extent()
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0, "legend cut off"
        for ax in fig.axes:
            assert not box.overlaps(ax.bbox), f"legend over the axes {ax.get_title()!r}"
            xaxis = ax.xaxis.get_tightbbox()   # None for a twin's hidden x axis
            assert xaxis is None or not box.overlaps(xaxis), f"legend over the x axis of {ax.get_title()!r}"
            for line in ax.lines:   # also no data point under it (implied by the above, checked as promised)
                points = line.get_transform().transform(np.asarray(line.get_xydata(), float))
                assert not ((points >= box.min) & (points <= box.max)).all(1).any(), "legend over a data point"
        assert min(t.get_fontsize() for t in legend.get_texts()) >= 9, "legend text too small to read"


@pytest.mark.parametrize("name", ["history", "kl_runs"])
def test_beta_is_symlog_and_its_zero_shows(name: str) -> None:
    fig = drawn(FIGURES[name]())
    (ax,) = [ax for ax in fig.axes if ax.get_ylabel().startswith("β")]
    assert ax.get_yscale() == "symlog" and "symlog" in ax.get_ylabel()
    for line in ax.lines:
        ys = line.get_transform().transform(np.asarray(line.get_xydata(), float))[:, 1]
        assert (ys >= ax.bbox.y0 - 1).all() and (ys <= ax.bbox.y1 + 1).all(), "a β point is off the axis"


def test_best_of_n_reads_n_and_db() -> None:
    fig = drawn(FIGURES["best_of_n"]())
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "5", "10", "20"]
        assert len(ax.xaxis.get_minorticklocs()) == 0
    assert "dB" in fig.axes[0].get_ylabel() and "dB" in fig.legends[0].get_texts()[-1].get_text()


@pytest.mark.parametrize("name, units", [("history", ["epoch", "nats", "dB"]), ("eval_curves", ["dB"]),
                                         ("conditions", ["(m)"])])
def test_axes_carry_units(name: str, units: list[str]) -> None:
    labels = " ".join(ax.get_xlabel() + " " + ax.get_ylabel() for ax in FIGURES[name]().axes)
    assert all(unit in labels for unit in units)
