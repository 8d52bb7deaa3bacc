"""Shared fixtures: the real BAIR sample (read-only, skipped when absent) and small roots on disk."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

torch.set_num_threads(1)  # the test machines have 2 shared cores

# The repository sits beside `shared/` (…/main/tests/conftest.py → …/shared/data/bair_real).
BAIR_REAL = Path(__file__).parents[2] / "shared/data/bair_real"
REAL_SEQ = "test/traj_0_to_255.tfrecords/175"


@pytest.fixture(scope="session")
def bair_real() -> Path:
    """The shared real sample. READ ONLY: never write under it (tests run as root)."""
    if not (BAIR_REAL / REAL_SEQ).is_dir():
        pytest.skip(f"real BAIR sample not found at {BAIR_REAL}")
    return BAIR_REAL


@pytest.fixture
def real_root(bair_real: Path, tmp_path: Path) -> Path:
    """A writable copy of the real sample: ``<tmp>/bair/test/traj_0_to_255.tfrecords/175``."""
    dst = tmp_path / "bair"
    shutil.copytree(bair_real / "test", dst / "test")
    for p in [dst, *dst.rglob("*")]:  # the originals are r--r--r--; copies must be editable
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return dst


@pytest.fixture
def make_root(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing random lab-layout sequences: ``make_root({"train": 3}, n_frames=8)``."""
    from lab5.data.layout import write_sequence

    def make(
        splits: dict[str, int] | None = None,
        n_frames: int = 8,
        size: int = 16,
        seed: int = 0,
        name: str = "root",
        traj: str = "traj_0_to_255.tfrecords",
    ) -> Path:
        rng = np.random.default_rng(seed)
        root = tmp_path / name
        for split, n in (splits or {"train": 3}).items():
            for k in range(n):
                write_sequence(
                    root / split / traj / str(k),
                    rng.integers(0, 256, (n_frames, size, size, 3), dtype=np.uint8),
                    rng.normal(size=(n_frames, 4)).astype(np.float32),
                    rng.normal(size=(n_frames, 3)).astype(np.float32),
                )
        return root

    return make


# --------------------------------------------------------------------------- training fixtures

REPO = Path(__file__).parents[1]
# Every training subprocess runs single-threaded, so two runs of one seed are bit-comparable.
CLI_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run_lab5(*args: object, timeout: float = 180) -> "subprocess.CompletedProcess[str]":
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "lab5", *map(str, args)], cwd=REPO, env=CLI_ENV,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def cli_popen_kwargs() -> dict[str, Any]:
    """``cwd`` and ``env`` for a ``python -m lab5`` subprocess started by hand (as ``lab5_cli``
    runs it). A fixture, not an import: ``from conftest import ...`` would find whichever
    conftest.py pytest loaded under that name first (notebooks/ has one too)."""
    return {"cwd": REPO, "env": CLI_ENV}


@pytest.fixture(scope="session")
def lab5_cli() -> Callable[..., "subprocess.CompletedProcess[str]"]:
    """``lab5_cli("train", "--preset", "smoke", ...)``: ``python -m lab5 ...`` in a subprocess
    (single-threaded, repo as cwd), returning the CompletedProcess with text stdout/stderr."""
    return _run_lab5


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny simulated set (8 train / 4 validate / 4 test sequences of 30 frames, seed 0).

    Shared by the whole session: READ ONLY (copy it to tmp_path before corrupting it).
    """
    from lab5.sim import make_synthetic

    root = tmp_path_factory.mktemp("tiny") / "data"
    make_synthetic(root, train=8, validate=4, test=4, seed=0, workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def smoke_run(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory of the smoke preset trained on ``tiny_root`` (2 epochs x 3 iterations).

    Shared by the whole session: READ ONLY (copy it before resuming or damaging it).
    """
    from lab5.config import get_preset
    from lab5.train import Solver

    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    Solver(get_preset("smoke").replace(threads=1), tiny_root, run_dir, progress=False).fit()
    return run_dir
