"""The torch ``Dataset`` over a lab-layout split (see :mod:`lab5.data.layout` for the files)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lab5.data.cache import open_cache
from lab5.data.layout import (Agreement, DatasetError, PathLike, SequenceInfo, find_sequences, read_frame,
                              sequence_info)


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, 3, H, W] → float32 in [0, 1]. Both the PNG and the cache path go through here,
    so they give bit-identical tensors."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32).div_(255.0)


def validate_sequences(sequences: list[Path]) -> SequenceInfo:
    """Cheap check of every sequence (frame files present, CSVs fully parsed); all must agree.

    Images are decoded at access time (decoding them all here would cost as much as an epoch).
    """
    agree = Agreement()
    for seq in sequences:
        agree.check(seq, sequence_info(seq))
    assert agree.info is not None
    return agree.info


class BairDataset(torch.utils.data.Dataset):
    """Sequences of one split as ``(frames float32 [T, 3, H, W] in [0, 1], cond float32 [T, C])``.

    - ``n_frames``: window length T (``None``: the whole sequence). The first ``n_frames``
      frames by default; with ``random_window=True`` the window start is drawn from
      ``np.random.default_rng([seed, epoch, index])``, so it depends only on (seed, epoch,
      index): a resumed run or any number of DataLoader workers see the same windows. Call
      :meth:`set_epoch` every epoch (with non-persistent workers, which copy the dataset when
      each epoch's iterator starts).
    - ``use_cache``: read the uint8 memmap written by :func:`lab5.data.cache.build_cache` when
      it exists and is fresh (same sequences, no source file changed since); otherwise decode
      PNGs. ``using_cache`` tells which; ``cache_status`` says why.
    - ``validate``: check every sequence's files and CSVs now, so errors surface at once
      (skipped when a fresh cache is used: it was built from fully checked files that have not
      changed since). Image decoding errors surface at access time.
    - ``cache_dir``: where the cache lives if not ``<root>/.lab5_cache`` (e.g. read-only data).
    """

    def __init__(self, root: PathLike, split: str, n_frames: int | None = 12, random_window: bool = False,
                 seed: int = 0, use_cache: bool = True, validate: bool = True,
                 cache_dir: PathLike | None = None) -> None:
        self.root = Path(root)
        self.split = split
        self.random_window = bool(random_window)
        self.seed = int(seed)
        self.epoch = 0
        self._sequences = find_sequences(self.root, split)
        self._mm: tuple[np.ndarray, np.ndarray] | None = None
        self._cache_paths: tuple[Path, Path] | None = None
        loaded, self.cache_status = (None, "disabled")
        if use_cache:
            loaded, self.cache_status = open_cache(self.root, split, self._sequences, cache_dir)
            if loaded is None and self.cache_status.startswith("stale"):
                warnings.warn(f"{self.cache_status}; decoding PNGs instead (rebuild it with "
                              f"`python -m lab5 data cache {self.root}`)", stacklevel=2)
        self.using_cache = loaded is not None
        if loaded is not None:
            shape = loaded.index["shape"]
            self._info = SequenceInfo(shape["seq_len"], shape["action_dim"], shape["position_dim"])
            self._image_size = int(shape["image_size"])
            self._mm = (loaded.frames, loaded.cond)
            self._cache_paths = (loaded.frames_path, loaded.cond_path)
        else:
            # Without validate, trust the first sequence; the others are checked as they are read.
            self._info = validate_sequences(self._sequences if validate else self._sequences[:1])
            # One decoded frame fixes the size; every other frame is compared to it on access.
            self._image_size = read_frame(self._sequences[0] / "0.png").shape[0]
        self._agree = Agreement(self._sequences[0], self._info, self._image_size)
        self.n_frames = self._info.n_frames if n_frames is None else int(n_frames)
        if not 1 <= self.n_frames <= self._info.n_frames:
            raise DatasetError(f"{self.root / split}: n_frames={self.n_frames} but sequences have "
                               f"{self._info.n_frames} frames")

    # ---- properties
    @property
    def sequences(self) -> list[Path]:
        return list(self._sequences)

    @property
    def seq_len(self) -> int:
        """Frames per sequence on disk (30 for BAIR)."""
        return self._info.n_frames

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def action_dim(self) -> int:
        return self._info.action_dim

    @property
    def position_dim(self) -> int:
        return self._info.position_dim

    @property
    def cond_dim(self) -> int:
        """Width of the condition vector: action columns + end-effector position columns."""
        return self._info.action_dim + self._info.position_dim

    def __len__(self) -> int:
        return len(self._sequences)

    def __repr__(self) -> str:
        return (f"BairDataset({str(self.root)!r}, {self.split!r}, {len(self)} sequences, n_frames="
                f"{self.n_frames}, random_window={self.random_window}, using_cache={self.using_cache})")

    # ---- windows
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def window_start(self, index: int) -> int:
        """First frame of item ``index``'s window in the current epoch."""
        if not self.random_window:
            return 0
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        return int(rng.integers(0, self.seq_len - self.n_frames + 1))

    # ---- access
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._mm is None:  # reopened lazily in each worker process (see __getstate__)
            assert self._cache_paths is not None
            frames_path, cond_path = self._cache_paths
            self._mm = (np.load(frames_path, mmap_mode="r"), np.load(cond_path, mmap_mode="r"))
        return self._mm

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self._sequences)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} sequences")
        index %= n
        start = self.window_start(index)
        stop = start + self.n_frames
        if self.using_cache:
            frames_all, cond_all = self._arrays()
            # One contiguous slice of the memmap, copied once: this is the whole fast path.
            frames = np.array(frames_all[index, start:stop])
            cond = np.array(cond_all[index, start:stop])
        else:
            hwc, cond, _ = self._agree.read(self._sequences[index], self.n_frames, start)
            frames = hwc.transpose(0, 3, 1, 2)
        return frames_to_tensor(frames), torch.from_numpy(cond)

    def __getstate__(self) -> dict[str, Any]:
        # Pickling a memmap copies its whole content; DataLoader workers started with "spawn"
        # (macOS, Windows) would each receive the full cache. Send the paths instead.
        state = self.__dict__.copy()
        state["_mm"] = None
        return state
