"""The BAIR "lab layout" on disk: find, validate and read sequences; the torch ``Dataset``.

Layout (one folder per sequence)::

    <root>/<split>/<traj folder>/<k>/0.png … {T-1}.png    T frames, square RGB (64x64 for BAIR)
                                   actions.csv               T rows x A columns (BAIR: A = 4)
                                   endeffector_positions.csv T rows x P columns (BAIR: P = 3)

``split`` is ``train``, ``validate`` or ``test``; traj folder names may keep a ``.tfrecords``
suffix; CSVs are comma-separated without a header (numpy ``savetxt`` default ``%.18e``).

Every problem found in the files raises :class:`DatasetError` whose message starts with the
offending path and says what is wrong, so a student can fix the file rather than read a
traceback. Hidden entries (names starting with ``.``: ``.ipynb_checkpoints``, the cache folder,
the converter's temporary folders) are ignored everywhere.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

SPLITS: tuple[str, ...] = ("train", "validate", "test")
ACTIONS_CSV = "actions.csv"
POSITIONS_CSV = "endeffector_positions.csv"
# Only canonical names count as frames ("7.png", not "07.png"), so a frame index maps to
# exactly one file name and "missing 7.png" is an unambiguous message.
_FRAME_RE = re.compile(r"^(0|[1-9][0-9]*)\.png$")
_INT_RE = re.compile(r"^[0-9]+$")

PathLike = str | os.PathLike


class DatasetError(Exception):
    """A problem with the data on disk; the message names the offending path and the problem."""


# --------------------------------------------------------------------------- discovery


def natural_key(name: str) -> tuple[list[Any], str]:
    """Sort key that orders ``traj_256_to_511`` before ``traj_1024_to_1279`` (numbers by value).

    ``re.split`` with a capture group alternates text and digits, so the lists always compare
    str with str and int with int; the raw name breaks ties ("a01" vs "a1").
    """
    parts = re.split(r"([0-9]+)", name)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)], name


def _visible_dirs(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return [Path(e.path) for e in it if not e.name.startswith(".") and e.is_dir()]
    except OSError as e:
        raise DatasetError(f"{folder}: cannot list folder ({e.strerror or e})") from e


def find_sequences(root: PathLike, split: str) -> list[Path]:
    """Sequence folders of ``root/split`` in a deterministic order.

    Order: traj folders by natural sort of their names, then sequence folders by ``int(k)``.
    The order never depends on the file system, so indices, caches and random windows agree
    across machines.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"data root {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root}: data root is not a folder")
    split_dir = root / split
    if not split_dir.is_dir():
        present = [s for s in SPLITS if (root / s).is_dir()]
        raise DatasetError(
            f"{split_dir}: split folder does not exist (splits present under {root}: "
            f"{', '.join(present) or 'none'})"
        )
    sequences: list[Path] = []
    for traj in sorted(_visible_dirs(split_dir), key=lambda p: natural_key(p.name)):
        # A frequent mistake is one folder level too few (<split>/<k>/0.png); say so plainly.
        if (traj / "0.png").exists() or (traj / ACTIONS_CSV).exists():
            raise DatasetError(
                f"{traj}: holds frames directly, but the layout is "
                f"<split>/<traj folder>/<k>/0.png (one folder level is missing)"
            )
        seqs = _visible_dirs(traj)
        for s in seqs:
            if not _INT_RE.match(s.name):
                raise DatasetError(f"{s}: sequence folder name is not an integer")
        sequences.extend(sorted(seqs, key=lambda p: (int(p.name), p.name)))
    if not sequences:
        raise DatasetError(
            f"{split_dir}: empty split (no sequence folders <traj folder>/<k>/ inside)"
        )
    return sequences


# --------------------------------------------------------------------------- reading


