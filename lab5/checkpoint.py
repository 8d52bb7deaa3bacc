"""Checkpoints: one dict per file, written atomically, loaded with ``weights_only=True``.

A checkpoint holds ``{format, model, optimizer, config, cond_dim, image_size, schedules,
epoch, iteration, history, best, accumulators, rng}``. ``save_checkpoint`` writes a
temporary file and ``os.replace``s it, so a kill at any moment leaves either the old or
the new file, never a torn one. ``load_checkpoint`` refuses arbitrary pickles and names
the file in every error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lab5.config import Config, ConfigError

FORMAT = 1
# Fields that change the shapes of the model's parameters: a mismatch cannot be loaded.
ARCH_FIELDS = ("arch", "nf", "g_dim", "z_dim", "rnn_size", "predictor_rnn_layers",
               "posterior_rnn_layers", "prior_rnn_layers", "prior")


class CheckpointError(RuntimeError):
    """A missing, truncated, foreign or mismatched checkpoint file."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, then os.replace)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict with weights_only=True; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path}: cannot read checkpoint (truncated, corrupt or not a lab5 "
                              f"checkpoint): {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}") from exc
    missing = [k for k in ("format", "model", "config", "cond_dim") if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a lab5 checkpoint (missing {', '.join(missing)})")
    return state


def checkpoint_config(state: dict[str, Any], path: str | Path) -> Config:
    try:
        return Config.from_dict(state["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: checkpoint config is invalid: {exc}") from exc


def check_compatible(state: dict[str, Any], cfg: Config, cond_dim: int, path: str | Path) -> None:
    """Raise CheckpointError naming every architecture field where checkpoint and model differ."""
    saved = state["config"]
    diffs = [f"{k}: checkpoint {saved.get(k)!r} != model {getattr(cfg, k)!r}"
             for k in ARCH_FIELDS if saved.get(k) != getattr(cfg, k)]
    if state["cond_dim"] != cond_dim:
        diffs.append(f"cond_dim: checkpoint {state['cond_dim']} != data {cond_dim}")
    if diffs:
        raise CheckpointError(f"{path}: checkpoint does not match the model being built ("
                              + "; ".join(diffs) + ")")


def load_model(run_dir_or_file: str | Path, device: str | torch.device = "cpu",
               which: str = "best.pt") -> tuple[torch.nn.Module, Config, dict[str, Any]]:
    """Rebuild the CVAE of a run directory (or a checkpoint file) in eval mode."""
    from lab5.models.cvae import CVAE

    path = Path(run_dir_or_file)
    if path.is_dir():
        path = path / which if (path / which).is_file() else path / "last.pt"
    state = load_checkpoint(path, map_location=device)
    cfg = checkpoint_config(state, path)
    model = CVAE(cfg, state["cond_dim"], image_size=state.get("image_size", 64))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model: {str(exc).splitlines()[0]}") from exc
    return model.to(device).eval(), cfg, state


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """A small, shippable copy of a run: ``best.pt`` without the optimizer state, config, history.

    The optimizer's Adam moments double a checkpoint's size and only matter for resuming,
    which a shipped model is not meant for; everything needed to evaluate it is kept.
    """
    import shutil

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    src = run_dir / "best.pt" if (run_dir / "best.pt").is_file() else run_dir / "last.pt"
    state = load_checkpoint(src)
    state["optimizer"] = None
    state["rng"] = None
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(state, out_dir / "best.pt")
    checkpoint_config(state, src).to_json(out_dir / "config.json")
    if (run_dir / "history.jsonl").is_file():
        shutil.copy2(run_dir / "history.jsonl", out_dir / "history.jsonl")
    return out_dir / "best.pt"
