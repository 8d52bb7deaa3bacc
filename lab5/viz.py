"""Figures and animations. Plot helpers build a ``matplotlib.figure.Figure`` without pyplot, so nothing is shown
twice in a notebook or left open in a script: the cell that returns it shows it, ``workbook.save_figure`` writes it."""

from __future__ import annotations

import base64
import html
import io
import re
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from lab5.config import Config
from lab5.metrics import psnr_per_frame
from lab5.sim.replay import embedded_seed, resimulate

if TYPE_CHECKING:  # annotations only: matplotlib is imported when a figure is made (see _figure)
    from matplotlib.figure import Figure

_RED = (220, 30, 30)
LEGEND_FONT = 10  # points; legends sit outside the axes, where they cover no data


def to_uint8(frames: Any) -> np.ndarray:
    """``[..., 3, H, W]`` floats in [0, 1] (tensor or array) -> ``[..., H, W, 3]`` uint8 (uint8 arrays as they are)."""
    if not isinstance(frames, torch.Tensor):
        if (arr := np.asarray(frames)).dtype == np.uint8:
            return arr
        frames = torch.as_tensor(arr)
    return frames.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()


def _red_border(frames: np.ndarray) -> None:
    """Mark ``[..., H, W, 3]`` uint8 frames, in place, as predicted: a 2-pixel red border."""
    frames[..., :2, :, :] = frames[..., -2:, :, :] = _RED
    frames[..., :, :2, :] = frames[..., :, -2:, :] = _RED


def _tile(panels: np.ndarray, scale: int, gap: int = 0) -> Image.Image:
    """``[rows, cols, H, W, 3]`` uint8 panels as one image, ``gap`` white pixels between columns, scaled up."""
    rows, cols, h, w, _ = panels.shape
    padded = np.pad(panels, [(0, 0), (0, 0), (0, 0), (0, gap), (0, 0)], constant_values=255)
    flat = padded.transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * (w + gap), 3)
    img = Image.fromarray(np.ascontiguousarray(flat[:, :flat.shape[1] - gap]))
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


@torch.no_grad()
def predict_samples(model: torch.nn.Module, x: torch.Tensor, c: torch.Tensor, cfg: Config,
                    samples: int = 1, seed: int = 0) -> torch.Tensor:
    """``[S, B, T, 3, H, W]``: each sample is the conditioning frames followed by predictions."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    preds = [model.generate(x, c, cfg.n_past, cfg.n_future, gen) for _ in range(samples)]
    return torch.stack([torch.cat([x[:, :cfg.n_past], pred], 1) for pred in preds])


def prediction_gif(model: torch.nn.Module, dataset: torch.utils.data.Dataset, cfg: Config,
                   out: str | Path, indices: Iterable[int] = range(4), samples: int = 3,
                   seed: int = 0, device: str | torch.device = "cpu", fps: int = 4) -> Path:
    """A GIF with one row per sequence (ground truth, then ``samples`` predictions) under a header naming the columns,
    over a footer saying whether frame t is a conditioning frame or a predicted one (red border in the samples)."""
    idx = [i for i in indices if i < len(dataset)]
    x, c = (torch.stack([dataset[i][k][:cfg.n_frames] for i in idx]).to(device) for k in (0, 1))
    pred = to_uint8(predict_samples(model, x, c, cfg, samples, seed))   # [S,B,T,H,W,3]
    _red_border(pred[:, :, cfg.n_past:])
    panels = np.concatenate([to_uint8(x)[:, None], pred.swapaxes(0, 1)], 1)   # [B,1+S,T,H,W,3]
    columns = ["ground truth"] + [f"sample {s + 1}" for s in range(samples)]
    frames, band = [], 16
    for t in range(cfg.n_frames):
        grid = _tile(panels[:, :, t], 2)
        frames.append(frame := Image.new("RGB", (grid.width, grid.height + 2 * band), (255, 255, 255)))
        frame.paste(grid, (0, band))
        draw = ImageDraw.Draw(frame)
        for k, name in enumerate(columns):   # a header naming the equal-width columns
            draw.text((k * (grid.width // len(columns)) + 4, 2), name, fill=(0, 0, 0))
        kind = "conditioning frame (given)" if t < cfg.n_past else "predicted frame (red border)"
        draw.text((4, band + grid.height + 2), f"t = {t}: {kind}", fill=(0, 0, 0))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    # One palette for all frames, no dithering: half the size of per-frame dithered palettes; flat colours stay flat.
    palette = Image.fromarray(np.concatenate([np.asarray(f) for f in frames])).quantize(255, dither=Image.Dither.NONE)
    frames = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=1000 // fps, loop=0)
    return Path(out)


def _figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (5.0, 3.2), **kw: Any) -> tuple[Figure, Any]:
    """A constrained-layout Figure and its ``[nrows, ncols]`` axes; ``size`` is per panel."""
    from matplotlib.figure import Figure  # heavy: kept off the import path of ``lab5 generate``
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def _legend_under(ax: Any, *twins: Any, ncols: int = 1) -> None:
    """``ax``'s legend (its and its twins' labelled artists, or seaborn's) under its x label: it covers nothing."""
    from matplotlib.transforms import ScaledTranslation  # heavy, as in _figure
    fig, old = ax.figure, ax.get_legend()
    fig.draw_without_rendering()  # gives the tick labels and the x label their sizes
    drop = (ax.bbox.y0 - ax.xaxis.get_tightbbox().y0) / fig.dpi + 0.04  # inches
    handles, labels = ((old.legend_handles, [t.get_text() for t in old.get_texts()]) if old else
                       [sum(part, []) for part in zip(*(a.get_legend_handles_labels() for a in (ax, *twins)))])
    ax.legend(handles, labels, title=old.get_title().get_text() if old else None, ncols=ncols, fontsize=LEGEND_FONT,
              title_fontsize=LEGEND_FONT, loc="upper center", bbox_to_anchor=(0.5, 0),
              bbox_transform=ax.transAxes + ScaledTranslation(0, -drop, fig.dpi_scale_trans))


