"""The run directory: its file names, config, data root, history and checkpoints, and the shipped runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lab5.config import ARCH_FIELDS, RESUMABLE_FIELDS, RUNTIME_FIELDS, Config, ConfigError
from lab5.files import check_writable, home, read_jsonl, to_jsonl, write_atomic
from lab5.hardware import resolve_device
from lab5.models.cvae import CVAE

# The files of a run directory. history.jsonl holds one JSON object per epoch (loss, mse, kl,
# beta, tf_ratio, tf_used, val_psnr), then event rows such as {"event": "nonfinite", ...}.
CONFIG, DATA_ROOT, LAST, BEST, HISTORY = "config.json", "data_root.txt", "last.pt", "best.pt", "history.jsonl"
RUN_FILES = (CONFIG, LAST, BEST, HISTORY)
FORMAT = 1  # of a checkpoint dict
#: The latent preset's shipped checkpoints (docs/results.md: their betas): the learned prior given the actions and
#: start position only (the arm's future must come from the actions), given nothing, and its deterministic baseline.
SHIPPED_LATENT = {"LP, actions+start": "latent-start", "LP, action-free": "latent-free",
                  "deterministic, action-free": "latent-det"}


class RunDirError(RuntimeError):
    """A run directory that cannot be written, or that holds another run than the one asked for."""


class CheckpointError(RuntimeError):
    """A missing, truncated, foreign or mismatched checkpoint file."""


def shipped_demo() -> Path:
    """The demo preset's trained checkpoint that ships with the repository."""
    return home() / "checkpoints" / "demo"


def shipped_latent() -> dict[str, Path]:
    """``SHIPPED_LATENT``'s run directories; RunDirError naming the first one missing."""
    runs = {label: home() / "checkpoints" / name for label, name in SHIPPED_LATENT.items()}
    for path in runs.values():
        if not has_checkpoint(path):
            raise RunDirError(f"{path}: the shipped {path.name} checkpoint is missing (docs/results.md: "
                              "'The shipped latent checkpoints' trains it)")
    return runs


def checkpoint_file(run_dir: str | Path) -> Path:
    """The checkpoint a run is evaluated with: best.pt (best validation PSNR), else last.pt."""
    run_dir = Path(run_dir)
    return run_dir / BEST if (run_dir / BEST).is_file() else run_dir / LAST


