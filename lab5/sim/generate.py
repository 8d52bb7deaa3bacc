"""Writing the embedded simulated dataset in the lab layout, byte-identical from a seed whatever the number of
workers (each sequence's seed derives from ``(seed, split, index)``). ``GENERATING.json`` (the parameters) is written
first and removed last, after ``SYNTHETIC.json`` (the parameters and copy-last PSNR per split): a generation cut
short (a kill, Ctrl-C, a full disk) is completed by the next one."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lab5.data.dataset import frames_to_tensor
from lab5.data.layout import SPLITS, DatasetError, write_sequence
from lab5.metrics import copy_last_psnr
from lab5.files import home, progress_bar, write_atomic
from lab5.sim.render import render_states
from lab5.sim.world import IMG, N_FRAMES, simulate_states

try:
    import fcntl  # the lock that lets one process at a time generate a set
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

SHARD = 256  # sequences per traj_<a>_to_<b> folder, as in BAIR's TFRecords
FORMAT_VERSION = 3  # bump when the generator changes what it writes (2: hidden masses and frictions;
# 3: a kinematic gripper, a drag that makes mass and friction both act)
# The generator's name as recorded in every manifest already on disk; it takes part in the
# "same set?" comparison, so it stays as written when the module moved.
GENERATOR = "lab5.data.synthetic"
MANIFEST, PARTIAL = "SYNTHETIC.json", "GENERATING.json"
DEFAULTS: dict[str, int] = {"train": 1024, "validate": 128, "test": 256, "seed": 0}  # make_synthetic's
TRAIN_SEED, EVAL_SEED = 0, 1  # the embedded sets: training data and a held-out evaluation set


def simulate_sequence(seed: int, n_frames: int = N_FRAMES,
                      actions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames uint8 [T, 64, 64, 3], actions [T, 4] and positions [T, 3] (float32) of one sequence, or of ``actions``."""
    st = simulate_states(seed, n_frames, actions)
    return render_states(st), st["actions"], st["endeffector"]


