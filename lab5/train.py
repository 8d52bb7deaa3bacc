"""Training: the Solver (train, validate, checkpoint, resume a run) and ``load_or_train``.

A run killed at any moment and resumed from ``last.pt`` replays exactly what the uninterrupted run would have done:
batch order and schedules are pure functions of (seed, epoch), and the checkpoint holds every RNG state and running
sum. Under ``torchrun`` each rank takes its share of every global batch (DistributedDataParallel); rank 0 writes."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from lab5 import rundir
from lab5.config import Config, ConfigError
from lab5.data.dataset import BairDataset
from lab5.metrics import psnr_per_frame
from lab5.hardware import resolve_device, resolve_precision, trim_cpu_memory, tune_cpu_allocator
from lab5.models.cvae import CVAE
from lab5.files import progress_bar, show_path, write


# --- schedules over epochs: pure functions of the epoch, so a resumed run gets the same values again ---
class KLAnnealing:
    """β per epoch, with the report's semantics (Listing 2.6): ``cycle_len = epochs // cycles``,
    ``step = 1 / (cycle_len * ratio)``; monotonic: ``min(β_min + epoch·step, 1)``; cyclical:
    ``min(β_min + (epoch mod cycle_len)·step, 1)``; off: 1; then scaled by ``beta_max`` (1 in the report)."""

    def __init__(self, mode: str = "monotonic", epochs: int = 100, cycles: int = 4,
                 ratio: float = 0.5, beta_min: float = 0.0, beta_max: float = 1.0) -> None:
        if mode not in ("monotonic", "cyclical", "off"):
            raise ValueError(f"unknown KL annealing mode {mode!r}")
        self.mode, self.beta_min, self.beta_max = mode, beta_min, beta_max
        self.epochs, self.cycles, self.ratio = epochs, cycles, ratio
        self.cycle_len = max(1, epochs // cycles)
        self.step = 1.0 / (self.cycle_len * ratio)

    @classmethod
    def from_config(cls, cfg: Config, epochs: int | None = None) -> "KLAnnealing":
        """``cfg``'s schedule planned for ``epochs`` (default ``cfg.epochs``): a resumed run keeps its plan."""
        return cls(cfg.kl_mode, epochs or cfg.epochs, cfg.kl_cycles, cfg.kl_ratio, cfg.kl_beta_min, cfg.kl_beta_max)

    def __call__(self, epoch: int) -> float:
        if self.mode == "off":
            return self.beta_max
        position = epoch if self.mode == "monotonic" else epoch % self.cycle_len
        return self.beta_max * min(self.beta_min + position * self.step, 1.0)


@dataclass
class TeacherForcing:
    """Teacher-forcing ratio of each (0-based) epoch; the solver draws once per batch whether that batch is
    teacher-forced. ``listing``, the report's Listing 2.7, which sets ``tf_ratio = max(1 − step·(epoch − start),
    floor)`` at the end of every epoch from ``start`` on: ``ratio`` through epoch ``decay_start``, then decaying
    from 1 one epoch late. ``conditioned`` (lab5 before ``tf_style``): ``ratio`` until ``decay_start``, then
    decaying from ``ratio``, a ``floor`` above ``ratio`` counting as ``ratio``."""
    ratio: float = 1.0
    decay_start: int = 0
    decay_step: float = 0.0
    floor: float = 0.0
    style: str = "listing"

    def __post_init__(self) -> None:
        if self.style not in ("listing", "conditioned"):
            raise ValueError(f"unknown teacher-forcing style {self.style!r}")

    @classmethod
    def from_config(cls, cfg: Config) -> "TeacherForcing":
        return cls(cfg.tf_ratio, cfg.tf_decay_start, cfg.tf_decay_step, cfg.tf_min, cfg.tf_style)

    def __call__(self, epoch: int) -> float:
        if self.style == "listing":
            decayed = max(1.0 - self.decay_step * (epoch - 1 - self.decay_start), self.floor)
            return self.ratio if epoch <= self.decay_start else decayed
        decayed = max(self.ratio - self.decay_step * (epoch - self.decay_start), min(self.floor, self.ratio))
        return self.ratio if epoch < self.decay_start else decayed


