"""Shared fixtures: the real BAIR sample (read-only, skipped when absent) and small roots on disk."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

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
    from lab5.data.dataset import write_sequence

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
