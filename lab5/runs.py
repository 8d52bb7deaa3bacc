"""Where things live: the embedded datasets, run directories, and ``load_or_train``.

Paths are anchored at the lab5 home: ``$LAB5_HOME`` if set, else the repository
checkout holding this package (an editable install), else ``~/.cache/lab5``. So a
notebook in ``notebooks/``, papermill from the repo root and the CLI all find the
same ``data/`` and ``checkpoints/`` folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from lab5.checkpoint import load_model
from lab5.config import RUNTIME_FIELDS, Config
from lab5.data.dataset import BairDataset
from lab5.hardware import resolve_device

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
    dev = resolve_device(device)
    model, cfg, _ = load_model(run_dir, dev)
    return model, cfg, dev


def evaluation_data(data_root: str | Path | None, split: str, cfg: Config) -> BairDataset:
    """The dataset to evaluate on: ``data_root`` or the embedded evaluation set."""
    root = Path(data_root) if data_root else embedded_root(evaluation=True)
    return BairDataset(root, split, n_frames=cfg.n_frames)


@dataclass
class TrainedRun:
    """A run directory's model (best checkpoint, eval mode), config and history."""

    model: torch.nn.Module
    cfg: Config
    history: list[dict[str, Any]]
    run_dir: Path
    status: str          # "loaded" (finished run found), "resumed" or "trained"
    device: torch.device
    seconds: float = 0.0

    @property
    def best_val_psnr(self) -> float | None:
        vals = [r["val_psnr"] for r in self.history if r.get("val_psnr") is not None]
        return max(vals) if vals else None

    def __str__(self) -> str:
        best = self.best_val_psnr
        best_txt = f"; best val PSNR {best:.2f} dB" if best is not None else ""
        how = {"loaded": "loaded the finished run", "resumed": "resumed and finished the run",
               "trained": "trained"}[self.status]
        took = f" in {self.seconds:.0f} s" if self.status != "loaded" else ""
        return f"{how} {self.run_dir} ({len(self.history)} epochs){took}{best_txt}"


def config_differences(saved: Config, cfg: Config, ignore: tuple[str, ...] = RUNTIME_FIELDS) -> list[str]:
    """``field: stored != asked`` for every field (outside ``ignore``) where the configs differ."""
    a, b = saved.to_dict(), cfg.to_dict()
    return [f"{k}: run has {a[k]!r}, asked {b[k]!r}" for k in a if k not in ignore and a[k] != b[k]]


def load_or_train(cfg: Config, data_root: str | Path, run_dir: str | Path, progress: bool = True,
                  log: Callable[[str], None] = print) -> TrainedRun:
    """Load a finished run, resume a partial one, or train a new one into ``run_dir``.

    * ``run_dir/last.pt`` at ``cfg.epochs`` epochs: loaded, nothing is trained;
    * fewer epochs: resumed (exactly: see ``Solver``) up to ``cfg.epochs``;
    * no ``last.pt``: trained from scratch (leftovers of a run killed before its first
      checkpoint are replaced).

    A stored run whose settings differ from ``cfg`` (other than ``RUNTIME_FIELDS``), or
    that has more epochs than asked, raises ``RunDirError`` naming the differences: a
    notebook never silently shows a run other than the one its parameters describe.
    ``progress`` shows the Solver's bars and epoch lines; otherwise one line per epoch
    goes to ``log``.
    """
    import time

    from lab5.checkpoint import checkpoint_config, load_checkpoint
    from lab5.solver import RunDirError, Solver, read_history

    run_dir, data_root = Path(run_dir), Path(data_root)
    last = run_dir / "last.pt"
    status = "trained"
    if last.is_file():
        state = load_checkpoint(last)
        saved = checkpoint_config(state, last)
        diffs = config_differences(saved, cfg)
        if diffs:
            raise RunDirError(f"{run_dir}: holds a run with other settings ({'; '.join(diffs)}); "
                              "pass another run_dir, or delete this one to retrain")
        if state["epoch"] > cfg.epochs:
            raise RunDirError(f"{run_dir}: holds a run of {state['epoch']} epochs but {cfg.epochs} were "
                              f"asked; ask for epochs={state['epoch']} or pass another run_dir")
        status = "loaded" if state["epoch"] == cfg.epochs else "resumed"
        stored_root = run_dir / "data_root.txt"
        if stored_root.is_file() and stored_root.read_text().strip() != str(data_root.resolve()):
            log(f"note: {run_dir} was trained on {stored_root.read_text().strip()}, not {data_root.resolve()}")
    t0 = time.perf_counter()
    if status != "loaded":
        solver = Solver(cfg, data_root, run_dir, resume=status == "resumed", force=status == "trained",
                        progress=progress)
        while solver.epoch < solver.cfg.epochs:
            t_epoch = time.perf_counter()
            row = solver.train_epoch()
            if not progress:
                val = f", val PSNR {row['val_psnr']:.2f} dB" if row["val_psnr"] is not None else ""
                log(f"epoch {row['epoch']}/{solver.cfg.epochs}: loss {row['loss']:.4f}, mse {row['mse']:.4f}, "
                    f"kl {row['kl']:.3f}, beta {row['beta']:.3g}, tf {row['tf_ratio']:.2f}{val} "
                    f"({time.perf_counter() - t_epoch:.0f} s)")
    model, saved_cfg, device = load_run(run_dir, cfg.device)
    history = [row for row in read_history(run_dir) if "epoch" in row]
    return TrainedRun(model, saved_cfg, history, run_dir, status, device, time.perf_counter() - t0)