def autocast(bf16: bool, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast when ``bf16``; a no-op otherwise."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Batch-major frames ``[B,T,3,H,W]`` with each frame NHWC in memory, rows kept batch-major so that
    the model's sample-major reshape of all frames stays a view."""
    B, T = x.shape[:2]
    return x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(B, T, *x.shape[2:])


class TrainingError(RuntimeError):
    """Training stopped on a non-finite loss or gradient."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_batches(n: int, batch_size: int, iters: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of one epoch, a pure function of (seed, epoch): one pass over the data when ``iters``
    is 0 (with a short last batch unless it holds one sequence, which BatchNorm cannot normalise), else ``iters``
    batches from as many chained permutations as needed."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if iters == 0:
        order = torch.randperm(n, generator=gen).tolist()
        return [b for b in (order[i:i + batch_size] for i in range(0, n, batch_size)) if len(b) > 1]
    stream: list[int] = []
    while len(stream) < iters * batch_size:
        stream += torch.randperm(n, generator=gen).tolist()
    return [stream[i * batch_size:(i + 1) * batch_size] for i in range(iters)]


@dataclass
class Distributed:
    """This process's rank and the number of processes (1 without torchrun)."""
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_device(cfg: Config) -> tuple[torch.device, Distributed]:
    """The device (one GPU per rank under torchrun), the process group, the CPU threads."""
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        tune_cpu_allocator()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    ranks = Distributed(dist.get_rank(), world) if world > 1 else Distributed()
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device, ranks


def epoch_line(row: dict[str, Any], epochs: int, iterations: int, seconds: float) -> str:
    val = f", val PSNR {row['val_psnr']:.2f} dB" if row["val_psnr"] is not None else ""
    return (f"epoch {row['epoch']}/{epochs} ({iterations} iterations, {seconds:.0f} s): loss {row['loss']:.4f}, "
            f"mse {row['mse']:.4f}, kl {row['kl']:.3f}, beta {row['beta']:.3g}, tf {row['tf_ratio']:.2f}{val}")


def zero_acc() -> dict[str, float]:
    return {"loss": 0.0, "mse": 0.0, "kl": 0.0, "tf": 0.0, "n": 0}


class Solver:
    """Train a CVAE on a lab-layout data root into a run directory; without ``progress``, epoch lines go to ``log``."""

    def __init__(self, cfg: Config | None, data_root: str | Path, run_dir: str | Path, *, resume: bool = False,
                 force: bool = False, progress: bool = True, log: Callable[[str], None] | None = None) -> None:
        self.run_dir, self.data_root = Path(run_dir), Path(data_root)
        cfg = rundir.resume_config(self.run_dir, cfg) if resume else cfg
        if cfg is None:
            raise ConfigError("a Config is needed unless resuming")
        self.cfg = cfg = cfg.validate()
        self.device, self.dist = setup_device(cfg)
        self.precision = resolve_precision(cfg.bf16, cfg.channels_last, self.device)
        self.log = (write if progress else log) if self.dist.main else None
        self.progress = progress and self.dist.main
        seed_everything(cfg.seed + self.dist.rank)
        self.train_set, self.val_set = self.datasets()
        if self.dist.main:  # checked before any training starts
            rundir.prepare(self.run_dir, resume=resume, force=force)
            rundir.write_config(self.run_dir, cfg, self.precision.as_dict(), self.data_root)
        self.model = self.build_model()
        if cfg.cond_norm and not resume:  # a resumed run keeps the statistics it started with
            self.model.set_condition_stats(self.train_set.conditions(progress=self.progress).to(self.device))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        self.kl_epochs = cfg.epochs  # the epochs the KL schedule is planned for; a resume keeps its run's
        self.kl_schedule, self.tf_schedule = KLAnnealing.from_config(cfg), TeacherForcing.from_config(cfg)
        self.tf_generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.epoch, self.iteration, self.best, self.acc = 0, 0, -math.inf, zero_acc()
        self.history: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []  # non-epoch rows of history.jsonl
        self.saved_at: dict[str, int] | None = None  # epoch and iteration of last.pt
        if resume:
            self.load_state(rundir.load_checkpoint(self.run_dir / rundir.LAST, map_location=self.device))
        self.forward = nn.parallel.DistributedDataParallel(self.model) if self.dist.world > 1 else self.model
        self.say(self.summary() if self.progress else None, self.precision.warning())

    def datasets(self) -> tuple[BairDataset, BairDataset]:
        cfg = self.cfg
        train = BairDataset(self.data_root, "train", n_frames=cfg.n_frames, random_window=cfg.random_window,
                            seed=cfg.seed)
        if cfg.batch_size * self.dist.world > len(train):
            raise ConfigError(f"config field 'batch_size': {cfg.batch_size} x {self.dist.world} process(es) "
                              f"is larger than the training split ({len(train)} sequences in "
                              f"{self.data_root / 'train'})")
        return train, BairDataset(self.data_root, "validate", n_frames=cfg.n_frames)

    def build_model(self) -> CVAE:
        model = CVAE(self.cfg, self.train_set.cond_dim, image_size=self.train_set.image_size,
                     action_dim=self.train_set.action_dim).to(self.device)
        if self.precision.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.cfg.compile:
            model.encoder.compile()
            model.decoder.compile()
        return model

    def say(self, line: str | None, warning: str | None = None) -> None:
        for text, stream in ((line, sys.stdout), (warning, sys.stderr)):
            if self.dist.main and text:
                print(text, file=stream, flush=True)

    def summary(self) -> str:
        """One line: the run, the step, the device and what bf16/channels_last resolved to."""
        threads = f", {torch.get_num_threads()} threads" if self.device.type == "cpu" else ""
        return (f"training {self.cfg.preset} preset into {show_path(self.run_dir)}: step {self.cfg.step}, "
                f"{self.precision.describe()}, device {self.device}{threads}")

    # --- training -----------------------------------------------------------------------
    def fit(self, until: int | None = None) -> list[dict[str, Any]]:
        """Train until epoch ``until`` (default ``cfg.epochs``); return the history (one dict per epoch)."""
        cfg = self.cfg
        while self.epoch < (until or cfg.epochs):
            t0, beta, tf_ratio = time.perf_counter(), self.kl_schedule(self.epoch), self.tf_schedule(self.epoch)
            for x, c in self.batches():
                # One teacher-forcing draw per batch, from a generator the checkpoint keeps.
                use_tf = bool(torch.rand((), generator=self.tf_generator).item() < tf_ratio)
                self.optimizer.zero_grad(set_to_none=True)
                with autocast(self.precision.bf16, self.device):
                    loss, mse, kld = self.forward(x, c, beta, use_tf)
                self.check_finite(loss, "loss")
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip or math.inf)
                self.check_finite(grad_norm, "gradient norm")
                self.optimizer.step()
                self.accumulate(loss, mse, kld, use_tf)
                if cfg.checkpoint_every and self.iteration % cfg.checkpoint_every == 0 \
                        and self.iteration < self.epoch_length:
                    self.save()
            self.end_epoch(beta, tf_ratio, t0)
        if self.device.type == "cpu":  # the tuned allocator keeps its peak; a notebook kernel lives on
            trim_cpu_memory()
        return self.history

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The rest of this epoch's batches (all of them, unless resumed mid-epoch), on the device."""
        cfg, ranks = self.cfg, self.dist
        self.model.train()
        self.train_set.set_epoch(self.epoch)
        batches = epoch_batches(len(self.train_set), cfg.batch_size * ranks.world, cfg.iters_per_epoch,
                                cfg.seed, self.epoch)
        self.epoch_length = len(batches)
        # The loader gets a generator of its own: by default creating its iterator draws a seed
        # from torch's global RNG, which a resume mid-epoch would draw a second time.
        loader = DataLoader(self.train_set, batch_sampler=[b[ranks.rank::ranks.world] for b in batches[self.iteration:]],
                            num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(cfg.seed * 100_003 + self.epoch))
        bar = progress_bar(loader, total=len(batches), initial=self.iteration, disable=not self.progress,
                           desc=f"epoch {self.epoch + 1}/{cfg.epochs}", leave=False)
        for x, c in bar:
            x, c = x.to(self.device, non_blocking=True), c.to(self.device, non_blocking=True)
            yield (channels_last(x) if self.precision.channels_last else x), c
            bar.set_postfix(loss=f"{self.acc['loss'] / self.acc['n']:.4f}", refresh=False)
        bar.close()

    def accumulate(self, loss: torch.Tensor, mse: torch.Tensor, kld: torch.Tensor, use_tf: bool) -> None:
        for key, value in (("loss", loss), ("mse", mse), ("kl", kld)):
            self.acc[key] += float(value.detach())
        self.acc["tf"] += use_tf
        self.acc["n"] += 1
        self.iteration += 1

    def end_epoch(self, beta: float, tf_ratio: float, started: float) -> dict[str, Any]:
        """Validate (every ``val_every`` epochs and at the end), checkpoint, log the epoch's line."""
        n, epoch = max(self.acc["n"], 1), self.epoch + 1
        row: dict[str, Any] = {"epoch": epoch, "loss": self.acc["loss"] / n, "mse": self.acc["mse"] / n,
                               "kl": self.acc["kl"] / n, "beta": beta, "tf_ratio": tf_ratio,
                               "tf_used": self.acc["tf"] / n, "val_psnr": None}
        if epoch % self.cfg.val_every == 0 or epoch == self.cfg.epochs:
            row["val_psnr"] = self.validate()
        self.history.append(row)
        self.epoch, self.iteration, self.acc = epoch, 0, zero_acc()
        if row["val_psnr"] is not None and row["val_psnr"] > self.best:
            self.best = row["val_psnr"]
            self.save(rundir.BEST)
        self.save()
        if self.log:
            self.log(epoch_line(row, self.cfg.epochs, n, time.perf_counter() - started))
        return row

    @torch.no_grad()
    def validate(self) -> float:
        """Validation PSNR under the lab protocol (one prior sample, predictions fed back)."""
        cfg = self.cfg
        self.model.eval()
        n = min(cfg.val_sequences or len(self.val_set), len(self.val_set))
        # A generator of its own, so validation does not perturb the training RNG stream.
        gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 7919 * (self.epoch + 1))
        total = 0.0
        for x, c in DataLoader(torch.utils.data.Subset(self.val_set, range(n)), batch_size=min(64, max(2, cfg.batch_size)),
                               generator=torch.Generator().manual_seed(cfg.seed)):
            x, c = x.to(self.device), c.to(self.device)
            pred = self.model.generate(x, c, cfg.n_past, cfg.n_future, gen)
            total += float(psnr_per_frame(pred, x[:, cfg.n_past:cfg.n_frames]).mean(1).sum())
        self.model.train()
        return total / n

    def check_finite(self, value: torch.Tensor, what: str) -> None:
        """Stop on a non-finite loss or gradient, recorded in history.jsonl, saying how to go on."""
        if torch.isfinite(value).all():
            return
        self.events.append({"event": "nonfinite", "what": what, "epoch": self.epoch + 1,
                            "iteration": self.iteration + 1, "last_checkpoint": self.saved_at})
        if self.dist.main:
            try:
                rundir.write_history(self.run_dir, self.history + self.events)
            except OSError as exc:  # a full disk: the stop below still says where the last checkpoint is
                self.say(None, f"could not record the stop in {self.run_dir / rundir.HISTORY}: {exc.strerror or exc}")
        raise self.stopped(f"non-finite {what} at epoch {self.epoch + 1}, iteration {self.iteration + 1}; training "
                           "stopped", "lower lr or set grad_clip", " --set lr=... grad_clip=...")

    def stopped(self, where: str, fix: str, resume_args: str = "") -> TrainingError:
        """The error that stops training at ``where``: the last good checkpoint and how to go on after ``fix``."""
        if self.saved_at is None:
            return TrainingError(f"{where} before any checkpoint was written; {fix} and start again with --force")
        return TrainingError(f"{where}, the last good checkpoint is {self.run_dir / rundir.LAST} (saved after "
                             f"{self.saved_at['epoch']} epoch(s) + {self.saved_at['iteration']} iteration(s)); "
                             f"{fix}, then `python -m lab5 train --resume {show_path(self.run_dir)}{resume_args}` "
                             "(or start again)")

    # --- checkpoints ----------------------------------------------------------------------
    def save(self, name: str = rundir.LAST) -> None:
        """Write a checkpoint (rank 0 only); history.jsonl follows last.pt. A write that fails (a full disk)
        stops training with a TrainingError naming the file, which keeps its previous content."""
        if not self.dist.main:
            return
        path = self.run_dir / name
        try:
            rundir.save_checkpoint(self.state_dict(), path)
            if name == rundir.LAST:
                self.saved_at = {"epoch": self.epoch, "iteration": self.iteration}
                path = self.run_dir / rundir.HISTORY
                rundir.write_history(self.run_dir, self.history + self.events)
        except OSError as exc:
            fix = "free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else f"make {path.parent} writable"
            raise self.stopped(f"cannot write {path}: {exc.strerror or exc}; training stopped", fix) from exc

    def state_dict(self) -> dict[str, Any]:
        cuda = {"cuda": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {}
        return {
            "format": rundir.FORMAT, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "config": self.cfg.to_dict(), "cond_dim": self.train_set.cond_dim,
            "action_dim": self.train_set.action_dim, "image_size": self.train_set.image_size,
            "schedules": {"epoch": self.epoch, "beta": self.kl_schedule(self.epoch),
                          "tf_ratio": self.tf_schedule(self.epoch), "kl_epochs": self.kl_epochs},
            "epoch": self.epoch, "iteration": self.iteration, "history": self.history, "best": self.best,
            "accumulators": dict(self.acc),
            "rng": {"torch": torch.get_rng_state(), "tf": self.tf_generator.get_state(), **cuda},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        rundir.check_compatible(state, self.cfg, self.train_set.cond_dim, self.run_dir / rundir.LAST)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # lr may be lowered on resume (non-finite loss)
            group["lr"] = self.cfg.lr
        # The KL schedule continues as planned when the run started, even if epochs was extended.
        self.kl_epochs = state.get("schedules", {}).get("kl_epochs") or state["config"]["epochs"]
        if self.kl_epochs != self.cfg.epochs:
            self.kl_schedule = KLAnnealing.from_config(self.cfg, self.kl_epochs)
            self.say(f"resuming with epochs {self.cfg.epochs}: the KL schedule keeps its plan for "
                     f"{self.kl_epochs} epochs ({self.cfg.kl_mode}, cycle of {self.kl_schedule.cycle_len} epochs)")
        self.epoch, self.iteration = state["epoch"], state["iteration"]
        self.saved_at = {"epoch": self.epoch, "iteration": self.iteration}
        self.history, self.best, self.acc = list(state["history"]), state["best"], dict(state["accumulators"])
        # Events (non-finite stops) come after the last checkpoint; keep them in history.jsonl.
        if (self.run_dir / rundir.HISTORY).is_file():
            self.events = [row for row in rundir.read_history(self.run_dir) if "event" in row]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        self.tf_generator.set_state(state["rng"]["tf"].cpu())
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)


@dataclass
class TrainedRun:
    """A run directory's model (best checkpoint, eval mode), config and history."""
    model: CVAE
    cfg: Config
    history: list[dict[str, Any]]
    run_dir: Path
    status: str          # "loaded" (finished run found), "resumed" or "trained"
    device: torch.device
    seconds: float = 0.0

    @property
    def best_val_psnr(self) -> float | None:
        return max((r["val_psnr"] for r in self.history if r.get("val_psnr") is not None), default=None)

    def __str__(self) -> str:
        best = self.best_val_psnr
        best_txt = f"; best val PSNR {best:.2f} dB" if best is not None else ""
        how = {"loaded": "loaded the finished run", "resumed": "resumed and finished the run",
               "trained": "trained"}[self.status]
        took = f" in {self.seconds:.0f} s" if self.status != "loaded" else ""
        return f"{how} {show_path(self.run_dir)} ({len(self.history)} epochs){took}{best_txt}"


def load_or_train(cfg: Config, data_root: str | Path, run_dir: str | Path, progress: bool = True,
                  log: Callable[[str], None] = print) -> TrainedRun:
    """Load a finished run, resume a partial one (exactly), or train a new one into ``run_dir``; a stored run
    with other settings than ``cfg`` (``RUNTIME_FIELDS`` aside) or more epochs raises ``RunDirError``: a notebook
    never silently shows a run other than the one its parameters describe."""
    run_dir, data_root = Path(run_dir), Path(data_root)
    epochs = rundir.stored_epochs(run_dir, cfg)
    status = "trained" if epochs is None else "loaded" if epochs == cfg.epochs else "resumed"
    stored_root = rundir.read_data_root(run_dir)
    if epochs is not None and stored_root and stored_root != str(data_root.resolve()):
        log(f"note: {show_path(run_dir)} was trained on {show_path(stored_root)}, not {show_path(data_root)}")
    t0 = time.perf_counter()
    if status != "loaded":
        Solver(cfg, data_root, run_dir, resume=status == "resumed", force=status == "trained",
               progress=progress, log=log).fit()
    model, saved_cfg, device = rundir.load_run(run_dir, cfg.device)
    history = [row for row in rundir.read_history(run_dir) if "epoch" in row]
    return TrainedRun(model, saved_cfg, history, run_dir, status, device, time.perf_counter() - t0)
