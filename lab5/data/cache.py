"""A uint8 memmap cache of a lab-layout split, so training does not decode PNGs every epoch.

Per split, in ``<root>/.lab5_cache/`` (or ``out``):

- ``<split>.frames.npy``  uint8 [N, T, 3, H, W] (already channels-first: an item is one slice)
- ``<split>.cond.npy``    float32 [N, T, A + P]
- ``<split>.index.json``  sequence paths (relative to the split folder) in dataset order, shapes,
  a fingerprint of the source files (max mtime in ns, file count, total bytes) and a format
  version.

A cache is used only if its sequence list equals the current one and the fingerprint of the
current source files equals the recorded one, so touching, editing, adding or deleting any frame
or CSV makes it stale (the reader falls back to the PNGs). The fingerprint is taken *before*
the sources are read, so a file edited while the cache is being built also makes it stale.

Writing streams one sequence at a time into ``np.lib.format.open_memmap`` files (memory stays
constant even for the 15 GB BAIR train split) under temporary names, then renames them into
place; the index is removed first and written last, so an interrupted build leaves no index,
i.e. no cache, never a mismatched one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np

from lab5.data.layout import (ACTIONS_CSV, FRAME_RE, POSITIONS_CSV, SPLITS, Agreement, DatasetError, PathLike,
                              find_sequences, present_splits)
from lab5.files import check_writable, progress_bar, write_atomic

CACHE_DIRNAME = ".lab5_cache"
FORMAT = "lab5-bair-cache"
VERSION = 1


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
    """max mtime (ns), count and total size of every frame and CSV of the given sequences: one stat
    per file. Sizes and counts catch what mtimes miss (a file replaced by an older copy, a deleted frame)."""
    max_ns = n_files = total = 0
    for seq in sequences:
        try:
            with os.scandir(seq) as it:
                for e in it:
                    if e.name in (ACTIONS_CSV, POSITIONS_CSV) or FRAME_RE.match(e.name):
                        st = e.stat()
                        max_ns = max(max_ns, st.st_mtime_ns)
                        n_files += 1
                        total += st.st_size
        except OSError as e:
            raise DatasetError(f"{seq}: cannot list sequence folder ({e.strerror or e})") from e
    return {"max_mtime_ns": max_ns, "n_files": n_files, "total_bytes": total}


def open_cache(root: PathLike, split: str, sequences: list[Path],
               cache_dir: PathLike | None = None) -> tuple[LoadedCache | None, str]:
    """The cache of ``split`` if it is fresh for ``sequences``, and a status saying why not:
    ``"used"``, ``"absent"`` or ``"stale: <path>: <reason>"``."""
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
        frames = np.load(frames_path, mmap_mode="r")
        cond = np.load(cond_path, mmap_mode="r")
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
    """Memmapped ``(frames, cond, index, …)`` of a fresh cache, or None if absent or stale.
    Raises :class:`DatasetError` only for problems with the data root itself."""
    loaded, _ = open_cache(root, split, find_sequences(root, split), cache_dir)
    return loaded


def build_cache(root: PathLike, splits: Iterable[str] | None = None, out: PathLike | None = None,
                progress: bool = True) -> dict[str, dict[str, Any]]:
    """Decode every sequence of ``splits`` (default: all present) into the cache; return a summary
    per split (sequences, shapes, bytes, seconds, paths). Every image and CSV is fully validated on
    the way, so a cache only holds data that passed ``check``. A cache in ``out`` is found by passing
    ``cache_dir=out`` to :class:`~lab5.data.dataset.BairDataset` / :func:`load_cache`."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data root {root} does not exist")
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
    fingerprint = source_fingerprint(sequences)  # before reading: see module docstring
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
            frames_mm[i] = frames.transpose(0, 3, 1, 2)
            cond_mm[i] = cond
        frames_mm.flush()
        cond_mm.flush()
        del frames_mm, cond_mm
        info = agree.info
        shape = {"n": n, "seq_len": t, "channels": 3, "image_size": int(s), "action_dim": info.action_dim,
                 "position_dim": info.position_dim, "cond_dim": c}
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
            "bytes": paths[0].stat().st_size + paths[1].stat().st_size,
            "seconds": round(time.perf_counter() - t0, 3),
            "frames_path": str(paths[0]), "cond_path": str(paths[1]), "index_path": str(paths[2])}
