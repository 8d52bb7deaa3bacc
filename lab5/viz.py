"""Figures and animations: plot helpers return a ``Figure``; the caller decides where to save it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from PIL import Image

from lab5.config import Config
from lab5.evaluate import generate, psnr_per_frame


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``[..., 3, H, W]`` floats in [0, 1] -> ``[..., H, W, 3]`` uint8."""
    arr = frames.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return arr.movedim(-3, -1).cpu().numpy()


@torch.no_grad()
def predict_samples(model: torch.nn.Module, x: torch.Tensor, c: torch.Tensor, cfg: Config,
                    samples: int = 1, seed: int = 0) -> torch.Tensor:
    """``[S, B, T, 3, H, W]``: each sample is the conditioning frames followed by predictions."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    out = []
    for _ in range(samples):
        pred = generate(model, x, c, cfg.n_past, cfg.n_future, gen)
        out.append(torch.cat([x[:, :cfg.n_past], pred], 1))
    return torch.stack(out)


def prediction_gif(model: torch.nn.Module, dataset: torch.utils.data.Dataset, cfg: Config,
                   out: str | Path, indices: Iterable[int] = range(4), samples: int = 3,
                   seed: int = 0, device: str | torch.device = "cpu", fps: int = 4) -> Path:
    """A GIF with one row per sequence: ground truth, then ``samples`` predictions, side by side.

    A header names the columns; a footer says which frame t is shown and whether it is a
    conditioning frame (ground truth everywhere) or a predicted one, which also gets a red
    border in the sample columns.
    """
    idx = [i for i in indices if i < len(dataset)]
    x = torch.stack([dataset[i][0][:cfg.n_frames] for i in idx]).to(device)
    c = torch.stack([dataset[i][1][:cfg.n_frames] for i in idx]).to(device)
    pred = to_uint8(predict_samples(model, x, c, cfg, samples, seed))   # [S,B,T,H,W,3]
    truth = to_uint8(x)                                                  # [B,T,H,W,3]
    for t in range(cfg.n_past, cfg.n_frames):  # red border on predicted frames
        for edge in (np.s_[:, :, t, :2], np.s_[:, :, t, -2:], np.s_[:, :, t, :, :2], np.s_[:, :, t, :, -2:]):
            pred[edge] = (220, 30, 30)
    columns = ["ground truth"] + [f"sample {s + 1}" for s in range(samples)]
    frames = []
    for t in range(cfg.n_frames):
        rows = [np.concatenate([truth[b, t]] + [pred[s, b, t] for s in range(samples)], 1)
                for b in range(len(idx))]
        grid = Image.fromarray(np.concatenate(rows, 0))
        grid = grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST)
        kind = "conditioning frame (given)" if t < cfg.n_past else "predicted frame (red border)"
        frames.append(_caption_frame(grid, columns, f"t = {t}: {kind}"))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=1000 // fps, loop=0)
    return out


def _caption_frame(grid: "Image.Image", columns: list[str], footer: str, band: int = 16) -> "Image.Image":
    """``grid`` with a white header naming its equal-width columns and a footer line."""
    from PIL import ImageDraw

    out = Image.new("RGB", (grid.width, grid.height + 2 * band), (255, 255, 255))
    out.paste(grid, (0, band))
    draw = ImageDraw.Draw(out)
    width = grid.width // len(columns)
    for k, name in enumerate(columns):
        draw.text((k * width + 4, 2), name, fill=(0, 0, 0))
    draw.text((4, band + grid.height + 2), footer, fill=(0, 0, 0))
    return out


# --- figures for the notebooks ----------------------------------------------------------------
# Every helper builds a ``matplotlib.figure.Figure`` directly (not through pyplot), so
# nothing is shown twice in a notebook and nothing stays open in a script: the cell that
# returns the figure displays it, and ``lab5.workbook.save_figure`` writes it.

def _figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (5.0, 3.2), **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _frames_uint8(frames) -> np.ndarray:
    """``[..., 3, H, W]`` float tensors or ``[..., H, W, 3]`` uint8 arrays -> uint8 ``[..., H, W, 3]``."""
    if isinstance(frames, torch.Tensor):
        return to_uint8(frames)
    arr = np.asarray(frames)
    return arr if arr.dtype == np.uint8 else to_uint8(torch.as_tensor(arr))


def plot_history(history: list[dict], title: str = "", copy_last: float | None = None) -> "Figure":
    """The report's Figs. 3.2/3.3 for one run: loss and MSE; KL with β; validation PSNR with
    the teacher-forcing ratio — one panel each, against the epoch. The loss and KL panels
    are on log scales (a β step makes the loss jump by orders of magnitude for an epoch);
    ``copy_last``, the copy-last-frame PSNR of the validation sequences, is drawn as a line."""
    rows = [r for r in history if "epoch" in r]
    ep = [r["epoch"] for r in rows]
    fig, axes = _figure(3, size=(4.2, 3.0))
    ax = axes[0, 0]
    ax.plot(ep, [r["loss"] for r in rows], "o-", label="loss (MSE + β·KL)")
    ax.plot(ep, [r["mse"] for r in rows], "s--", label="MSE (sum over frames)")
    ax.set(xlabel="epoch", ylabel="per batch", title="training loss", yscale="log")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.plot(ep, [r["kl"] for r in rows], "o-", color="C2", label="KL")
    ax.set(xlabel="epoch", ylabel="KL (sum over frames)", title="KL and β")
    if all(r["kl"] > 0 for r in rows):
        ax.set_yscale("log")
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


def plot_schedules(panels: dict[str, dict[str, "Callable[[int], float]"]], epochs: int | dict[str, int]) -> "Figure":
    """One panel per schedule family: ``{"KL annealing β": {"monotonic": KLAnnealing(...), ...}}``.

    Each schedule is a callable of the epoch (lab5's ``KLAnnealing``, ``TeacherForcing``),
    drawn as steps over ``epochs`` (one int, or one per panel title).
    """
    fig, axes = _figure(len(panels), size=(5.0, 3.0))
    for ax, (title, curves) in zip(axes[0], panels.items()):
        n = epochs[title] if isinstance(epochs, dict) else epochs
        for label, schedule in curves.items():
            ax.stairs([schedule(e) for e in range(n)], range(n + 1), baseline=None, label=label, linewidth=1.5)
        ax.set(xlabel="epoch", title=title, ylim=(-0.05, 1.08))
        ax.legend(fontsize=8)
    return fig


def frame_grid(frames, labels: list[str] | None = None, title: str = "", every: int = 1,
               n_past: int | None = None) -> "Figure":
    """Rows of frames: ``[rows, T, 3, H, W]`` (tensor) or ``[rows, T, H, W, 3]`` (uint8).

    ``every`` keeps every k-th frame; frames at index >= ``n_past`` get a red frame, as
    in the GIFs, when ``n_past`` is given.
    """
    arr = _frames_uint8(frames)[:, ::every]
    rows, cols = arr.shape[:2]
    fig, axes = _figure(cols, rows, size=(0.95, 1.0))
    for r in range(rows):
        for k in range(cols):
            ax = axes[r, k]
            ax.imshow(arr[r, k], interpolation="nearest")   # crisp pixels, small PNGs
            ax.set_xticks([])
            ax.set_yticks([])
            t = k * every
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


def filmstrip(truth: torch.Tensor, samples: torch.Tensor, n_past: int, n_samples: int = 3) -> "Figure":
    """Static stand-in for the frame player: ground truth, best sample and other samples as rows.

    ``truth`` ``[T, 3, H, W]``; ``samples`` ``[S, T, 3, H, W]`` (conditioning frames included).
    """
    rows, labels = strip_rows(truth, samples, n_past, n_samples)
    return frame_grid(np.stack(rows), labels, n_past=n_past)


def strip_rows(truth: torch.Tensor, samples: torch.Tensor, n_past: int,
               n_samples: int = 3) -> tuple[list[np.ndarray], list[str]]:
    """Ground truth, the best sample by PSNR (SVG's best-of-N) and the first other samples."""
    from lab5.evaluate import psnr_per_frame

    psnr = psnr_per_frame(samples[:, n_past:], truth[None, n_past:].expand_as(samples[:, n_past:])).mean(1)
    best = int(psnr.argmax())
    others = [s for s in range(samples.shape[0]) if s != best][:n_samples]
    rows = [to_uint8(truth), to_uint8(samples[best])] + [to_uint8(samples[s]) for s in others]
    labels = ["ground\ntruth", f"best of {samples.shape[0]}\n{float(psnr[best]):.1f} dB"]
    labels += [f"sample {s + 1}\n{float(psnr[s]):.1f} dB" for s in others]
    return rows, labels


def plot_per_frame(curves: dict[str, "Iterable[float]"], start: int = 0, ylabel: str = "PSNR (dB)",
                   title: str = "", ax=None) -> "Figure":
    """Per-frame curves (one value per frame index from ``start``) on one axis."""
    if ax is None:
        fig, axes = _figure(size=(5.0, 3.2))
        ax = axes[0, 0]
    else:
        fig = ax.figure
    for label, values in curves.items():
        values = list(values)
        ax.plot(range(start, start + len(values)), values, "o-", ms=3, label=label)
    ax.set(xlabel="frame index t", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    return fig


def plot_eval_curves(results: dict) -> "Figure":
    """PSNR and SSIM per predicted frame, the model against copy-last-frame (from ``evaluate_model``)."""
    p = results["protocol"]
    start = p["n_past"]
    fig, axes = _figure(2 if "ssim" in results else 1, size=(4.8, 3.2))
    plot_per_frame({"CVAE": results["psnr"]["per_frame"], "copy last frame": results["copy_last"]["psnr_per_frame"]},
                   start, "PSNR (dB)", "PSNR per predicted frame", ax=axes[0, 0])
    if "ssim" in results:
        plot_per_frame({"CVAE": results["ssim"]["per_frame"], "copy last frame": results["copy_last"]["ssim_per_frame"]},
                       start, "SSIM", "SSIM per predicted frame", ax=axes[0, 1])
    fig.suptitle(f"{p['split']} split, {p['sequences']} sequences, {p['samples']} sample(s) each", fontsize=10)
    return fig


def plot_conditions(df) -> "Figure":
    """Action and end-effector statistics (seaborn) from a long table with columns
    ``sequence, t, dx, dy, closure, height, ee_x, ee_y, ee_z`` (see ``lab5.explore.conditions_table``)."""
    import seaborn as sns

    fig, axes = _figure(4, size=(3.6, 3.0))
    moves = df.melt(value_vars=["dx", "dy"], var_name="action", value_name="metres per held pair")
    sns.histplot(moves, x="metres per held pair", hue="action", bins=40, element="step", ax=axes[0, 0])
    axes[0, 0].set_title("actions 0-1: displacement")
    cmds = df.melt(value_vars=["closure", "height"], var_name="command", value_name="value")
    sns.countplot(cmds, x="value", hue="command", ax=axes[0, 1])
    axes[0, 1].set_title("actions 2-3: gripper, height")
    few = df[df["sequence"] < 8]
    sns.lineplot(few, x="ee_y", y="ee_x", hue="sequence", sort=False, estimator=None, palette="tab10",
                 legend=False, ax=axes[0, 2])
    axes[0, 2].invert_yaxis()
    axes[0, 2].set_title("end-effector paths (8 sequences)")
    sns.histplot(df, x="ee_z", bins=30, ax=axes[0, 3])
    axes[0, 3].set_title("end-effector height")
    return fig


def frame_player(truth: torch.Tensor, samples: torch.Tensor, n_past: int, n_samples: int = 3,
                 scale: int = 3, fps: int = 4):
    """An ipywidgets player: Play and IntSlider (linked with jslink) over frame t, and an Image
    showing ground truth, the best sample and other samples side by side (red border:
    predicted frames). Returns the widget box to display."""
    import io

    import ipywidgets as widgets

    rows, labels = strip_rows(truth, samples, n_past, n_samples)
    T = rows[0].shape[0]

    def png(t: int) -> bytes:
        panels = []
        for k, row in enumerate(rows):
            frame = row[t].copy()
            if k > 0 and t >= n_past:  # predicted frame
                frame[:2], frame[-2:], frame[:, :2], frame[:, -2:] = (220, 30, 30), (220, 30, 30), \
                    (220, 30, 30), (220, 30, 30)
            panels.append(frame)
            panels.append(np.full((frame.shape[0], 4, 3), 255, np.uint8))
        img = Image.fromarray(np.concatenate(panels[:-1], 1))
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    play = widgets.Play(value=0, min=0, max=T - 1, interval=1000 // fps, description="play")
    slider = widgets.IntSlider(value=0, min=0, max=T - 1, description="frame t")
    widgets.jslink((play, "value"), (slider, "value"))
    image = widgets.Image(value=png(0), format="png")
    caption = widgets.HTML()

    shown = torch.from_numpy(np.stack(rows)).float() / 255  # [rows, T, H, W, 3], as displayed
    psnr = psnr_per_frame(shown[1:], shown[:1].expand_as(shown[1:])).tolist()  # [samples][T]

    def show(t: int) -> None:
        image.value = png(t)
        names = ["ground truth"] + [label.split("\n")[0] for label in labels[1:]]  # no sequence dB
        if t < n_past:
            parts = [f"{name}" for name in names]
            kind = "conditioning frame (ground truth in every panel)"
        else:
            parts = [names[0]] + [f"{name}: {p[t]:.1f} dB" for name, p in zip(names[1:], psnr)]
            kind = "predicted frame, PSNR of this frame"
        caption.value = f"<b>t = {t}</b>: {kind} &nbsp;|&nbsp; " + " &nbsp;·&nbsp; ".join(parts)

    slider.observe(lambda change: show(change["new"]), names="value")
    show(0)
    return widgets.VBox([widgets.HBox([play, slider]), caption, image])