def count_frames(seq_dir: PathLike) -> int:
    """Number of frames of a sequence: ``0.png … N-1.png`` must all be present."""
    seq_dir = Path(seq_dir)
    try:
        names = os.listdir(seq_dir)
    except FileNotFoundError as e:
        raise DatasetError(f"{seq_dir}: sequence folder does not exist") from e
    except OSError as e:
        raise DatasetError(f"{seq_dir}: cannot list sequence folder ({e.strerror or e})") from e
    indices = {int(m.group(1)) for n in names if (m := _FRAME_RE.match(n))}
    if not indices:
        raise DatasetError(f"{seq_dir}: no frames (expected 0.png, 1.png, …)")
    n = max(indices) + 1
    if len(indices) != n:
        missing = sorted(set(range(n)) - indices)
        raise DatasetError(
            f"{seq_dir / f'{missing[0]}.png'}: missing frame (frames must be 0.png … "
            f"{n - 1}.png without gaps; {len(missing)} missing)"
        )
    return n


def read_csv_matrix(path: PathLike, expected_rows: int | None = None) -> np.ndarray:
    """Parse a header-less comma-separated matrix of finite numbers (float64 [rows, cols]).

    Hand-written rather than ``np.loadtxt`` so every error can name the line and column.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: missing file") from e
    except OSError as e:
        raise DatasetError(f"{path}: cannot read file ({e.strerror or e})") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not a text CSV file (byte {e.start} is not UTF-8)") from e
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # tolerate blank lines at the very end only
        lines.pop()
    if not lines:
        raise DatasetError(f"{path}: empty file (expected {expected_rows or 'one or more'} rows)")
    rows: list[list[float]] = []
    n_cols = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            raise DatasetError(f"{path}: line {lineno}: empty line")
        fields = line.split(",")
        if lineno == 1:
            n_cols = len(fields)
        elif len(fields) != n_cols:
            raise DatasetError(
                f"{path}: line {lineno}: {len(fields)} columns, but line 1 has {n_cols}"
            )
        row = []
        for col, field in enumerate(fields, 1):
            s = field.strip()
            try:
                v = float(s)
            except ValueError:
                raise DatasetError(
                    f"{path}: line {lineno}, column {col}: not a number: {s!r} "
                    f"(expected comma-separated numbers, no header)"
                ) from None
            if not math.isfinite(v):
                raise DatasetError(
                    f"{path}: line {lineno}, column {col}: non-finite value {s!r} "
                    f"(NaN and inf are not allowed)"
                )
            row.append(v)
        rows.append(row)
    if expected_rows is not None and len(rows) != expected_rows:
        if len(rows) > expected_rows:
            raise DatasetError(
                f"{path}: line {expected_rows + 1}: extra row; the file has {len(rows)} rows, "
                f"expected {expected_rows} (one per frame)"
            )
        raise DatasetError(
            f"{path}: line {len(rows)}: file ends after {len(rows)} rows, expected "
            f"{expected_rows} (one per frame)"
        )
    return np.asarray(rows, dtype=np.float64)


def read_frame(path: PathLike, expected_size: int | None = None, ref: str = "") -> np.ndarray:
    """Decode one frame to uint8 [H, W, 3]; refuse anything that is not opaque 8-bit RGB.

    ``expected_size``: side length the frame must have (``ref`` names where it comes from).
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            fmt, mode, (w, h) = img.format, img.mode, img.size
            arr = np.asarray(img)
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: missing frame") from e
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, … for broken files
        raise DatasetError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
    if fmt != "PNG":
        raise DatasetError(f"{path}: not a PNG file (format {fmt})")
    if mode == "RGBA":
        alpha = arr[..., 3]
        if alpha.min() != 255:
            raise DatasetError(
                f"{path}: RGBA image with transparent pixels (alpha down to {int(alpha.min())}); "
                f"frames must be opaque RGB"
            )
        arr = np.ascontiguousarray(arr[..., :3])  # opaque alpha carries no information
    elif mode != "RGB":
        raise DatasetError(f"{path}: image mode {mode!r}, frames must be 8-bit RGB")
    if w != h:
        raise DatasetError(f"{path}: frame is {w}x{h}, frames must be square")
    if expected_size is not None and w != expected_size:
        raise DatasetError(
            f"{path}: frame is {w}x{h}, expected {expected_size}x{expected_size} "
            f"like {ref or 'the rest of the dataset'}"
        )
    return arr