def _legend_below(fig: Figure, ax: Any, ncols: int) -> None:
    """One legend for panels that share their lines (``ax``'s), below all of them."""
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=ncols, fontsize=LEGEND_FONT)


def _beta_axis(ax: Any, betas: Iterable[float]) -> None:
    """β on a symlog axis: linear from 0 to the decade of the smallest positive β, log above, so β = 0 shows."""
    low = 10 ** np.floor(np.log10(min([b for b in betas if b > 0], default=1.0)))
    ax.set_yscale("symlog", linthresh=low, linscale=0.5)
    ax.set_ylabel(f"β (symlog: linear below {low:g})")


def plot_history(history: list[dict], title: str = "", copy_last: float | None = None) -> Figure:
    """The report's Figs. 3.2/3.3 for one run against the epoch: loss and MSE; KL with β; validation PSNR with the
    teacher-forcing ratio. ``copy_last``, the copy-last-frame PSNR of the validation sequences, is drawn as a line."""
    rows = [r for r in history if "epoch" in r]
    ep, col = [r["epoch"] for r in rows], lambda key: [r.get(key, np.nan) for r in rows]
    fig, axes = _figure(3, size=(4.2, 3.6))
    loss, kl, val = axes[0]
    loss.plot(ep, col("loss"), "o-", label="loss (MSE + β·KL)")
    loss.plot(ep, col("mse"), "s--", label="MSE (sum over frames)")
    # Log scales: a β step makes the loss jump by orders of magnitude for an epoch.
    loss.set(xlabel="epoch", ylabel="per batch", title="training loss", yscale="log")
    kl.plot(ep, col("kl"), "o-", color="C2", label="KL")
    kl.set(xlabel="epoch", ylabel="KL (nats, sum over frames)", title="KL and β",
           yscale="log" if all(r["kl"] > 0 for r in rows) else "linear")
    psnr = [(r["epoch"], r["val_psnr"]) for r in rows if r.get("val_psnr") is not None]
    if psnr:
        val.plot(*zip(*psnr), "o-", color="C4", label="validation PSNR")
    if copy_last is not None:
        val.axhline(copy_last, color="0.4", linestyle="-.", label=f"copy last frame ({copy_last:.2f} dB)")
    val.set(xlabel="epoch", ylabel="PSNR (dB)", title="validation PSNR and teacher forcing")
    twins = [ax.twinx() for ax in (kl, val)]  # right axes, no grid
    for twin, lines in zip(twins, ([("beta", "--", "C3", "β")], [("tf_ratio", "--", "C5", "tf ratio"),
                                                                  ("tf_used", ":", "C6", "tf used")])):
        for key, style, color, label in lines:
            twin.plot(ep, col(key), style, color=color, label=label)
        twin.grid(False)
    _beta_axis(twins[0], col("beta"))  # symlog: β = 0 at epoch 1 stays on the axis
    twins[0].yaxis.label.set_color("C3")
    twins[1].set(ylim=(-0.05, 1.05), ylabel="teacher forcing")
    twins[1].yaxis.label.set_color("C5")
    for ax, twin in zip(axes[0], [None, *twins]):
        _legend_under(ax, *[twin] if twin else [], ncols=2)
    if title:
        fig.suptitle(title)
    return fig


