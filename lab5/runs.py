"""Where things live: the embedded datasets, run directories, and ``load_or_train``.

Paths are anchored at the lab5 home: ``$LAB5_HOME`` if set, else the repository
checkout holding this package (an editable install), else ``~/.cache/lab5``. So a
notebook in ``notebooks/``, papermill from the repo root and the CLI all find the
same ``data/`` and ``checkpoints/`` folders.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lab5.checkpoint import load_model
from lab5.config import Config
from lab5.data.dataset import BairDataset

# The embedded sets: training data (seed 0) and a held-out evaluation set (another seed).
TRAIN_SEED, EVAL_SEED = 0, 1


def home() -> Path:
    if os.environ.get("LAB5_HOME"):
        return Path(os.environ["LAB5_HOME"])
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").is_file():
        return repo
    return Path.home() / ".cache" / "lab5"


def embedded_root(evaluation: bool = False) -> Path:
    """The embedded simulated dataset, generated on first use (deterministic from its seed)."""
    from lab5.data.synthetic import make_synthetic

    if evaluation:
        root = home() / "data" / f"embedded-eval-seed{EVAL_SEED}"
        make_synthetic(root, seed=EVAL_SEED)
    else:
        root = home() / "data" / f"embedded-seed{TRAIN_SEED}"
        make_synthetic(root, seed=TRAIN_SEED)
    return root


def shipped_demo() -> Path:
    return home() / "checkpoints" / "demo"


def load_run(run_dir: str | Path, device: str = "auto") -> tuple[torch.nn.Module, Config, torch.device]:
    """The best (else last) checkpoint of a run directory, on ``device``, in eval mode."""
    from lab5.solver import resolve_device

    dev = resolve_device(device)
    model, cfg, _ = load_model(run_dir, dev)
    return model, cfg, dev


def evaluation_data(data_root: str | Path | None, split: str, cfg: Config) -> BairDataset:
    """The dataset to evaluate on: ``data_root`` or the embedded evaluation set."""
    root = Path(data_root) if data_root else embedded_root(evaluation=True)
    return BairDataset(root, split, n_frames=cfg.n_frames)