class SequenceInfo(NamedTuple):
    """What a sequence looks like on disk, beyond the window that was read."""

    n_frames: int  # frames present on disk (not the window length)
    action_dim: int
    position_dim: int


def read_csvs(seq_dir: Path, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """actions [T, A] and positions [T, P] (float64) of a sequence with ``n_frames`` frames."""
    actions = read_csv_matrix(seq_dir / ACTIONS_CSV, n_frames)
    positions = read_csv_matrix(seq_dir / POSITIONS_CSV, n_frames)
    return actions, positions


def read_sequence_info(
    seq_dir: PathLike,
    n_frames: int | None = None,
    start: int = 0,
    image_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray, SequenceInfo]:
    """:func:`read_sequence` plus the sequence's :class:`SequenceInfo`.

    ``image_size``: side length every frame must have (default: that of the first frame read).
    """
    seq_dir = Path(seq_dir)
    total = count_frames(seq_dir)
    if n_frames is None:
        n_frames = total - start
    if start < 0 or n_frames < 1 or start + n_frames > total:
        raise DatasetError(
            f"{seq_dir}: cannot read frames {start} … {start + n_frames - 1}, "
            f"the sequence has {total} frames"
        )
    actions, positions = read_csvs(seq_dir, total)
    cond = np.concatenate([actions, positions], axis=1)[start : start + n_frames]
    frames: np.ndarray | None = None
    ref = "the rest of the dataset"
    for j, t in enumerate(range(start, start + n_frames)):
        path = seq_dir / f"{t}.png"
        img = read_frame(path, image_size, ref)
        if frames is None:
            if image_size is None:  # later frames must match the first one read
                image_size, ref = img.shape[0], path.name
            frames = np.empty((n_frames, *img.shape), dtype=np.uint8)
        frames[j] = img
    assert frames is not None
    info = SequenceInfo(total, actions.shape[1], positions.shape[1])
    return frames, cond.astype(np.float32), info


def read_sequence(
    seq_dir: PathLike, n_frames: int | None = None, start: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 [T, H, W, 3] and condition float32 [T, A + P] of one sequence folder.

    Reads frames ``start … start + n_frames - 1`` (default: all from ``start``). The whole of
    both CSVs is validated whatever the window, so a broken row never hides behind a window.
    Condition = action columns then end-effector position columns.
    """
    frames, cond, _ = read_sequence_info(seq_dir, n_frames, start)
    return frames, cond


def write_sequence(
    seq_dir: PathLike,
    frames: np.ndarray,
    actions: np.ndarray,
    positions: np.ndarray,
    overwrite: bool = False,
) -> None:
    """Write one sequence in the lab layout, atomically.

    frames uint8 [T, H, W, 3]; actions [T, A]; positions [T, P]. Files go to a hidden sibling
    folder that is renamed into place when complete, so an interrupted writer never leaves a
    half-written sequence that looks finished (and readers skip hidden folders).
    """
    seq_dir = Path(seq_dir)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if len(actions) != len(frames) or len(positions) != len(frames):
        raise ValueError("actions and positions need one row per frame")
    if seq_dir.exists() and not overwrite:
        raise DatasetError(f"{seq_dir}: sequence folder already exists")
    tmp = seq_dir.parent / f".tmp-{seq_dir.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame, "RGB").save(tmp / f"{t}.png")
    for name, values in ((ACTIONS_CSV, actions), (POSITIONS_CSV, positions)):
        # float32 → float64 is exact, and %.18e round-trips it: the CSV holds the very values
        np.savetxt(tmp / name, np.asarray(values, np.float64).reshape(len(frames), -1), delimiter=",")
    if seq_dir.exists():
        old = seq_dir.parent / f".old-{seq_dir.name}-{os.getpid()}"
        os.rename(seq_dir, old)
        os.rename(tmp, seq_dir)
        shutil.rmtree(old)
    else:
        os.rename(tmp, seq_dir)


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, 3, H, W] → float32 in [0, 1]. Both the PNG and the cache path go through here,
    so they give bit-identical tensors."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32).div_(255.0)


# --------------------------------------------------------------------------- Dataset


def validate_sequences(sequences: list[Path]) -> SequenceInfo:
    """Cheap check of every sequence (frame files present, CSVs fully parsed) at construction.

    All sequences must agree on frame count and CSV widths; images are decoded at access time
    (decoding them all here would cost as much as an epoch).
    """
    first: tuple[Path, SequenceInfo] | None = None
    for seq in sequences:
        n = count_frames(seq)
        actions, positions = read_csvs(seq, n)
        info = SequenceInfo(n, actions.shape[1], positions.shape[1])
        if first is None:
            first = (seq, info)
        elif info != first[1]:
            raise DatasetError(_mismatch(seq, info, *first))
    assert first is not None
    return first[1]


def _mismatch(seq: Path, info: SequenceInfo, ref_seq: Path, ref: SequenceInfo) -> str:
    for name, a, b in zip(("frames", "action columns", "position columns"), info, ref):
        if a != b:
            return f"{seq}: has {a} {name}, but {ref_seq} has {b}; all sequences must agree"
    return f"{seq}: differs from {ref_seq}"


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

    def __init__(
        self,
        root: PathLike,
        split: str,
        n_frames: int | None = 12,
        random_window: bool = False,
        seed: int = 0,
        use_cache: bool = True,
        validate: bool = True,
        cache_dir: PathLike | None = None,
    ) -> None:
        from lab5.data import cache as cache_mod  # lazy: cache.py imports this module

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
            loaded, self.cache_status = cache_mod.open_cache(
                self.root, split, self._sequences, cache_dir
            )
            if loaded is None and self.cache_status.startswith("stale"):
                warnings.warn(
                    f"{self.cache_status}; decoding PNGs instead (rebuild it with "
                    f"`python -m lab5 data cache {self.root}`)",
                    stacklevel=2,
                )
        self.using_cache = loaded is not None
        if loaded is not None:
            shape = loaded.index["shape"]
            self._info = SequenceInfo(
                shape["seq_len"], shape["action_dim"], shape["position_dim"]
            )
            self._image_size = int(shape["image_size"])
            self._mm = (loaded.frames, loaded.cond)
            self._cache_paths = (loaded.frames_path, loaded.cond_path)
        else:
            if validate:
                self._info = validate_sequences(self._sequences)
            else:  # trust the first sequence; the others are checked as they are read
                n = count_frames(self._sequences[0])
                a, p = read_csvs(self._sequences[0], n)
                self._info = SequenceInfo(n, a.shape[1], p.shape[1])
            # One decoded frame fixes the size; every other frame is compared to it on access.
            first = self._sequences[0] / "0.png"
            self._image_size = read_frame(first).shape[0]

        self.n_frames = self._info.n_frames if n_frames is None else int(n_frames)
        if not 1 <= self.n_frames <= self._info.n_frames:
            raise DatasetError(
                f"{self.root / split}: n_frames={self.n_frames} but sequences have "
                f"{self._info.n_frames} frames"
            )

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
        return (
            f"BairDataset({str(self.root)!r}, {self.split!r}, {len(self)} sequences, "
            f"n_frames={self.n_frames}, random_window={self.random_window}, "
            f"using_cache={self.using_cache})"
        )

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
            self._mm = (
                np.load(self._cache_paths[0], mmap_mode="r"),
                np.load(self._cache_paths[1], mmap_mode="r"),
            )
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
            seq = self._sequences[index]
            hwc, cond, info = read_sequence_info(seq, self.n_frames, start, self._image_size)
            if info != self._info:
                raise DatasetError(_mismatch(seq, info, self._sequences[0], self._info))
            frames = hwc.transpose(0, 3, 1, 2)
        return frames_to_tensor(frames), torch.from_numpy(cond)

    def __getstate__(self) -> dict[str, Any]:
        # Pickling a memmap copies its whole content; DataLoader workers started with "spawn"
        # (macOS, Windows) would each receive the full cache. Send the paths instead.
        state = self.__dict__.copy()
        state["_mm"] = None
        return state