def plot_kl_runs(histories: dict[str, list[dict]]) -> Figure:
    """Collapsed against alive: the training KL (log scale) and β (symlog) of several runs against the epoch."""
    fig, axes = _figure(2, size=(4.6, 3.4))
    rows = {name: [r for r in history if "epoch" in r] for name, history in histories.items()}
    for name, runs in rows.items():
        for ax, values in zip(axes[0], ([max(r["kl"], 1e-6) for r in runs], [r["beta"] for r in runs])):
            ax.plot([r["epoch"] for r in runs], values, "o-", ms=3, label=name)
    axes[0, 0].set(xlabel="epoch", ylabel="KL (nats, sum over frames)", yscale="log", title="training KL")
    axes[0, 1].set(xlabel="epoch", title="β (KL weight)")
    _beta_axis(axes[0, 1], [r["beta"] for runs in rows.values() for r in runs])
    _legend_below(fig, axes[0, 0], ncols=min(len(rows), 3))
    return fig


def plot_best_of_n(curves: dict[str, dict], copy_last: float | None = None) -> Figure:
    """PSNR and SSIM of the best of N samples against N (log axis), a line per model, copy-last-frame as a line."""
    metrics = [m for m in ("psnr", "ssim") if all(c.get(m) for c in curves.values())]
    fig, axes = _figure(len(metrics), size=(4.6, 3.4))
    ns = sorted({n for curve in curves.values() for n in curve["n"]})
    for ax, metric in zip(axes[0], metrics):
        for name, curve in curves.items():
            ax.plot(curve["n"], curve[metric], "o-", ms=4, label=name)
        if copy_last is not None and metric == "psnr":
            ax.axhline(copy_last, color="0.4", linestyle="-.", label=f"copy last frame ({copy_last:.2f} dB)")
            ax.set_ylim(min(ax.get_ylim()[0], copy_last - 0.3), None)  # an axhline does not widen the axis
        ax.set(xscale="log", xlabel="N samples per sequence (log axis)", ylabel="PSNR (dB)" if metric == "psnr" else
               "SSIM", title=f"best of N by mean SSIM: {metric.upper()}")
        ax.set_xticks(ns, [str(n) for n in ns])  # the N values, not 10⁰ and 10¹
        ax.minorticks_off()
    _legend_below(fig, axes[0, 0], ncols=3)
    return fig


def plot_schedules(panels: dict[str, dict[str, Callable[[int], float]]],
                   epochs: int | dict[str, int]) -> Figure:
    """One panel per schedule family, ``{"KL annealing β": {"monotonic": KLAnnealing(...), ...}}``: each schedule
    (a callable of the epoch) drawn as steps over ``epochs`` (one int, or one per panel title)."""
    fig, axes = _figure(len(panels), size=(5.0, 3.4))
    for ax, (title, curves) in zip(axes[0], panels.items()):
        n = epochs[title] if isinstance(epochs, dict) else epochs
        for label, schedule in curves.items():
            ax.stairs([schedule(e) for e in range(n)], range(n + 1), baseline=None, label=label, linewidth=1.5)
        ax.set(xlabel="epoch", title=title, ylim=(-0.05, 1.08))
        _legend_under(ax)
    return fig


