"""The torch ``Dataset`` over a lab-layout split, and its uint8 memmap cache in ``<root>/.lab5_cache/`` so
training does not decode PNGs every epoch: ``<split>.frames.npy`` (uint8 [N, T, 3, H, W]), ``<split>.cond.npy``
(float32 [N, T, A + P]) and ``<split>.index.json`` (sequences, shapes, a fingerprint of the source files). A
cache whose sequences or fingerprint differ from the files on disk is stale: the reader decodes the PNGs."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np
import torch

from lab5.data.layout import (ACTIONS_CSV, FRAME_RE, POSITIONS_CSV, SPLITS, Agreement, DatasetError, PathLike,
                              SequenceInfo, find_sequences, present_splits, read_csvs, read_frame, root_dir,
                              sequence_info)
from lab5.files import check_writable, progress_bar, write_atomic

CACHE_DIRNAME, FORMAT, VERSION = ".lab5_cache", "lab5-bair-cache", 1
# Reading the conditions of the embedded sets takes under a second: no bar for them.
CONDITIONS_BAR_DELAY_S = 1.0


class LoadedCache(NamedTuple):
    """A fresh cache: memmapped arrays (read-only) and the parsed index."""
    frames: np.ndarray  # uint8 [N, T, 3, H, W]
    cond: np.ndarray  # float32 [N, T, C]
    index: dict[str, Any]
    frames_path: Path
    cond_path: Path


def cache_dir_for(root: PathLike, out: PathLike | None = None) -> Path:
    return Path(out) if out is not None else Path(root) / CACHE_DIRNAME


def _paths(cdir: Path, split: str) -> tuple[Path, Path, Path]:
    return cdir / f"{split}.frames.npy", cdir / f"{split}.cond.npy", cdir / f"{split}.index.json"


def _relative(sequences: Iterable[Path]) -> list[str]:
    # Relative to the split folder, so a root moved or copied with its cache (cp -a keeps
    # mtimes) keeps a valid cache.
    return [f"{s.parent.name}/{s.name}" for s in sequences]


def source_fingerprint(sequences: Iterable[Path]) -> dict[str, int]:
    """Max mtime (ns), count and total size of the sequences' frames and CSVs: sizes and counts catch what
    mtimes miss (a file replaced by an older copy, a deleted frame)."""
    max_ns = n_files = total = 0
    for seq in sequences:
        try:
            with os.scandir(seq) as it:
                for e in it:
                    if e.name in (ACTIONS_CSV, POSITIONS_CSV) or FRAME_RE.match(e.name):
                        st = e.stat()
                        max_ns, n_files, total = max(max_ns, st.st_mtime_ns), n_files + 1, total + st.st_size
        except OSError as e:
            raise DatasetError(f"{seq}: cannot list sequence folder ({e.strerror or e})") from e
    return {"max_mtime_ns": max_ns, "n_files": n_files, "total_bytes": total}


def open_cache(root: PathLike, split: str, sequences: list[Path],
               cache_dir: PathLike | None = None) -> tuple[LoadedCache | None, str]:
    """The cache of ``split`` if fresh for ``sequences``, and ``"used"``, ``"absent"`` or ``"stale: <path>: <why>"``."""
    frames_path, cond_path, index_path = _paths(cache_dir_for(root, cache_dir), split)
    if not index_path.is_file():
        return None, "absent"

    def stale(reason: str) -> tuple[None, str]:
        return None, f"stale: cache {index_path}: {reason}"

    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as e:
        return stale(f"unreadable index ({e})")
    if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("version") != VERSION:
        return stale(f"not a {FORMAT} version {VERSION} index")
    if index.get("sequences") != _relative(sequences):
        return stale("the set of sequences on disk changed")
    if index.get("source") != source_fingerprint(sequences):
        return stale("source files changed since the cache was built")
    try:
        frames, cond = np.load(frames_path, mmap_mode="r"), np.load(cond_path, mmap_mode="r")
    except (OSError, ValueError) as e:
        return stale(f"cannot open arrays ({e})")
    shape = index["shape"]
    n, t, s, c = len(sequences), shape["seq_len"], shape["image_size"], shape["cond_dim"]
    if frames.dtype != np.uint8 or frames.shape != (n, t, 3, s, s):
        return stale(f"{frames_path.name} is {frames.dtype} {frames.shape}, expected uint8 {(n, t, 3, s, s)}")
    if cond.dtype != np.float32 or cond.shape != (n, t, c):
        return stale(f"{cond_path.name} is {cond.dtype} {cond.shape}, expected float32 {(n, t, c)}")
    return LoadedCache(frames, cond, index, frames_path, cond_path), "used"


def load_cache(root: PathLike, split: str, cache_dir: PathLike | None = None) -> LoadedCache | None:
    """The fresh cache of ``split`` (memmapped), else None; DatasetError only for problems with the root."""
    return open_cache(root, split, find_sequences(root, split), cache_dir)[0]


def build_cache(root: PathLike, splits: Iterable[str] | None = None, out: PathLike | None = None,
                progress: bool = True) -> dict[str, dict[str, Any]]:
    """Decode (and fully validate) every sequence of ``splits`` (default: all present) into the cache (in ``out``:
    pass ``cache_dir=out`` to read it); return a summary per split (sequences, shapes, bytes, seconds, paths)."""
    root = root_dir(root)
    if splits is None:
        splits = present_splits(root, f"no split folder ({', '.join(SPLITS)}) under the data root")
    cdir = cache_dir_for(root, out)
    try:
        check_writable(cdir)
    except OSError as e:
        raise DatasetError(f"{cdir}: cannot write the cache ({e.strerror or e}); is {root} writable? "
                           f"Pass out= (CLI: --out) to put the cache elsewhere") from e
    return {split: _build_split(root, split, cdir, progress) for split in splits}


def _build_split(root: Path, split: str, cdir: Path, progress: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    sequences = find_sequences(root, split)
    fingerprint = source_fingerprint(sequences)  # before reading: a file changed meanwhile makes the cache stale
    paths = _paths(cdir, split)
    tmps = [p.with_name(p.name + f".tmp-{os.getpid()}") for p in paths[:2]]
    agree = Agreement()
    first = agree.read(sequences[0])
    n, (t, s), c = len(sequences), first[0].shape[:2], first[1].shape[1]
    try:
        frames_mm = np.lib.format.open_memmap(tmps[0], mode="w+", dtype=np.uint8, shape=(n, t, 3, s, s))
        cond_mm = np.lib.format.open_memmap(tmps[1], mode="w+", dtype=np.float32, shape=(n, t, c))
        bar = progress_bar(sequences, desc=f"cache {split}", unit="seq", disable=not progress)
        for i, seq in enumerate(bar):
            frames, cond, _ = first if i == 0 else agree.read(seq)
            frames_mm[i], cond_mm[i] = frames.transpose(0, 3, 1, 2), cond
        for mm in (frames_mm, cond_mm):
            mm.flush()
        del frames_mm, cond_mm
        _, a_dim, p_dim = agree.info
        shape = {"n": n, "seq_len": t, "channels": 3, "image_size": int(s), "action_dim": a_dim,
                 "position_dim": p_dim, "cond_dim": c}
        index = {"format": FORMAT, "version": VERSION, "split": split, "sequences": _relative(sequences),
                 "shape": shape, "source": fingerprint, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        paths[2].unlink(missing_ok=True)  # no index while the arrays are swapped
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
        write_atomic(paths[2], json.dumps(index, indent=1))
    finally:
        for p in tmps:
            p.unlink(missing_ok=True)
    return {"sequences": n, "frames_shape": [n, t, 3, int(s), int(s)], "cond_shape": [n, t, c],
            "bytes": paths[0].stat().st_size + paths[1].stat().st_size, "seconds": round(time.perf_counter() - t0, 3),
            "frames_path": str(paths[0]), "cond_path": str(paths[1]), "index_path": str(paths[2])}


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, 3, H, W] → float32 in [0, 1], for the PNG and the cache path alike (bit-identical tensors)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32).div_(255.0)


class BairDataset(torch.utils.data.Dataset):
    """Sequences of one split as ``(frames float32 [T, 3, H, W] in [0, 1], cond float32 [T, C])``: windows of
    ``n_frames`` (None: whole sequences), the first frames or, with ``random_window``, a start drawn from
    ``[seed, epoch, index]`` (call :meth:`set_epoch` every epoch). ``use_cache``: read a fresh cache (in
    ``cache_dir``, default ``<root>/.lab5_cache``) instead of PNGs (``using_cache``; ``cache_status`` says why
    not). ``validate``: check every sequence's files and CSVs now, not on access (a fresh cache needs no check)."""

    def __init__(self, root: PathLike, split: str, n_frames: int | None = 12, random_window: bool = False,
                 seed: int = 0, use_cache: bool = True, validate: bool = True,
                 cache_dir: PathLike | None = None) -> None:
        self.root, self.split = Path(root), split
        self.random_window, self.seed, self.epoch = bool(random_window), int(seed), 0
        self.sequences = find_sequences(self.root, split)
        self._mm: tuple[np.ndarray, ...] | None = None  # the cache, opened on first use in each process
        loaded, self.cache_status = (None, "disabled")
        if use_cache:
            loaded, self.cache_status = open_cache(self.root, split, self.sequences, cache_dir)
            if loaded is None and self.cache_status.startswith("stale"):
                warnings.warn(f"{self.cache_status}; decoding PNGs instead (rebuild it with "
                              f"`python -m lab5 data cache {self.root}`)", stacklevel=2)
        self.using_cache = loaded is not None
        self._cache_paths = None if loaded is None else (loaded.frames_path, loaded.cond_path)
        if loaded is not None:
            shape = loaded.index["shape"]
            info = SequenceInfo(shape["seq_len"], shape["action_dim"], shape["position_dim"])
            self.image_size = int(shape["image_size"])
        else:
            agree = Agreement()  # without validate, trust the first sequence; the others are checked on reading
            for seq in self.sequences if validate else self.sequences[:1]:
                info = agree.check(seq, sequence_info(seq))
            # One decoded frame fixes the size; every other frame is compared to it on access.
            self.image_size = read_frame(self.sequences[0] / "0.png").shape[0]
        self.seq_len, self.action_dim, self.position_dim = info
        self.cond_dim = self.action_dim + self.position_dim
        self._agree = Agreement(self.sequences[0], info, self.image_size)
        self.n_frames = self.seq_len if n_frames is None else int(n_frames)
        if not 1 <= self.n_frames <= self.seq_len:
            raise DatasetError(f"{self.root / split}: n_frames={self.n_frames} but sequences have "
                               f"{self.seq_len} frames")

    def __len__(self) -> int:
        return len(self.sequences)

    def __repr__(self) -> str:
        return (f"BairDataset({str(self.root)!r}, {self.split!r}, {len(self)} sequences, n_frames="
                f"{self.n_frames}, random_window={self.random_window}, using_cache={self.using_cache})")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def window_start(self, index: int) -> int:
        """First frame of item ``index``'s window in the current epoch."""
        if not self.random_window:
            return 0
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        return int(rng.integers(0, self.seq_len - self.n_frames + 1))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.sequences)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} sequences")
        index %= n
        start = self.window_start(index)
        if self.using_cache:
            if self._mm is None:
                self._mm = tuple(np.load(path, mmap_mode="r") for path in self._cache_paths or ())
            # One contiguous slice of the memmap, copied once: this is the whole fast path.
            frames, cond = (np.array(a[index, start:start + self.n_frames]) for a in self._mm)
        else:
            hwc, cond, _ = self._agree.read(self.sequences[index], self.n_frames, start)
            frames = hwc.transpose(0, 3, 1, 2)
        return frames_to_tensor(frames), torch.from_numpy(cond)

    def conditions(self, progress: bool = False) -> torch.Tensor:
        """Every sequence's whole conditions ``[N, seq_len, C]`` (actions, then positions), without the frames:
        from the cache, else from every sequence's CSVs (a few seconds per 10,000 sequences: with ``progress``,
        a bar once it has taken longer than ``CONDITIONS_BAR_DELAY_S``)."""
        if self.using_cache:
            return torch.from_numpy(np.load(self._cache_paths[1]))
        bar = progress_bar(self.sequences, desc=f"conditions {self.split}", unit="seq", disable=not progress,
                           delay=CONDITIONS_BAR_DELAY_S, leave=False)
        rows = [np.concatenate(read_csvs(seq, self.seq_len), 1) for seq in bar]
        return torch.from_numpy(np.stack(rows).astype(np.float32))

    def __getstate__(self) -> dict[str, Any]:
        # Pickling a memmap copies its whole content; DataLoader workers started with "spawn"
        # (macOS, Windows) would each receive the full cache. Send the paths instead.
        return {**self.__dict__, "_mm": None}