def has_checkpoint(run_dir: str | Path) -> bool:
    return checkpoint_file(run_dir).is_file()


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """A checkpoint dict (``Solver.state_dict``), written atomically: a failed write (a full disk) raises OSError
    and leaves the previous file whole."""
    write_atomic(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint dict, loaded with weights_only=True (no arbitrary pickles); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        first = (str(exc).splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path}: cannot read checkpoint (truncated, corrupt or not a lab5 "
                              f"checkpoint): {type(exc).__name__}: {first}") from exc
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
    """Raise CheckpointError naming every architecture field where checkpoint and model differ (a field newer
    than the checkpoint counts as its default, the behaviour the checkpoint was trained with)."""
    saved = checkpoint_config(state, path)
    diffs = [f"{k}: checkpoint {getattr(saved, k)!r} != model {getattr(cfg, k)!r}"
             for k in ARCH_FIELDS if getattr(saved, k) != getattr(cfg, k)]
    if state["cond_dim"] != cond_dim:
        diffs.append(f"cond_dim: checkpoint {state['cond_dim']} != data {cond_dim}")
    if diffs:
        raise CheckpointError(f"{path}: checkpoint does not match the model being built ({'; '.join(diffs)})")


def load_model(run_dir_or_file: str | Path, device: str | torch.device = "cpu"
               ) -> tuple[CVAE, Config, dict[str, Any]]:
    """The CVAE of a run directory (its ``checkpoint_file``) or of a checkpoint file, in eval mode."""
    path = Path(run_dir_or_file)
    path = checkpoint_file(path) if path.is_dir() else path
    state = load_checkpoint(path, map_location=device)
    cfg = checkpoint_config(state, path)
    model = CVAE(cfg, state["cond_dim"], image_size=state.get("image_size", 64), action_dim=state.get("action_dim"))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model: {str(exc).splitlines()[0]}") from exc
    return model.to(device).eval(), cfg, state


def load_run(run_dir: str | Path, device: str = "auto") -> tuple[CVAE, Config, torch.device]:
    """A run's model on ``device`` (``auto``: CUDA when there is one), its config and the device."""
    model, cfg, _ = load_model(run_dir, dev := resolve_device(device))
    return model, cfg, dev


def export_run(run_dir: str | Path, out_dir: str | Path, which: str = "best") -> Path:
    """A small shippable copy of a run: best.pt without the optimizer state (Adam's moments double the size),
    config.json and history.jsonl; ``which`` "best" (``checkpoint_file``) or "last" (the state after the last step)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if which not in ("best", "last"):
        raise ValueError(f"export: which must be 'best' or 'last', got {which!r}")
    src = checkpoint_file(run_dir) if which == "best" else run_dir / LAST
    if not src.is_file():
        raise RunDirError(f"{src}: no checkpoint to export")
    state = {**load_checkpoint(src), "optimizer": None, "rng": None}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(state, out_dir / BEST)
    write_atomic(out_dir / CONFIG, checkpoint_config(state, src).to_json())
    if (run_dir / HISTORY).is_file():
        write_atomic(out_dir / HISTORY, (run_dir / HISTORY).read_bytes())
    return out_dir / BEST


def prepare(run_dir: Path, resume: bool, force: bool) -> None:
    """Check that ``run_dir`` can be written and, unless resuming, holds no other run (``force`` removes it)."""
    try:
        check_writable(run_dir)
    except OSError as exc:
        raise RunDirError(f"{run_dir}: run directory cannot be written ({exc.strerror or exc})") from exc
    existing = [] if resume else [name for name in RUN_FILES if (run_dir / name).exists()]
    if existing and not force:
        raise RunDirError(f"{run_dir}: already holds a run ({', '.join(existing)}); "
                          "use --resume to continue it or --force to replace it")
    for name in existing:
        (run_dir / name).unlink()


def write_config(run_dir: Path, cfg: Config, resolved: dict[str, Any], data_root: Path) -> None:
    """config.json (with what the auto switches resolved to) and data_root.txt; RunDirError naming a file that
    cannot be written (a full disk), before any training."""
    for name, text in ((CONFIG, cfg.to_json(resolved=resolved)), (DATA_ROOT, str(data_root.resolve()) + "\n")):
        try:
            write_atomic(run_dir / name, text)
        except OSError as exc:
            raise RunDirError(f"cannot write {run_dir / name}: {exc.strerror or exc}; nothing was trained") from exc


def read_data_root(run_dir: str | Path) -> str | None:
    path = Path(run_dir) / DATA_ROOT
    return path.read_text().strip() if path.is_file() else None


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's history.jsonl: one per epoch, then events such as non-finite stops."""
    path = Path(run_dir) / HISTORY
    if not path.is_file():
        raise RunDirError(f"{path}: no history file")
    return read_jsonl(path)


def write_history(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    write_atomic(run_dir / HISTORY, to_jsonl(rows))


def resume_config(run_dir: Path, cfg: Config | None) -> Config:
    """The config a resume of ``run_dir`` continues with: the run's own, with the changes ``cfg``
    asks for, which only ``RESUMABLE_FIELDS`` may carry."""
    path = run_dir / LAST
    if not path.is_file():
        raise RunDirError(f"{run_dir}: nothing to resume (no last.pt); start it again with --force")
    state = load_checkpoint(path)
    saved = checkpoint_config(state, path)
    # A last.pt copied in from another run must not silently replace this run's model.
    if (run_dir / CONFIG).is_file():
        check_compatible(state, Config.from_json(run_dir / CONFIG), state["cond_dim"], path)
    changed = saved.diff(cfg) if cfg is not None else {}
    fixed = [f"{k} ({a!r} -> {b!r})" for k, (a, b) in changed.items() if k not in RESUMABLE_FIELDS]
    if fixed:
        raise ConfigError(f"config field(s) {', '.join(fixed)} cannot change on resume; "
                          f"only {', '.join(RESUMABLE_FIELDS)} can (start a new run for the others)")
    return saved.replace(**{k: b for k, (_, b) in changed.items()})


def stored_epochs(run_dir: Path, cfg: Config) -> int | None:
    """Epochs trained in ``run_dir`` (None: no run there yet); raises RunDirError when it holds a run
    with other settings than ``cfg`` (``RUNTIME_FIELDS`` aside) or more epochs than asked."""
    if not (run_dir / LAST).is_file():
        return None
    state = load_checkpoint(run_dir / LAST)
    diffs = checkpoint_config(state, run_dir / LAST).diff(cfg, ignore=RUNTIME_FIELDS)
    if diffs:
        text = "; ".join(f"{k}: run has {a!r}, asked {b!r}" for k, (a, b) in diffs.items())
        raise RunDirError(f"{run_dir}: holds a run with other settings ({text}); "
                          "pass another run_dir, or delete this one to retrain")
    if state["epoch"] > cfg.epochs:
        raise RunDirError(f"{run_dir}: holds a run of {state['epoch']} epochs but {cfg.epochs} were "
                          f"asked; ask for epochs={state['epoch']} or pass another run_dir")
    return state["epoch"]
