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
    rows = []
    for k, seq in enumerate(find_sequences(root, split)[:limit]):
        n = count_frames(seq)
        actions, positions = read_csvs(seq, n)
        block = np.concatenate([actions[:, :4], positions[:, :3]], 1)
        table = pd.DataFrame(block, columns=[*ACTION_NAMES, *POSITION_COLUMNS])
        rows.append(table.assign(sequence=k, t=range(n)))
    table = pd.concat(rows, ignore_index=True)
    return table[["sequence", "t", *ACTION_NAMES, *POSITION_COLUMNS]]


def summary_table(table):
    """Mean, std, min and max of each condition column, rounded for printing."""
    cols = [*ACTION_NAMES, *POSITION_COLUMNS]
    return table[cols].agg(["mean", "std", "min", "max"]).T.round(3)


def real_bair_root() -> Path | None:
    """The real BAIR sample beside the repository (``shared/data/bair_real`` next to the lab5 home), if present."""
    root = Path(home()).resolve().parent / "shared" / "data" / "bair_real"
    return root if root.is_dir() else None


def real_and_simulated(real_root: Path, sim_root: str | Path,
                       n_frames: int = 12) -> tuple[torch.Tensor, dict[str, float]]:
    """First real sequence and first simulated test sequence, ``[2, T, 3, H, W]``, and the
    copy-last-frame PSNR (frames 2..T−1 from frame 1) of each."""
    split = present_splits(real_root, "no train/validate/test split folders")[0]
    real = BairDataset(real_root, split, n_frames=n_frames, validate=False)[0][0]
    sim = BairDataset(sim_root, "test", n_frames=n_frames, validate=False)[0][0]
    pair = torch.stack([real, sim])
    psnr = {name: float(copy_last_psnr(pair[i:i + 1]).mean())
            for i, name in enumerate(("real", "simulated"))}
    return pair, psnr


def action_dependence(n: int = 8, seed: int = 0, n_frames: int = 12) -> dict[str, Any]:
    """Do frames depend on actions? For ``n`` test scenes of the embedded set (dataset ``seed``):
    replay each scene's own actions (must reproduce it exactly), then the next scene's actions.
    Returns the PSNR between original and shuffled-action rollouts over frames 2..T−1, beside
    copy-last-frame PSNR on the same frames for scale, and one example pair."""
    seeds = [sequence_seed(seed, "test", i) for i in range(n)]
    runs = [simulate_sequence(s, n_frames) for s in seeds]
    replay_same = all(np.array_equal(simulate_sequence(s, n_frames, actions=a)[0], f)
                      for s, (f, a, _) in zip(seeds, runs))
    shuffled = [simulate_sequence(s, n_frames, actions=runs[(i + 1) % n][1])[0] for i, s in enumerate(seeds)]
    to_t = lambda a: torch.from_numpy(np.stack(a)).permute(0, 1, 4, 2, 3).float() / 255  # noqa: E731
    orig, other = to_t([f for f, _, _ in runs]), to_t(shuffled)
    between = psnr_per_frame(other[:, 2:], orig[:, 2:])
    moved = [np.abs(runs[i][2][2:, :2] - runs[(i + 1) % n][2][2:, :2]).mean() for i in range(n)]
    return {"scenes": n, "replay with own actions is identical": replay_same,
            "PSNR original vs other actions (dB)": float(between.mean()),
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
    B = x.shape[0]
    h, skips = model.encoder(x[:, 0])
    hidden = model.init_hidden(B, x.device)
    z, mu, _ = model.posterior(model.encoder(x[:, 1])[0], hidden)
    sizes = ", ".join(str(s.shape[-1]) for s in skips)
    rows = [("encoder", _shape(x[:, 0]), f"h {_shape(h)} + skips at {sizes} px",
             count_parameters(model.encoder))]
    if model.posterior_net is not None:
        rows.append(("posterior q(z_t | x_<=t)", f"h_t {_shape(h)}", f"z, mu, logvar {_shape(z)}",
                     count_parameters(model.posterior_net)))
    if model.prior_net is not None:
        zp = model.prior(h, hidden)[0]
        rows.append(("learned prior p(z_t | x_<t)", f"h_t-1 {_shape(h)}", f"z, mu, logvar {_shape(zp)}",
                     count_parameters(model.prior_net)))
    elif model.z_dim:
        rows.append(("fixed prior N(0, I)", "-", f"z {_shape(z)}", 0))
    inp = torch.cat([h, z, c[:, 0, model.cond_columns].to(h.dtype)], 1)
    g, _ = model.predictor(inp, hidden["predictor"])
    rows.append(("predictor (LSTM)", f"[h, z, c] {_shape(inp)}", f"g {_shape(g)}",
                 count_parameters(model.predictor)))
    x_hat = model.decoder(g, skips)
    rows.append(("decoder", f"g {_shape(g)} + skips", f"x_hat {_shape(x_hat)}",
                 count_parameters(model.decoder)))
    rows.append(("total", "", "", count_parameters(model)))
    model.train(was_training)
    return pd.DataFrame(rows, columns=["module", "input", "output", "parameters"]).set_index("module")


def compare_steps(model: torch.nn.Module, x: torch.Tensor, c: torch.Tensor, beta: float, seed: int = 0) -> dict[str, Any]:
    """The model's loss computed the ``reference`` and the ``exact`` way on the same batch-major
    ``x``/``c``, weights and noise (train mode, as in training): loss and gradients; BatchNorm
    statistics are restored."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out: dict[str, Any] = {}
    for tf in (True, False):
        results = {}
        for name in ("reference", "exact"):
            model.load_state_dict(state)
            model.train()
            model.zero_grad()
            torch.manual_seed(seed)
            r = model(x, c, beta, tf, step=name)
            r.loss.backward()
            grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
            results[name] = (r.loss.item(), r.mse.item(), r.kld.item(), grads)
        ref, ex = results["reference"], results["exact"]
        key = "teacher forcing" if tf else "predictions fed back"
        # Booleans, not raw differences: float rounding differs between CPUs, the verdict does not.
        out[key] = {"reference loss": ref[0], "exact loss": ex[0],
                    "losses equal (rel. 1e-5)": abs(ref[0] - ex[0]) <= 1e-5 * max(1.0, abs(ref[0])),
                    # Relative to the largest gradient: conv biases ahead of BatchNorm have ~0
                    # gradient, so elementwise relative checks would only compare rounding noise.
                    "gradients equal (rel. 1e-4)":
                        bool((ref[3] - ex[3]).abs().max() <= 1e-4 * ref[3].abs().max()),
                    "parameters with a gradient": int(ref[3].numel())}
    model.load_state_dict(state)
    model.zero_grad(set_to_none=True)
    return out


def copy_last_curve(root: str | Path, split: str = "test", limit: int = 256,
                    ref: int = 1) -> np.ndarray:
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
