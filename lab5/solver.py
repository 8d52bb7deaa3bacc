"""The Solver: train, validate, checkpoint and resume a CVAE run.

A run directory holds ``config.json``, ``data_root.txt``, ``last.pt``, ``best.pt`` and
``history.jsonl`` (one JSON object per epoch: loss, mse, kl, beta, tf_ratio, tf_used,
val_psnr; then event rows such as ``{"event": "nonfinite", ...}`` when training stopped).

Reproducibility and resume: the batch order of an epoch is a pure function of
(seed, epoch), the schedules are pure functions of the epoch, and the checkpoint holds
the model, the optimizer, the RNG states (torch's global one for the posterior's noise,
a dedicated generator for the teacher-forcing draws), the epoch and iteration counters,
the running sums of the current epoch and the history. So a run killed at any moment
and resumed from ``last.pt`` replays exactly what the uninterrupted run would have done.

Multi-process training (``torchrun``) wraps the training step in
DistributedDataParallel; each rank takes its share of every global batch and only rank 0
writes files.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from lab5.checkpoint import (FORMAT, CheckpointError, check_compatible, checkpoint_config,
                             load_checkpoint, save_checkpoint)
from lab5.config import RESUMABLE_FIELDS, Config, ConfigError
from lab5.data.dataset import BairDataset
from lab5.evaluate import generate, psnr_per_frame
from lab5.hardware import resolve_device, resolve_precision, trim_cpu_memory, tune_cpu_allocator
from lab5.models.cvae import CVAE
from lab5.progress import progress_bar, write
from lab5.schedules import KLAnnealing, TeacherForcing
from lab5.steps import train_forward

RUN_FILES = ("config.json", "last.pt", "best.pt", "history.jsonl")


class RunDirError(RuntimeError):
    """A run directory that cannot be written, or that already holds another run."""


class TrainingError(RuntimeError):
    """Training stopped on a non-finite loss or gradient."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_batches(n: int, batch_size: int, iters: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of one epoch: a pure function of (seed, epoch).

    ``iters`` of 0 means one pass over the data (a short last batch is kept unless it
    holds a single sequence, which BatchNorm cannot normalise). With ``iters`` set, as
    many fresh permutations as needed are chained.
    """
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if iters == 0:
        order = torch.randperm(n, generator=gen).tolist()
        batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        return [b for b in batches if len(b) > 1]
    stream: list[int] = []
    while len(stream) < iters * batch_size:
        stream += torch.randperm(n, generator=gen).tolist()
    return [stream[i * batch_size:(i + 1) * batch_size] for i in range(iters)]


class TrainStep(nn.Module):
    """The training forward as a module, so DistributedDataParallel can wrap it."""

    def __init__(self, model: CVAE, cfg: Config) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg

    def forward(self, x: torch.Tensor, c: torch.Tensor, beta: float,
                teacher_forcing: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = train_forward(self.model, x, c, beta, teacher_forcing, self.cfg)
        return out.loss, out.mse, out.kld  # a plain tuple: DDP walks the outputs


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world)


class Solver:
    """Train a CVAE on a lab-layout data root into a run directory."""

    def __init__(self, cfg: Config | None, data_root: str | Path, run_dir: str | Path, *,
                 resume: bool = False, force: bool = False, progress: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.data_root = Path(data_root)
        self.progress = progress
        if resume:
            cfg = self._resume_config(cfg)
        elif cfg is None:
            raise ConfigError("a Config is needed unless resuming")
        self.cfg = cfg.validate()
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.bf16, cfg.channels_last, self.device)
        if self.device.type == "cpu":
            tune_cpu_allocator()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.dist = Distributed.from_env(self.device)
        if self.device.type == "cuda" and self.dist.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        seed_everything(cfg.seed + self.dist.rank)

        self.train_set = BairDataset(self.data_root, "train", n_frames=cfg.n_frames,
                                     random_window=cfg.random_window, seed=cfg.seed)
        self.val_set = BairDataset(self.data_root, "validate", n_frames=cfg.n_frames)
        global_batch = cfg.batch_size * self.dist.world
        if global_batch > len(self.train_set):
            raise ConfigError(f"config field 'batch_size': {cfg.batch_size} x {self.dist.world} process(es) "
                              f"is larger than the training split ({len(self.train_set)} sequences in "
                              f"{self.data_root / 'train'})")
        if self.dist.main:  # checked before any training starts
            self._prepare_run_dir(resume, force)

        self.model = CVAE(cfg, self.train_set.cond_dim, image_size=self.train_set.image_size).to(self.device)
        if self.precision.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.kl_schedule = KLAnnealing.from_config(cfg)
        self.tf_schedule = TeacherForcing.from_config(cfg)
        self.tf_generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.epoch, self.iteration, self.best = 0, 0, -math.inf
        self.history: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []  # non-epoch rows of history.jsonl
        self.saved_at: dict[str, int] | None = None  # epoch and iteration of last.pt
        self.acc = _zero_acc()
        if resume:
            self._load_state(load_checkpoint(self.run_dir / "last.pt", map_location=self.device))

        step = TrainStep(self.model, cfg)
        if cfg.compile:
            self.model.encoder.compile()
            self.model.decoder.compile()
        self.step = (nn.parallel.DistributedDataParallel(step) if self.dist.world > 1 else step)
        if self.progress and self.dist.main:
            print(self.summary(), flush=True)
        if self.dist.main and self.precision.warning():
            print(self.precision.warning(), file=sys.stderr, flush=True)

    def summary(self) -> str:
        """One line: the run, the step, the device and what bf16/channels_last resolved to."""
        threads = torch.get_num_threads()
        return (f"training {self.cfg.preset} preset into {self.run_dir}: step {self.cfg.step}, "
                f"{self.precision.describe()}, device {self.device}"
                + (f", {threads} threads" if self.device.type == "cpu" else ""))

    # --- run directory ------------------------------------------------------------
    def _resume_config(self, cfg: Config | None) -> Config:
        path = self.run_dir / "last.pt"
        if not path.is_file():
            raise RunDirError(f"{self.run_dir}: nothing to resume (no last.pt)")
        state = load_checkpoint(path)
        saved = checkpoint_config(state, path)
        # A last.pt copied in from another run must not silently replace this run's model.
        if (self.run_dir / "config.json").is_file():
            check_compatible(state, Config.from_json(self.run_dir / "config.json"), state["cond_dim"], path)
        return saved if cfg is None else saved.replace(**_resume_overrides(saved, cfg))

    def _prepare_run_dir(self, resume: bool, force: bool) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / ".write_test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise RunDirError(f"{self.run_dir}: run directory cannot be written ({exc.strerror or exc})") from exc
        existing = [name for name in RUN_FILES if (self.run_dir / name).exists()]
        if existing and not resume:
            if not force:
                raise RunDirError(f"{self.run_dir}: already holds a run ({', '.join(existing)}); "
                                  "use --resume to continue it or --force to replace it")
            for name in existing:
                (self.run_dir / name).unlink()
        # Rewritten on resume too, so config.json follows what a resume may change (epochs, lr...).
        config = {**self.cfg.to_dict(), "resolved": self.precision.as_dict()}
        _write_atomic(self.run_dir / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
        _write_atomic(self.run_dir / "data_root.txt", str(self.data_root.resolve()) + "\n")

    # --- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": self.cfg.to_dict(),
            "cond_dim": self.train_set.cond_dim,
            "image_size": self.train_set.image_size,
            "schedules": {"epoch": self.epoch, "beta": self.kl_schedule(self.epoch),
                          "tf_ratio": self.tf_schedule(self.epoch)},
            "epoch": self.epoch,
            "iteration": self.iteration,
            "history": self.history,
            "best": self.best,
            "accumulators": dict(self.acc),
            "rng": {"torch": torch.get_rng_state(), "tf": self.tf_generator.get_state(),
                    **({"cuda": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {})},
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        path = self.run_dir / "last.pt"
        check_compatible(state, self.cfg, self.train_set.cond_dim, path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # lr may be lowered on resume (non-finite loss)
            group["lr"] = self.cfg.lr
        self.epoch, self.iteration = state["epoch"], state["iteration"]
        self.saved_at = {"epoch": self.epoch, "iteration": self.iteration}
        self.history, self.best = list(state["history"]), state["best"]
        self.acc = dict(state["accumulators"])
        # Events (non-finite stops) come after the last checkpoint; keep them in history.jsonl.
        if (self.run_dir / "history.jsonl").is_file():
            self.events = [row for row in read_history(self.run_dir) if "event" in row]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        self.tf_generator.set_state(state["rng"]["tf"].cpu())
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)

    def save(self, name: str = "last.pt") -> None:
        if not self.dist.main:
            return
        save_checkpoint(self.state_dict(), self.run_dir / name)
        if name == "last.pt":  # history.jsonl follows last.pt (best.pt is written just before it)
            self.saved_at = {"epoch": self.epoch, "iteration": self.iteration}
            self._write_history()

    def _write_history(self) -> None:
        _write_atomic(self.run_dir / "history.jsonl",
                      "".join(json.dumps(row) + "\n" for row in self.history + self.events))

    # --- training -----------------------------------------------------------------
    def fit(self) -> list[dict[str, Any]]:
        """Train until ``cfg.epochs``; return the history (one dict per epoch)."""
        while self.epoch < self.cfg.epochs:
            self.train_epoch()
        if self.device.type == "cpu":  # the tuned allocator keeps the peak; a kernel lives on
            trim_cpu_memory()
        # Debug hook for tests/test_ddp.py: every rank saves its final weights as rank{r}.pt,
        # so a test can check that DDP kept the replicas identical.
        dump_dir = os.environ.get("LAB5_DUMP_WEIGHTS_DIR")
        if dump_dir:
            Path(dump_dir).mkdir(parents=True, exist_ok=True)
            torch.save(self.model.state_dict(), Path(dump_dir) / f"rank{self.dist.rank}.pt")
        return self.history

    def train_epoch(self) -> dict[str, Any]:
        cfg, t0 = self.cfg, time.perf_counter()
        self.model.train()
        beta, tf_ratio = self.kl_schedule(self.epoch), self.tf_schedule(self.epoch)
        self.train_set.set_epoch(self.epoch)
        batches = epoch_batches(len(self.train_set), cfg.batch_size * self.dist.world,
                                cfg.iters_per_epoch, cfg.seed, self.epoch)
        mine = [b[self.dist.rank::self.dist.world] for b in batches[self.iteration:]]
        # The loader gets a generator of its own: by default creating its iterator draws a
        # seed from torch's global RNG, which a resume mid-epoch would draw a second time.
        loader = DataLoader(self.train_set, batch_sampler=mine, num_workers=cfg.num_workers,
                            pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(cfg.seed * 100_003 + self.epoch))
        bar = progress_bar(loader, total=len(batches), initial=self.iteration,
                           disable=not (self.progress and self.dist.main),
                           desc=f"epoch {self.epoch + 1}/{cfg.epochs}", leave=False)
        for x, c in bar:
            x = x.to(self.device, non_blocking=True)
            c = c.to(self.device, non_blocking=True)
            # One teacher-forcing draw per batch, from a generator the checkpoint keeps.
            use_tf = bool(torch.rand((), generator=self.tf_generator).item() < tf_ratio)
            self.optimizer.zero_grad(set_to_none=True)
            loss, mse, kld = self.step(x, c, beta, use_tf)
            self._check_finite(loss, "loss")
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip or math.inf)
            self._check_finite(grad_norm, "gradient norm")
            self.optimizer.step()
            for key, value in (("loss", loss), ("mse", mse), ("kl", kld)):
                self.acc[key] += float(value.detach())
            self.acc["tf"] += use_tf
            self.acc["n"] += 1
            self.iteration += 1
            bar.set_postfix(loss=f"{self.acc['loss'] / self.acc['n']:.4f}", refresh=False)
            if cfg.checkpoint_every and self.iteration % cfg.checkpoint_every == 0 and self.iteration < len(batches):
                self.save()
        bar.close()
        n = max(self.acc["n"], 1)
        row: dict[str, Any] = {"epoch": self.epoch + 1, "loss": self.acc["loss"] / n, "mse": self.acc["mse"] / n,
                               "kl": self.acc["kl"] / n, "beta": beta, "tf_ratio": tf_ratio,
                               "tf_used": self.acc["tf"] / n, "val_psnr": None}
        if (self.epoch + 1) % cfg.val_every == 0 or self.epoch + 1 == cfg.epochs:
            row["val_psnr"] = self.validate()
        self.history.append(row)
        self.epoch, self.iteration, self.acc = self.epoch + 1, 0, _zero_acc()
        is_best = row["val_psnr"] is not None and row["val_psnr"] > self.best
        if is_best:
            self.best = row["val_psnr"]
            self.save("best.pt")
        self.save()
        if self.progress and self.dist.main:
            val = f", val PSNR {row['val_psnr']:.2f} dB" if row["val_psnr"] is not None else ""
            write(f"epoch {row['epoch']}/{cfg.epochs} ({n} iterations, {time.perf_counter() - t0:.0f} s): "
                  f"loss {row['loss']:.4f}, mse {row['mse']:.4f}, kl {row['kl']:.3f}, beta {beta:.3g}, "
                  f"tf {tf_ratio:.2f}{val}")
        return row

    @torch.no_grad()
    def validate(self) -> float:
        """Validation PSNR under the lab protocol (one prior sample, predictions fed back)."""
        cfg = self.cfg
        self.model.eval()
        n = len(self.val_set) if not cfg.val_sequences else min(cfg.val_sequences, len(self.val_set))
        subset = torch.utils.data.Subset(self.val_set, range(n))
        # A generator of its own, so validation does not perturb the training RNG stream.
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 7919 * (self.epoch + 1))
        total, count = 0.0, 0
        for x, c in DataLoader(subset, batch_size=min(64, max(2, cfg.batch_size)),
                               generator=torch.Generator().manual_seed(cfg.seed)):
            x, c = x.to(self.device), c.to(self.device)
            pred = generate(self.model, x, c, cfg.n_past, cfg.n_future, gen)
            total += float(psnr_per_frame(pred, x[:, cfg.n_past:cfg.n_frames]).mean(1).sum())
            count += x.shape[0]
        self.model.train()
        return total / count

    def _check_finite(self, value: torch.Tensor, what: str) -> None:
        if torch.isfinite(value).all():
            return
        event = {"event": "nonfinite", "what": what, "epoch": self.epoch + 1, "iteration": self.iteration + 1,
                 "last_checkpoint": self.saved_at}
        self.events.append(event)
        if self.dist.main:
            self._write_history()
        where = f"non-finite {what} at epoch {self.epoch + 1}, iteration {self.iteration + 1}; training stopped"
        if self.saved_at is None:
            raise TrainingError(f"{where} before any checkpoint was written; lower lr or set grad_clip "
                                "and start again with --force")
        raise TrainingError(f"{where}, the last good checkpoint is {self.run_dir / 'last.pt'} (saved after "
                            f"{self.saved_at['epoch']} epoch(s) + {self.saved_at['iteration']} iteration(s)); "
                            f"lower lr or set grad_clip, then `python -m lab5 train --resume {self.run_dir} "
                            "--set lr=... grad_clip=...` (or start again)")


def _zero_acc() -> dict[str, float]:
    return {"loss": 0.0, "mse": 0.0, "kl": 0.0, "tf": 0.0, "n": 0}


def _resume_overrides(saved: Config, cfg: Config) -> dict[str, Any]:
    """On resume only run-length, runtime and step-size fields may change; the rest is the run's."""
    changed = {f: getattr(cfg, f) for f in saved.to_dict() if getattr(cfg, f) != getattr(saved, f)}
    fixed = [f"{k} ({getattr(saved, k)!r} -> {v!r})" for k, v in changed.items() if k not in RESUMABLE_FIELDS]
    if fixed:
        raise ConfigError(f"config field(s) {', '.join(fixed)} cannot change on resume; "
                          f"only {', '.join(RESUMABLE_FIELDS)} can (start a new run for the others)")
    return changed


def _write_atomic(path: Path, text: str) -> None:
    """Write a small text file so that a kill leaves the old or the new content, never a torn one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch rows of a run's history.jsonl (events such as non-finite stops included)."""
    path = Path(run_dir) / "history.jsonl"
    if not path.is_file():
        raise RunDirError(f"{path}: no history file")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


__all__ = ["Solver", "RunDirError", "TrainingError", "CheckpointError", "epoch_batches", "read_history"]