def frame_grid(frames: Any, labels: list[str] | None = None, title: str = "", every: int = 1,
               n_past: int | None = None) -> Figure:
    """Rows of frames: ``[rows, T, 3, H, W]`` (tensor) or ``[rows, T, H, W, 3]`` (uint8). ``every``
    keeps every k-th frame; with ``n_past``, frames at index >= ``n_past`` get a red frame, as in the GIFs."""
    arr = to_uint8(frames)[:, ::every]
    fig, axes = _figure(arr.shape[1], arr.shape[0], size=(0.95, 1.0))
    for (r, k), ax in np.ndenumerate(axes):
        ax.imshow(arr[r, k], interpolation="nearest")   # crisp pixels, small PNGs
        ax.set(xticks=[], yticks=[])
        if n_past is not None and k * every >= n_past:
            ax.spines[:].set(color="red", linewidth=2)
        if r == 0:
            ax.set_title(f"t={k * every}", fontsize=8)
        if labels and k == 0:
            ax.set_ylabel(labels[r], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def filmstrip(truth: torch.Tensor, samples: torch.Tensor, n_past: int, n_samples: int = 3) -> Figure:
    """Static stand-in for the frame player: ground truth, best sample and other samples as rows."""
    rows, labels = strip_rows(truth, samples, n_past, n_samples)
    return frame_grid(np.stack(rows), labels, n_past=n_past)


def strip_rows(truth: torch.Tensor, samples: torch.Tensor, n_past: int,
               n_samples: int = 3) -> tuple[list[np.ndarray], list[str]]:
    """Ground truth, the best sample by PSNR (SVG's best-of-N) and the first other samples."""
    psnr = psnr_per_frame(samples[:, n_past:], truth[None, n_past:].expand_as(samples[:, n_past:])).mean(1)
    best = int(psnr.argmax())
    others = [s for s in range(samples.shape[0]) if s != best][:n_samples]
    rows = [to_uint8(truth), to_uint8(samples[best])] + [to_uint8(samples[s]) for s in others]
    labels = ["ground\ntruth", f"best of {samples.shape[0]}\n{float(psnr[best]):.1f} dB"]
    labels += [f"sample {s + 1}\n{float(psnr[s]):.1f} dB" for s in others]
    return rows, labels


def plot_per_frame(curves: dict[str, Iterable[float]], start: int = 0, ylabel: str = "PSNR (dB)",
                   title: str = "", ax: Any = None) -> Figure:
    """Per-frame curves (one value per frame index from ``start``) on ``ax`` (default: a new figure's)."""
    ax = _figure(size=(5.0, 3.4))[1][0, 0] if ax is None else ax
    for label, values in curves.items():
        values = list(values)
        ax.plot(range(start, start + len(values)), values, "o-", ms=3, label=label)
    ax.set(xlabel="frame index t", ylabel=ylabel, title=title)
    _legend_under(ax, ncols=2)
    return ax.figure


def plot_eval_curves(results: dict) -> Figure:
    """PSNR and SSIM per predicted frame, the model against copy-last-frame (from ``evaluate_model``)."""
    p = results["protocol"]
    metrics = [("psnr", "PSNR (dB)", "PSNR")] + ([("ssim", "SSIM", "SSIM")] if "ssim" in results else [])
    fig, axes = _figure(len(metrics), size=(4.8, 3.4))
    for ax, (key, ylabel, name) in zip(axes[0], metrics):
        plot_per_frame({"CVAE": results[key]["per_frame"], "copy last frame": results["copy_last"][f"{key}_per_frame"]},
                       p["n_past"], ylabel, f"{name} per predicted frame", ax=ax)
    fig.suptitle(f"{p['split']} split, {p['sequences']} sequences, {p['samples']} sample(s) each", fontsize=10)
    return fig


def plot_conditions(df: Any) -> Figure:
    """Action and end-effector statistics (seaborn) from ``lab5.explore.conditions_table``'s long table."""
    import seaborn as sns  # heavy (imports pandas): only this figure needs it
    fig, axes = _figure(4, size=(3.6, 3.4))
    moves = df.melt(value_vars=["dx", "dy"], var_name="action", value_name="metres per held pair")
    sns.histplot(moves, x="metres per held pair", hue="action", bins=40, element="step", ax=axes[0, 0])
    cmds = df.melt(value_vars=["closure", "height"], var_name="command", value_name="command value")
    sns.countplot(cmds, x="command value", hue="command", ax=axes[0, 1])
    sns.lineplot(df[df["sequence"] < 8], x="ee_y", y="ee_x", hue="sequence", sort=False, estimator=None,
                 palette="tab10", legend=False, ax=axes[0, 2])
    axes[0, 2].invert_yaxis()
    sns.histplot(df, x="ee_z", bins=30, ax=axes[0, 3])
    for ax, title, labels in zip(axes[0], ["actions 0-1: displacement", "actions 2-3: gripper, height",
                                           "end-effector paths (8 sequences)", "end-effector height"],
                                 [{}, {}, {"xlabel": "ee_y (m)"}, {"xlabel": "ee_z (m)"}]):
        ax.set(title=title, ylabel="ee_x (m)" if ax is axes[0, 2] else "frames", **labels)
    for ax in axes[0, :2]:
        _legend_under(ax, ncols=2)
    return fig


def _player(n_frames: int, frame: Callable[..., tuple[np.ndarray, str]], control: tuple[str, dict] | None,
            scale: int, fps: int, n_past: int, title: str) -> Any:
    """Play, a frame slider and ``control`` (an ipywidgets class name and its arguments) over the caption and panels
    ``frame(t[, control value])`` returns, opening at a middle predicted frame. Its display bundle also holds that view
    as a PNG and ``title`` as text: what a notebook shows where the widget cannot render (untrusted, a fresh clone)."""
    import ipywidgets as widgets  # optional (the dev extra): only the notebooks' players need it
    start = min((n_past + n_frames) // 2, n_frames - 1)
    play = widgets.Play(value=start, min=0, max=n_frames - 1, interval=1000 // fps, description="play")
    slider = widgets.IntSlider(value=start, min=0, max=n_frames - 1, description="frame t")
    widgets.jslink((play, "value"), (slider, "value"))
    controls = [slider] + ([getattr(widgets, control[0])(**control[1])] if control else [])
    image, caption = widgets.Image(format="png"), widgets.HTML()

    def show(_: Any = None) -> None:
        panels, caption.value = frame(*(w.value for w in controls))
        image.value = _png(_tile(panels[None], scale, gap=4))

    for widget in controls:
        widget.observe(show, names="value")
    show()
    box = widgets.VBox([widgets.HBox([play] + controls), caption, image])
    widget_bundle = box._repr_mimebundle_   # ipywidgets' own: text/plain and the widget-view JSON

    def bundle(**kwargs: Any) -> dict[str, Any]:
        panels, text = frame(*(w.value for w in controls))   # the view now, caption above the panels
        still = _png(_captioned(_tile(panels[None], scale, gap=4), text))
        return {**widget_bundle(**kwargs), "image/png": base64.b64encode(still).decode("ascii"), "text/plain": title}

    box._repr_mimebundle_ = bundle
    return box


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _captioned(img: Image.Image, caption: str, size: int = 13) -> Image.Image:
    """``img`` below ``caption`` (a player's HTML caption as plain text, wrapped to the image's width)."""
    text = re.sub(r"<[^>]+>", "", html.unescape(caption)).replace("\xa0", " ")
    lines = textwrap.wrap(text, max(20, img.width * 2 // size))
    out = Image.new("RGB", (img.width, img.height + (size + 5) * len(lines) + 6), "white")
    draw, font = ImageDraw.Draw(out), ImageFont.load_default(size)
    for i, line in enumerate(lines):
        draw.text((2, 3 + (size + 5) * i), line, fill="black", font=font)
    out.paste(img, (0, out.height - img.height))
    return out


def frame_player(truth: torch.Tensor, samples: torch.Tensor, n_past: int, n_samples: int = 3,
                 scale: int = 3, fps: int = 4) -> Any:
    """A player over frame t of ground truth, the best sample and other samples (red border: predicted frames)."""
    rows, labels = strip_rows(truth, samples, n_past, n_samples)
    strips = np.stack(rows)                                    # [rows, T, H, W, 3]
    shown = torch.from_numpy(strips).float() / 255             # as displayed, before the borders
    psnr = psnr_per_frame(shown[1:], shown[:1].expand_as(shown[1:])).tolist()  # [samples][T]
    names = ["ground truth"] + [label.split("\n")[0] for label in labels[1:]]  # no sequence dB
    _red_border(strips[1:, n_past:])

    def frame(t: int) -> tuple[np.ndarray, str]:
        if t < n_past:
            parts, kind = names, "conditioning frame (ground truth in every panel)"
        else:
            parts = [names[0]] + [f"{name}: {p[t]:.1f} dB" for name, p in zip(names[1:], psnr)]
            kind = "predicted frame, PSNR of this frame"
        return strips[:, t], f"<b>t = {t}</b>: {kind} &nbsp;|&nbsp; " + " &nbsp;·&nbsp; ".join(parts)

    return _player(strips.shape[1], frame, None, scale, fps, n_past, "frame player (ground truth, the best and other "
                   "samples at frame t) — run the cell to scrub the frames")


def spread_frames(samples: torch.Tensor) -> np.ndarray:
    """Per-pixel std across samples ``[S, T, 3, H, W]`` (colour mean) as ``[T, H, W, 3]`` grey, white >= 0.25."""
    std = samples.float().std(0, unbiased=False).mean(1)       # [T, H, W]
    grey = (std / 0.25).clamp(0, 1).mul(255).round().byte().numpy()
    return np.repeat(grey[..., None], 3, -1)


def sample_player(truth: torch.Tensor, samples: torch.Tensor, n_past: int, scale: int = 3, fps: int = 4) -> Any:
    """Scrub frames and samples: ground truth, sample k, and the samples' per-pixel spread at frame t."""
    frames, spread = to_uint8(torch.cat([truth[None], samples])), spread_frames(samples)   # truth, then samples
    _red_border(frames[1:, n_past:])
    spread_mean = samples.float().std(0, unbiased=False).mean((1, 2, 3)).tolist()  # [T]
    psnr = psnr_per_frame(samples, truth[None].expand_as(samples)).tolist()  # [S][T]

    def frame(t: int, k: int) -> tuple[np.ndarray, str]:
        what = f"sample {k + 1}: {psnr[k][t]:.1f} dB" if t >= n_past else "conditioning frame"
        return (np.stack([frames[0, t], frames[k + 1, t], spread[t]]), f"<b>t = {t}</b>: ground truth · {what} · "
                f"spread across {len(samples)} samples (mean {spread_mean[t]:.3f})")

    pick = dict(value=0, min=0, max=len(samples) - 1, description="sample")
    return _player(len(truth), frame, ("IntSlider", pick), scale, fps, n_past, "sample player (ground truth, sample "
                   "k and the samples' spread at frame t) — run the cell to scrub the frames and samples")


@torch.no_grad()
def drive(model: torch.nn.Module, root: str | Path, split: str, index: int, actions: np.ndarray,
          n_past: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Scene ``index`` driven by ``actions [T, 4]``: the simulator's truth ``[T,3,H,W]`` and the model's prediction
    (one prior sample, after its first ``n_past`` frames) given those actions (and positions)."""
    x, c = resimulate(embedded_seed(root), split, index, actions)
    device = next(model.parameters()).device
    model.eval()
    pred = model.generate(x[None].to(device), c[None].to(device), n_past, len(x) - n_past,
                    torch.Generator(device=device).manual_seed(seed))[0].cpu()
    return x, torch.cat([x[:n_past], pred])


def drive_player(model: torch.nn.Module, root: str | Path, split: str, index: int,
                 choices: dict[str, np.ndarray], n_past: int, scale: int = 3, fps: int = 4) -> Any:
    """"Drive the robot": pick actions for scene ``index``; the simulator's truth beside the model's prediction."""
    cache: dict[str, tuple[np.ndarray, list[float]]] = {}   # a scene is simulated when first picked

    def frame(t: int, name: str) -> tuple[np.ndarray, str]:
        if name not in cache:
            truth, pred = drive(model, root, split, index, choices[name], n_past)
            cache[name] = to_uint8(torch.stack([truth, pred])), psnr_per_frame(pred[None], truth[None])[0].tolist()
            _red_border(cache[name][0][1, n_past:])
        pair, psnr = cache[name]
        what = f"prediction {psnr[t]:.1f} dB" if t >= n_past else "conditioning frame"
        return pair[:, t], f"<b>t = {t}</b>, {name}: simulator's truth · model's {what}"

    menu = dict(options=list(choices), description="actions")
    return _player(len(next(iter(choices.values()))), frame, ("Dropdown", menu), scale, fps, n_past, "drive player "
                   "(the simulator's truth beside the model's prediction) — run the cell to pick actions and scrub")