def sequence_seed(seed: int, split: str, index: int) -> int:
    """Seed of sequence ``index`` of ``split``: independent of worker count and order."""
    ss = np.random.SeedSequence([int(seed), SPLITS.index(split), int(index)])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def traj_dir(index: int) -> str:
    """BAIR-style shard folder of sequence ``index``: ``traj_<a>_to_<a+255>.tfrecords``."""
    a = (index // SHARD) * SHARD
    return f"traj_{a}_to_{a + SHARD - 1}.tfrecords"


def _write_one(job: tuple[str, str, int, int]) -> tuple[str, float]:
    """Generate and write one sequence (runs in a worker process); return (split, copy-last PSNR)."""
    out, split, index, seed = job
    seq = Path(out) / split / traj_dir(index) / str(index % SHARD)
    frames, actions, ee = simulate_sequence(sequence_seed(seed, split, index))
    if not seq.is_dir():  # else written whole (renamed into place) by an interrupted generation
        # Fixed encoder settings and no metadata: byte-identical files.
        write_sequence(seq, frames, actions, ee, compress_level=1)
    return split, float(copy_last_psnr(frames_to_tensor(frames.transpose(0, 3, 1, 2))[None], 2, 10).double().mean())


def _pool(n: int) -> "multiprocessing.pool.Pool":
    """A process pool for the writers. Fork on Linux: unlike spawn it never re-imports the caller's ``__main__``
    (breaks ``python - <<EOF``); its warning about threads is silenced, the workers run single-threaded."""
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
        return multiprocessing.get_context(method).Pool(n, initializer=_worker_setup)


def _worker_setup() -> None:
    """Single-threaded (not the parent's OpenMP pool); Ctrl-C left to the parent: one message, not one per worker."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _manifest(root: Path, name: str = MANIFEST) -> dict[str, Any] | None:
    return json.loads((root / name).read_text()) if (root / name).is_file() else None


def _existing(out: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of the identical set already in ``out``; None if ``out`` is new, empty (but for a
    marker cut short) or holds this set unfinished; DatasetError for anything else: never deleted."""
    if not out.exists() or all(p.name.startswith(f".{PARTIAL}.tmp-") for p in out.iterdir()):
        return None
    if (old := _manifest(out) or _manifest(out, PARTIAL)) is None:
        raise DatasetError(f"{out} is not empty and is not a synthetic set that lab5 wrote (no {MANIFEST} "
                           f"nor {PARTIAL}); lab5 leaves it as it is: choose an empty or new --out, or move it away")
    if {k: old.get(k) for k in params} != params:
        raise DatasetError(f"{out} already holds a synthetic set with other parameters "
                           f"({ {k: old.get(k) for k in ('seed', 'train', 'validate', 'test')} }); "
                           "choose another --out or delete it")
    return _manifest(out)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` while a set is generated into it (a second process waits, then finds the
    set complete), shared by the forked workers. No lock on Windows or where flock fails (some NFS)."""
    fd = os.open(folder, os.O_RDONLY) if fcntl else None
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"{folder}: another process is generating this set; waiting for it", flush=True)
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # a file system without flock: generate without the lock
                pass
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _generate(out: Path, params: dict[str, Any], workers: int | None, progress: bool) -> dict[str, Any]:
    """Write the marker, every sequence missing, the manifest, then remove the marker; return the manifest."""
    jobs = [(str(out), split, i, params["seed"]) for split in SPLITS for i in range(params[split])]
    if (out / PARTIAL).is_file():
        done = sum(p.name.isdigit() for p in out.glob("*/traj_*/*"))
        print(f"{out}: completing this set, whose generation was interrupted ({done} of {len(jobs)} "
              "sequences written)", flush=True)
    for torn in [*out.glob(".*.tmp-*"), *out.glob("*/traj_*/.tmp-*")]:  # files cut short by a kill
        shutil.rmtree(torn) if torn.is_dir() else torn.unlink()
    write_atomic(out / PARTIAL, json.dumps(params, indent=2, sort_keys=True) + "\n")
    n = min(min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers)), max(1, len(jobs)))
    psnr: dict[str, list[float]] = {s: [] for s in SPLITS}
    with (progress_bar(total=len(jobs), desc="make-synthetic", unit="seq", disable=not progress) as bar,
          _pool(n) if n > 1 else contextlib.nullcontext() as pool):
        for split, p in pool.imap_unordered(_write_one, jobs, chunksize=8) if pool else map(_write_one, jobs):
            psnr[split].append(p)
            bar.update()
    means = {s: round(float(np.mean(sorted(v))), 3) for s, v in psnr.items() if v}
    manifest = {**params, "copy_last_psnr_db": means}
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (out / PARTIAL).unlink()
    return manifest


def make_synthetic(out: str | os.PathLike, train: int | None = None, validate: int | None = None,
                   test: int | None = None, seed: int | None = None, workers: int | None = None,
                   progress: bool = True) -> dict:
    """Generate the embedded dataset (sizes and seed default to `DEFAULTS`) into ``out``, new, empty or holding the
    same set (complete: reused; unfinished: completed), else DatasetError; return the manifest plus ``path``,
    ``reused`` and ``seconds``. ``workers`` (default: up to 2) does not change the output."""
    given = {"train": train, "validate": validate, "test": test, "seed": seed}
    sizes = {k: DEFAULTS[k] if v is None else int(v) for k, v in given.items()}
    params = {"generator": GENERATOR, "format_version": FORMAT_VERSION, **sizes, "n_frames": N_FRAMES,
              "image_size": IMG, "shard": SHARD}
    out, t0 = Path(out), time.perf_counter()
    manifest, reused = _existing(out, params), True
    if manifest is None:
        out.mkdir(parents=True, exist_ok=True)
        with _locked(out):
            if (manifest := _existing(out, params)) is None:
                manifest, reused = _generate(out, params, workers, progress), False
    return {**manifest, "path": str(out), "reused": reused, "seconds": time.perf_counter() - t0}


def embedded_root(evaluation: bool = False) -> Path:
    """The embedded simulated dataset, generated on first use (deterministic from its seed)."""
    seed = EVAL_SEED if evaluation else TRAIN_SEED
    root = home() / "data" / (f"embedded-eval-seed{seed}" if evaluation else f"embedded-seed{seed}")
    drop_outdated(root)
    make_synthetic(root, seed=seed)
    return root


def drop_outdated(root: Path) -> bool:
    """Delete ``root`` if it holds a set of an older ``FORMAT_VERSION`` (lab5's own cache); True if it did."""
    old = _manifest(root) or _manifest(root, PARTIAL)
    if old is None or old.get("generator") != GENERATOR or old.get("format_version", 0) >= FORMAT_VERSION:
        return False
    print(f"{root}: embedded set of format {old.get('format_version')} is outdated "
          f"(now {FORMAT_VERSION}); generating it again")
    shutil.rmtree(root)
    return True
