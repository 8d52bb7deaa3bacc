"""Figures and animations. Plot helpers build a ``matplotlib.figure.Figure`` without pyplot, so
nothing is shown twice in a notebook or left open in a script: the cell that returns the figure
displays it, and ``lab5.workbook.save_figure`` writes it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
import torch
from PIL import Image, ImageDraw

from lab5.config import Config
from lab5.evaluate import generate
from lab5.metrics import psnr_per_frame

if TYPE_CHECKING:  # annotations only: matplotlib is imported when a figure is made (see _figure)
    from matplotlib.figure import Figure

_RED = (220, 30, 30)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``[..., 3, H, W]`` floats in [0, 1] -> ``[..., H, W, 3]`` uint8."""
    arr = frames.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return arr.movedim(-3, -1).cpu().numpy()


def _red_border(frames: np.ndarray) -> None:
    """Mark ``[..., H, W, 3]`` uint8 frames, in place, as predicted: a 2-pixel red border."""
    frames[..., :2, :, :] = frames[..., -2:, :, :] = _RED
    frames[..., :, :2, :] = frames[..., :, -2:, :] = _RED


@torch.no_grad()
def predict_samples(model: torch.nn.Module, x: torch.Tensor, c: torch.Tensor, cfg: Config,
                    samples: int = 1, seed: int = 0) -> torch.Tensor:
    """``[S, B, T, 3, H, W]``: each sample is the conditioning frames followed by predictions."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    preds = [generate(model, x, c, cfg.n_past, cfg.n_future, gen) for _ in range(samples)]
    return torch.stack([torch.cat([x[:, :cfg.n_past], pred], 1) for pred in preds])


def prediction_gif(model: torch.nn.Module, dataset: torch.utils.data.Dataset, cfg: Config,
                   out: str | Path, indices: Iterable[int] = range(4), samples: int = 3,
                   seed: int = 0, device: str | torch.device = "cpu", fps: int = 4) -> Path:
    """A GIF with one row per sequence: ground truth, then ``samples`` predictions, side by side,
    under a header naming the columns and over a footer saying whether frame t is a conditioning
    frame (ground truth everywhere) or a predicted one (with a red border in the sample columns)."""
    idx = [i for i in indices if i < len(dataset)]
    x = torch.stack([dataset[i][0][:cfg.n_frames] for i in idx]).to(device)
    c = torch.stack([dataset[i][1][:cfg.n_frames] for i in idx]).to(device)
    pred = to_uint8(predict_samples(model, x, c, cfg, samples, seed))   # [S,B,T,H,W,3]
    truth = to_uint8(x)                                                  # [B,T,H,W,3]
    _red_border(pred[:, :, cfg.n_past:])
    columns = ["ground truth"] + [f"sample {s + 1}" for s in range(samples)]
    frames = []
    for t in range(cfg.n_frames):
        rows = [np.concatenate([truth[b, t], *pred[:, b, t]], 1) for b in range(len(idx))]
        grid = Image.fromarray(np.concatenate(rows, 0))
        grid = grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST)
        kind = "conditioning frame (given)" if t < cfg.n_past else "predicted frame (red border)"
        frames.append(_caption_frame(grid, columns, f"t = {t}: {kind}"))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=1000 // fps, loop=0)
    return out


def _caption_frame(grid: Image.Image, columns: list[str], footer: str, band: int = 16) -> Image.Image:
    """``grid`` with a white header naming its equal-width columns and a footer line."""
    out = Image.new("RGB", (grid.width, grid.height + 2 * band), (255, 255, 255))
    out.paste(grid, (0, band))
    draw = ImageDraw.Draw(out)
    width = grid.width // len(columns)
    for k, name in enumerate(columns):
        draw.text((k * width + 4, 2), name, fill=(0, 0, 0))
    draw.text((4, band + grid.height + 2), footer, fill=(0, 0, 0))
    return out


def _figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (5.0, 3.2), **kw):
    """A constrained-layout Figure and its ``[nrows, ncols]`` axes; ``size`` is per panel."""
    from matplotlib.figure import Figure  # heavy: kept off the import path of ``lab5 generate``
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def _frames_uint8(frames) -> np.ndarray:
    """``[..., 3, H, W]`` float tensors or ``[..., H, W, 3]`` uint8 arrays -> uint8 ``[..., H, W, 3]``."""
    if isinstance(frames, torch.Tensor):
        return to_uint8(frames)
    arr = np.asarray(frames)
    return arr if arr.dtype == np.uint8 else to_uint8(torch.as_tensor(arr))


def plot_history(history: list[dict], title: str = "", copy_last: float | None = None) -> Figure:
    """The report's Figs. 3.2/3.3 for one run: loss and MSE; KL with β; validation PSNR with
    the teacher-forcing ratio — one panel each, against the epoch. ``copy_last``, the
    copy-last-frame PSNR of the validation sequences, is drawn as a line."""
    rows = [r for r in history if "epoch" in r]
    ep = [r["epoch"] for r in rows]
    fig, axes = _figure(3, size=(4.2, 3.0))
    ax = axes[0, 0]
    ax.plot(ep, [r["loss"] for r in rows], "o-", label="loss (MSE + β·KL)")
    ax.plot(ep, [r["mse"] for r in rows], "s--", label="MSE (sum over frames)")
    # Log scales: a β step makes the loss jump by orders of magnitude for an epoch.
    ax.set(xlabel="epoch", ylabel="per batch", title="training loss", yscale="log")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.plot(ep, [r["kl"] for r in rows], "o-", color="C2", label="KL")
    ax.set(xlabel="epoch", ylabel="KL (sum over frames)", title="KL and β",
           yscale="log" if all(r["kl"] > 0 for r in rows) else "linear")
    twin = ax.twinx()
    twin.plot(ep, [r["beta"] for r in rows], "--", color="C3", label="β")
    twin.set_ylabel("β", color="C3")
    twin.grid(False)
    ax = axes[0, 2]
    val = [(r["epoch"], r["val_psnr"]) for r in rows if r.get("val_psnr") is not None]
    if val:
        ax.plot(*zip(*val), "o-", color="C4", label="validation PSNR")
    if copy_last is not None:
        ax.axhline(copy_last, color="0.4", linestyle="-.", label=f"copy last frame ({copy_last:.2f})")
    if val or copy_last is not None:
        ax.legend(fontsize=8, loc="upper left")
    ax.set(xlabel="epoch", ylabel="PSNR (dB)", title="validation PSNR and teacher forcing")
    twin = ax.twinx()
    twin.plot(ep, [r["tf_ratio"] for r in rows], "--", color="C5", label="tf ratio")
    twin.plot(ep, [r.get("tf_used", np.nan) for r in rows], ":", color="C6", label="tf used")
    twin.set(ylim=(-0.05, 1.05))
    twin.set_ylabel("teacher forcing", color="C5")
    twin.grid(False)
    twin.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    return fig


def plot_kl_runs(histories: dict[str, list[dict]]) -> Figure:
    """Collapsed against alive: the training KL (nats per sequence, log scale) and β of several runs
    against the epoch, one colour per run."""
    fig, axes = _figure(2, size=(4.6, 3.0))
    for k, (name, history) in enumerate(histories.items()):
        rows = [r for r in history if "epoch" in r]
        ep = [r["epoch"] for r in rows]
        axes[0, 0].plot(ep, [max(r["kl"], 1e-6) for r in rows], "o-", ms=3, color=f"C{k}", label=name)
        axes[0, 1].plot(ep, [r["beta"] for r in rows], "o-", ms=3, color=f"C{k}", label=name)
    axes[0, 0].set(xlabel="epoch", ylabel="KL (nats, sum over frames)", yscale="log", title="training KL")
    axes[0, 1].set(xlabel="epoch", ylabel="β", yscale="log", title="β (KL weight)")
    for ax in axes[0]:
        ax.legend(fontsize=8)
    return fig


def plot_best_of_n(curves: dict[str, dict], copy_last: float | None = None) -> Figure:
    """PSNR and SSIM of the best of N samples against N (log axis), one line per model
    (``best_of_n_curve`` of ``evaluate_model``), with copy-last-frame as a line."""
    metrics = [m for m in ("psnr", "ssim") if all(c.get(m) for c in curves.values())]
    fig, axes = _figure(len(metrics), size=(4.6, 3.2))
    for ax, metric in zip(axes[0], metrics):
        for name, curve in curves.items():
            ax.plot(curve["n"], curve[metric], "o-", ms=4, label=name)
        if copy_last is not None and metric == "psnr":
            ax.axhline(copy_last, color="0.4", linestyle="-.", label=f"copy last frame ({copy_last:.2f})")
            ax.set_ylim(min(ax.get_ylim()[0], copy_last - 0.3), None)  # an axhline does not widen the axis
        ax.set(xscale="log", xlabel="N samples per sequence", ylabel=metric.upper(),
               title=f"best of N by mean SSIM: {metric.upper()}")
        ax.legend(fontsize=8)
    return fig


def plot_schedules(panels: dict[str, dict[str, Callable[[int], float]]],
                   epochs: int | dict[str, int]) -> Figure:
    """One panel per schedule family, ``{"KL annealing β": {"monotonic": KLAnnealing(...), ...}}``: each
    schedule, a callable of the epoch, is drawn as steps over ``epochs`` (one int, or one per panel title)."""
    fig, axes = _figure(len(panels), size=(5.0, 3.0))
    for ax, (title, curves) in zip(axes[0], panels.items()):
        n = epochs[title] if isinstance(epochs, dict) else epochs
        for label, schedule in curves.items():
            ax.stairs([schedule(e) for e in range(n)], range(n + 1), baseline=None, label=label,
                      linewidth=1.5)
        ax.set(xlabel="epoch", title=title, ylim=(-0.05, 1.08))
        ax.legend(fontsize=8)
    return fig


def frame_grid(frames, labels: list[str] | None = None, title: str = "", every: int = 1,
               n_past: int | None = None) -> Figure:
    """Rows of frames: ``[rows, T, 3, H, W]`` (tensor) or ``[rows, T, H, W, 3]`` (uint8). ``every``
    keeps every k-th frame; with ``n_past``, frames at index >= ``n_past`` get a red frame, as in the GIFs."""
    arr = _frames_uint8(frames)[:, ::every]
    rows, cols = arr.shape[:2]
    fig, axes = _figure(cols, rows, size=(0.95, 1.0))
    for r in range(rows):
        for k in range(cols):
            ax, t = axes[r, k], k * every
            ax.imshow(arr[r, k], interpolation="nearest")   # crisp pixels, small PNGs
            ax.set(xticks=[], yticks=[])
            if n_past is not None and t >= n_past:
                for side in ax.spines.values():
                    side.set(color="red", linewidth=2)
            if r == 0:
                ax.set_title(f"t={t}", fontsize=8)
        if labels:
            axes[r, 0].set_ylabel(labels[r], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def filmstrip(truth: torch.Tensor, samples: torch.Tensor, n_past: int, n_samples: int = 3) -> Figure:
    """Static stand-in for the frame player: ground truth, best sample and other samples as rows;
    ``truth`` ``[T, 3, H, W]``, ``samples`` ``[S, T, 3, H, W]`` (conditioning frames included)."""
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
                   title: str = "", ax=None) -> Figure:
    """Per-frame curves (one value per frame index from ``start``) on one axis (a new figure's
    when ``ax`` is None)."""
    ax = _figure(size=(5.0, 3.2))[1][0, 0] if ax is None else ax
    for label, values in curves.items():
        values = list(values)
        ax.plot(range(start, start + len(values)), values, "o-", ms=3, label=label)
    ax.set(xlabel="frame index t", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    return ax.figure


def plot_eval_curves(results: dict) -> Figure:
    """PSNR and SSIM per predicted frame, the model against copy-last-frame (from ``evaluate_model``)."""
    p = results["protocol"]
    metrics = [("psnr", "PSNR (dB)", "PSNR")] + ([("ssim", "SSIM", "SSIM")] if "ssim" in results else [])
    fig, axes = _figure(len(metrics), size=(4.8, 3.2))
    for ax, (key, ylabel, name) in zip(axes[0], metrics):
        copy_last = results["copy_last"][f"{key}_per_frame"]
        plot_per_frame({"CVAE": results[key]["per_frame"], "copy last frame": copy_last}, p["n_past"], ylabel,
                       f"{name} per predicted frame", ax=ax)
    fig.suptitle(f"{p['split']} split, {p['sequences']} sequences, {p['samples']} sample(s) each",
                 fontsize=10)
    return fig


def plot_conditions(df) -> Figure:
    """Action and end-effector statistics (seaborn) from a long table with columns
    ``sequence, t, dx, dy, closure, height, ee_x, ee_y, ee_z`` (see ``lab5.explore.conditions_table``)."""
    import seaborn as sns  # heavy (imports pandas): only this figure needs it
    fig, axes = _figure(4, size=(3.6, 3.0))
    moves = df.melt(value_vars=["dx", "dy"], var_name="action", value_name="metres per held pair")
    sns.histplot(moves, x="metres per held pair", hue="action", bins=40, element="step", ax=axes[0, 0])
    cmds = df.melt(value_vars=["closure", "height"], var_name="command", value_name="value")
    sns.countplot(cmds, x="value", hue="command", ax=axes[0, 1])
    sns.lineplot(df[df["sequence"] < 8], x="ee_y", y="ee_x", hue="sequence", sort=False, estimator=None,
                 palette="tab10", legend=False, ax=axes[0, 2])
    axes[0, 2].invert_yaxis()
    sns.histplot(df, x="ee_z", bins=30, ax=axes[0, 3])
    for ax, title in zip(axes[0], ["actions 0-1: displacement", "actions 2-3: gripper, height",
                                   "end-effector paths (8 sequences)", "end-effector height"]):
        ax.set_title(title)
    return fig


def _strip_png(panels: np.ndarray, scale: int = 3) -> bytes:
    """PNG bytes of ``[panels, H, W, 3]`` uint8 images side by side, 4-pixel white gaps, scaled up."""
    gap = np.pad(panels, [(0, 0), (0, 0), (0, 4), (0, 0)], constant_values=255)
    img = Image.fromarray(np.concatenate(gap, 1)[:, :-4])
    buf = io.BytesIO()
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def _player(n_frames: int, fps: int, controls: list, show: Callable[[int], None]):
    """Play and a frame slider (linked in the browser with jslink) above ``controls``; ``show(t)`` draws
    frame t and runs again whenever the slider or a control changes."""
    import ipywidgets as widgets  # optional (the dev extra): only the notebooks' players need it

    play = widgets.Play(value=0, min=0, max=n_frames - 1, interval=1000 // fps, description="play")
    slider = widgets.IntSlider(value=0, min=0, max=n_frames - 1, description="frame t")
    widgets.jslink((play, "value"), (slider, "value"))
    for widget in [slider] + controls:
        widget.observe(lambda _: show(slider.value), names="value")
    show(0)
    return widgets.HBox([play, slider] + controls)


def frame_player(truth: torch.Tensor, samples: torch.Tensor, n_past: int, n_samples: int = 3,
                 scale: int = 3, fps: int = 4):
    """An ipywidgets player: Play and IntSlider over frame t, and an Image showing ground truth, the
    best sample and other samples side by side (red border: predicted frames). Returns the box to display."""
    import ipywidgets as widgets  # optional (the dev extra), as in _player

    rows, labels = strip_rows(truth, samples, n_past, n_samples)
    strips = np.stack(rows)                                    # [rows, T, H, W, 3]
    shown = torch.from_numpy(strips).float() / 255             # as displayed, before the borders
    psnr = psnr_per_frame(shown[1:], shown[:1].expand_as(shown[1:])).tolist()  # [samples][T]
    names = ["ground truth"] + [label.split("\n")[0] for label in labels[1:]]  # no sequence dB
    _red_border(strips[1:, n_past:])
    image, caption = widgets.Image(format="png"), widgets.HTML()

    def show(t: int) -> None:
        image.value = _strip_png(strips[:, t], scale)
        if t < n_past:
            parts, kind = names, "conditioning frame (ground truth in every panel)"
        else:
            parts = [names[0]] + [f"{name}: {p[t]:.1f} dB" for name, p in zip(names[1:], psnr)]
            kind = "predicted frame, PSNR of this frame"
        caption.value = f"<b>t = {t}</b>: {kind} &nbsp;|&nbsp; " + " &nbsp;·&nbsp; ".join(parts)

    return widgets.VBox([_player(strips.shape[1], fps, [], show), caption, image])


def spread_frames(samples: torch.Tensor) -> np.ndarray:
    """Where samples disagree: the per-pixel standard deviation across ``[S, T, 3, H, W]`` samples,
    averaged over colour, as ``[T, H, W, 3]`` uint8 grey (white = 0.25 or more)."""
    std = samples.float().std(0, unbiased=False).mean(1)       # [T, H, W]
    grey = (std / 0.25).clamp(0, 1).mul(255).round().byte().numpy()
    return np.repeat(grey[..., None], 3, -1)


def sample_player(truth: torch.Tensor, samples: torch.Tensor, n_past: int, scale: int = 3, fps: int = 4):
    """Scrub frames and samples: ground truth, sample k, and the samples' per-pixel spread at frame t
    (``truth [T,3,H,W]``, ``samples [S,T,3,H,W]``, conditioning frames included)."""
    import ipywidgets as widgets  # optional (the dev extra), as in _player

    truth_u8, samples_u8, spread = to_uint8(truth), [to_uint8(s) for s in samples], spread_frames(samples)
    spread_mean = samples.float().std(0, unbiased=False).mean((1, 2, 3)).tolist()  # [T]
    psnr = psnr_per_frame(samples, truth[None].expand_as(samples)).tolist()  # [S][T]
    for s in samples_u8:
        _red_border(s[n_past:])
    pick = widgets.IntSlider(value=0, min=0, max=len(samples) - 1, description="sample")
    image, caption = widgets.Image(format="png"), widgets.HTML()

    def show(t: int) -> None:
        k = pick.value
        image.value = _strip_png(np.stack([truth_u8[t], samples_u8[k][t], spread[t]]), scale)
        what = f"sample {k + 1}: {psnr[k][t]:.1f} dB" if t >= n_past else "conditioning frame"
        caption.value = (f"<b>t = {t}</b>: ground truth · {what} · spread across {len(samples)} samples "
                         f"(mean {spread_mean[t]:.3f})")

    return widgets.VBox([_player(len(truth), fps, [pick], show), caption, image])


def drive_player(model: torch.nn.Module, root: str | Path, split: str, index: int,
                 choices: dict[str, np.ndarray], n_past: int, scale: int = 3, fps: int = 4):
    """"Drive the robot": pick an action sequence for scene ``index`` and see the simulator's truth for
    those actions beside the model's prediction given them (``counterfactual.drive``)."""
    import ipywidgets as widgets  # optional (the dev extra), as in _player

    from lab5.counterfactual import drive  # the simulator: only this widget replays scenes
    cache: dict[str, tuple[np.ndarray, np.ndarray, list[float]]] = {}
    menu = widgets.Dropdown(options=list(choices), description="actions")
    image, caption = widgets.Image(format="png"), widgets.HTML()

    def drawn(name: str) -> tuple[np.ndarray, np.ndarray, list[float]]:
        if name not in cache:
            truth, pred = drive(model, root, split, index, choices[name], n_past)
            psnr = psnr_per_frame(pred[None], truth[None])[0].tolist()
            pred_u8 = to_uint8(pred)
            _red_border(pred_u8[n_past:])
            cache[name] = to_uint8(truth), pred_u8, psnr
        return cache[name]

    def show(t: int) -> None:
        truth, pred, psnr = drawn(menu.value)
        image.value = _strip_png(np.stack([truth[t], pred[t]]), scale)
        what = f"prediction {psnr[t]:.1f} dB" if t >= n_past else "conditioning frame"
        caption.value = f"<b>t = {t}</b>, {menu.value}: simulator's truth · model's {what}"

    return widgets.VBox([_player(len(next(iter(choices.values()))), fps, [menu], show), caption, image])
