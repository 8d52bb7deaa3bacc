"""Looking at the data and the model: the helpers behind notebooks 02 (splits, conditions as a
long table for seaborn, copy-last PSNR by horizon, real BAIR beside the simulator, action
dependence) and 03 (each module's shapes and parameter counts, reference vs exact step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lab5.data.dataset import BairDataset
from lab5.data.layout import count_frames, find_sequences, present_splits, read_csvs
from lab5.metrics import copy_last_psnr, psnr_per_frame
from lab5.files import home
from lab5.sim import sequence_seed, simulate_sequence
from lab5.sim.world import ACTION_NAMES
from lab5.models.cvae import count_parameters

POSITION_COLUMNS = ("ee_x", "ee_y", "ee_z")


def describe_data(root: str | Path) -> list[str]:
    """One line per split present: sequences, frames, image size and condition widths."""
    lines = []
    for split in present_splits(Path(root), "no train/validate/test split folders"):
        ds = BairDataset(root, split, n_frames=None, validate=False)
        lines.append(f"{split:<9} {len(ds):5d} sequences x {ds.seq_len} frames, {ds.image_size}x"
                     f"{ds.image_size} RGB, actions {ds.action_dim}, end-effector {ds.position_dim} "
                     f"(condition width {ds.cond_dim})")
    return lines


def load_frames(root: str | Path, split: str, count: int, n_frames: int | None = None) -> torch.Tensor:
    """The first ``count`` sequences of a split as ``[count, T, 3, H, W]`` floats."""
    ds = BairDataset(root, split, n_frames=n_frames, validate=False)
    return torch.stack([ds[i][0] for i in range(min(count, len(ds)))])


def conditions_table(root: str | Path, split: str = "train", limit: int = 256):
    """Actions and end-effector positions of up to ``limit`` sequences (CSVs only) as a long table:
    ``sequence, t, dx, dy, closure, height, ee_x, ee_y, ee_z`` (columns beyond BAIR's 4 + 3 dropped)."""
    columns, tables = [*ACTION_NAMES, *POSITION_COLUMNS], []
    for k, seq in enumerate(find_sequences(root, split)[:limit]):
        actions, positions = read_csvs(seq, n := count_frames(seq))
        block = np.concatenate([actions[:, :4], positions[:, :3]], 1)
        tables.append(pd.DataFrame(block, columns=columns).assign(sequence=k, t=range(n)))
    return pd.concat(tables, ignore_index=True)[["sequence", "t", *columns]]


def summary_table(table):
    """Mean, std, min and max of each condition column, rounded for printing."""
    return table[[*ACTION_NAMES, *POSITION_COLUMNS]].agg(["mean", "std", "min", "max"]).T.round(3)


def real_bair_root() -> Path | None:
    """The real BAIR sample beside the repository (``shared/data/bair_real`` next to the lab5 home), if present."""
    root = Path(home()).resolve().parent / "shared" / "data" / "bair_real"
    return root if root.is_dir() else None


def real_and_simulated(real_root: Path, sim_root: str | Path,
                       n_frames: int = 12) -> tuple[torch.Tensor, dict[str, float]]:
    """First real sequence and first simulated test sequence, ``[2, T, 3, H, W]``, and the
    copy-last-frame PSNR (frames 2..T−1 from frame 1) of each."""
    split = present_splits(real_root, "no train/validate/test split folders")[0]
    pair = torch.stack([BairDataset(root, s, n_frames=n_frames, validate=False)[0][0]
                        for root, s in ((real_root, split), (sim_root, "test"))])
    return pair, {name: float(copy_last_psnr(pair[i:i + 1]).mean()) for i, name in enumerate(("real", "simulated"))}


def action_dependence(n: int = 8, seed: int = 0, n_frames: int = 12) -> dict[str, Any]:
    """Do frames depend on actions? ``n`` embedded test scenes replayed with their own actions (identical) and with
    the next scene's: the PSNR between the rollouts (frames 2..T−1) beside copy-last-frame's, and one example pair."""
    seeds = [sequence_seed(seed, "test", i) for i in range(n)]
    runs = [simulate_sequence(s, n_frames) for s in seeds]
    replay_same = all(np.array_equal(simulate_sequence(s, n_frames, actions=a)[0], f)
                      for s, (f, a, _) in zip(seeds, runs))
    shuffled = [simulate_sequence(s, n_frames, actions=runs[(i + 1) % n][1])[0] for i, s in enumerate(seeds)]
    to_t = lambda a: torch.from_numpy(np.stack(a)).permute(0, 1, 4, 2, 3).float() / 255  # noqa: E731
    orig, other = to_t([f for f, _, _ in runs]), to_t(shuffled)
    moved = [np.abs(runs[i][2][2:, :2] - runs[(i + 1) % n][2][2:, :2]).mean() for i in range(n)]
    return {"scenes": n, "replay with own actions is identical": replay_same,
            "PSNR original vs other actions (dB)": float(psnr_per_frame(other[:, 2:], orig[:, 2:]).mean()),
            "copy-last-frame PSNR (dB)": float(copy_last_psnr(orig).mean()),
            "mean end-effector distance (m)": float(np.mean(moved)),
            "example": torch.stack([orig[0], other[0]])}


# --- model ----------------------------------------------------------------------------------

def _shape(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape)


@torch.no_grad()
def module_table(model: torch.nn.Module, x: torch.Tensor, c: torch.Tensor):
    """Each module of a CVAE with one example input and output shape and its parameter count, for
    batch-major ``x [B, T, 3, H, W]`` and ``c [B, T, C]``; run in eval mode (BatchNorm untouched)."""
    was_training = model.training
    model.eval()
    h, skips = model.encoder(x[:, 0])
    hidden = model.init_hidden(x.shape[0], x.device)
    z = model.posterior(model.encoder(x[:, 1])[0], hidden)[0]
    sizes = ", ".join(str(s.shape[-1]) for s in skips)
    rows = [("encoder", _shape(x[:, 0]), f"h {_shape(h)} + skips at {sizes} px", model.encoder)]
    if model.posterior_net is not None:
        rows.append(("posterior q(z_t | x_<=t)", f"h_t {_shape(h)}", f"z, mu, logvar {_shape(z)}",
                     model.posterior_net))
    if model.prior_net is not None:
        zp = model.prior(h, hidden)[0]
        rows.append(("learned prior p(z_t | x_<t)", f"h_t-1 {_shape(h)}", f"z, mu, logvar {_shape(zp)}",
                     model.prior_net))
    elif model.z_dim:
        rows.append(("fixed prior N(0, I)", "-", f"z {_shape(z)}", None))
    inp = torch.cat([h, z, c[:, 0, model.cond_columns].to(h.dtype)], 1)
    g, _ = model.predictor(inp, hidden["predictor"])
    x_hat = model.decoder(g, skips)
    rows += [("predictor (LSTM)", f"[h, z, c] {_shape(inp)}", f"g {_shape(g)}", model.predictor),
             ("decoder", f"g {_shape(g)} + skips", f"x_hat {_shape(x_hat)}", model.decoder), ("total", "", "", model)]
    model.train(was_training)
    return pd.DataFrame([(*row[:3], count_parameters(row[3])) for row in rows],
                        columns=["module", "input", "output", "parameters"]).set_index("module")


def compare_steps(model: torch.nn.Module, x: torch.Tensor, c: torch.Tensor, beta: float, seed: int = 0) -> dict[str, Any]:
    """The model's loss and gradients computed the ``reference`` and the ``exact`` way on the same batch-major
    ``x``/``c``, weights and noise, in train mode; BatchNorm statistics are restored."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out: dict[str, Any] = {}
    for tf in (True, False):
        results = []
        for step in ("reference", "exact"):
            model.load_state_dict(state)
            model.train()
            model.zero_grad()
            torch.manual_seed(seed)
            r = model(x, c, beta, tf, step=step)
            r.loss.backward()
            grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
            results.append((r.loss.item(), grads))
        (ref, g_ref), (ex, g_ex) = results
        # Booleans, not raw differences: float rounding differs between CPUs, the verdict does not.
        out["teacher forcing" if tf else "predictions fed back"] = {
            "reference loss": ref, "exact loss": ex,
            "losses equal (rel. 1e-5)": abs(ref - ex) <= 1e-5 * max(1.0, abs(ref)),
            # Relative to the largest gradient: conv biases ahead of BatchNorm have ~0
            # gradient, so elementwise relative checks would only compare rounding noise.
            "gradients equal (rel. 1e-4)": bool((g_ref - g_ex).abs().max() <= 1e-4 * g_ref.abs().max()),
            "parameters with a gradient": int(g_ref.numel())}
    model.load_state_dict(state)
    model.zero_grad(set_to_none=True)
    return out


def copy_last_curve(root: str | Path, split: str = "test", limit: int = 256, ref: int = 1) -> np.ndarray:
    """Mean PSNR of copying frame ``ref`` forward, entry k for frame ``ref + 1 + k``, over up to ``limit`` whole
    sequences, one sequence in memory at a time (the lab's baseline: the mean of the first 10 from frame 1)."""
    ds = BairDataset(root, split, n_frames=None, validate=False)
    n = min(limit, len(ds))
    return sum(copy_last_psnr(ds[i][0][None], ref + 1).mean(0).numpy() for i in range(n)) / n


def compare_conditions(real_root: Path, simulated: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of each condition column: the real sample against a simulated table."""
    split = present_splits(real_root, "no train/validate/test split folders")[0]
    real = summary_table(conditions_table(real_root, split))
    sim = summary_table(simulated)
    return pd.concat({"real BAIR": real[["mean", "std"]], "simulated": sim[["mean", "std"]]}, axis=1)
