"""The BAIR "lab layout" on disk, ``<root>/{train,validate,test}/<traj folder>/<k>/`` holding T square RGB
frames ``0.png … {T-1}.png`` and header-less CSVs ``actions.csv`` (T x A) and ``endeffector_positions.csv``
(T x P): find, validate, read and write sequences. Every problem raises :class:`DatasetError` naming the
offending path, so a student can fix the file rather than read a traceback."""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from lab5.files import progress_bar

SPLITS: tuple[str, ...] = ("train", "validate", "test")
ACTIONS_CSV = "actions.csv"
POSITIONS_CSV = "endeffector_positions.csv"
# Only canonical names count as frames ("7.png", not "07.png"): "missing 7.png" is unambiguous.
FRAME_RE = re.compile(r"^(0|[1-9][0-9]*)\.png$")
_INT_RE = re.compile(r"^[0-9]+$")

PathLike = str | os.PathLike


class DatasetError(Exception):
    """A problem with the data on disk; the message names the offending path and the problem."""


def natural_key(name: str) -> tuple[list[Any], str]:
    """Sort key that orders ``traj_256_to_511`` before ``traj_1024_to_1279``; the raw name breaks ties."""
    parts = re.split(r"([0-9]+)", name)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)], name


def visible_dirs(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return [Path(e.path) for e in it if not e.name.startswith(".") and e.is_dir()]
    except OSError as e:
        raise DatasetError(f"{folder}: cannot list folder ({e.strerror or e})") from e


def root_dir(root: PathLike) -> Path:
    """``root`` as a Path, if it is an existing folder; else DatasetError."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"data root {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root}: data root is not a folder")
    return root


def present_splits(root: Path, missing: str) -> list[str]:
    """The splits that exist under ``root``; none raises DatasetError(f"{root}: {missing}")."""
    splits = [s for s in SPLITS if (root / s).is_dir()]
    if not splits:
        raise DatasetError(f"{root}: {missing}")
    return splits


def find_sequences(root: PathLike, split: str) -> list[Path]:
    """Sequence folders of ``root/split``: traj folders in natural order, then ``int(k)``, on every file system."""
    root = root_dir(root)
    split_dir = root / split
    if not split_dir.is_dir():
        present = ", ".join(s for s in SPLITS if (root / s).is_dir()) or "none"
        raise DatasetError(f"{split_dir}: split folder does not exist (splits present under {root}: {present})")
    sequences: list[Path] = []
    for traj in sorted(visible_dirs(split_dir), key=lambda p: natural_key(p.name)):
        # A frequent mistake is one folder level too few (<split>/<k>/0.png); say so plainly.
        if (traj / "0.png").exists() or (traj / ACTIONS_CSV).exists():
            raise DatasetError(f"{traj}: holds frames directly, but the layout is "
                               f"<split>/<traj folder>/<k>/0.png (one folder level is missing)")
        seqs = visible_dirs(traj)
        if bad := next((s for s in seqs if not _INT_RE.match(s.name)), None):
            raise DatasetError(f"{bad}: sequence folder name is not an integer")
        sequences.extend(sorted(seqs, key=lambda p: (int(p.name), p.name)))
    if not sequences:
        raise DatasetError(f"{split_dir}: empty split (no sequence folders <traj folder>/<k>/ inside)")
    return sequences


def count_frames(seq_dir: PathLike) -> int:
    """Number of frames of a sequence: ``0.png … N-1.png`` must all be present."""
    seq_dir = Path(seq_dir)
    try:
        names = os.listdir(seq_dir)
    except FileNotFoundError as e:
        raise DatasetError(f"{seq_dir}: sequence folder does not exist") from e
    except OSError as e:
        raise DatasetError(f"{seq_dir}: cannot list sequence folder ({e.strerror or e})") from e
    indices = {int(m.group(1)) for n in names if (m := FRAME_RE.match(n))}
    if not indices:
        raise DatasetError(f"{seq_dir}: no frames (expected 0.png, 1.png, …)")
    n = max(indices) + 1
    if len(indices) != n:
        missing = sorted(set(range(n)) - indices)
        raise DatasetError(f"{seq_dir / f'{missing[0]}.png'}: missing frame (frames must be 0.png … "
                           f"{n - 1}.png without gaps; {len(missing)} missing)")
    return n


def _parse_field(path: Path, lineno: int, col: int, field: str) -> float:
    s = field.strip()
    try:
        v = float(s)
    except ValueError:
        raise DatasetError(f"{path}: line {lineno}, column {col}: not a number: {s!r} "
                           f"(expected comma-separated numbers, no header)") from None
    if not math.isfinite(v):
        raise DatasetError(f"{path}: line {lineno}, column {col}: non-finite value {s!r} "
                           f"(NaN and inf are not allowed)")
    return v


def read_csv_matrix(path: PathLike, expected_rows: int | None = None) -> np.ndarray:
    """A header-less CSV of finite numbers as float64 [rows, cols] (not ``np.loadtxt``: errors name line and column)."""
    path = Path(path)
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: missing file") from e
    except OSError as e:
        raise DatasetError(f"{path}: cannot read file ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not a text CSV file (byte {e.start} is not UTF-8)") from e
    while lines and not lines[-1].strip():  # tolerate blank lines at the very end only
        lines.pop()
    if not lines:
        raise DatasetError(f"{path}: empty file (expected {expected_rows or 'one or more'} rows)")
    rows: list[list[float]] = []
    n_cols = len(lines[0].split(","))
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            raise DatasetError(f"{path}: line {lineno}: empty line")
        if len(fields := line.split(",")) != n_cols:
            raise DatasetError(f"{path}: line {lineno}: {len(fields)} columns, but line 1 has {n_cols}")
        rows.append([_parse_field(path, lineno, col, f) for col, f in enumerate(fields, 1)])
    if expected_rows is not None and len(rows) != expected_rows:
        n = len(rows)
        where = (f"line {expected_rows + 1}: extra row; the file has {n} rows," if n > expected_rows
                 else f"line {n}: file ends after {n} rows,")
        raise DatasetError(f"{path}: {where} expected {expected_rows} (one per frame)")
    return np.asarray(rows, dtype=np.float64)


def read_frame(path: PathLike, expected_size: int | None = None, ref: str = "") -> np.ndarray:
    """Decode one opaque 8-bit RGB frame to uint8 [H, W, 3], of side ``expected_size`` if given (``ref``: whose)."""
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
            raise DatasetError(f"{path}: RGBA image with transparent pixels (alpha down to "
                               f"{int(alpha.min())}); frames must be opaque RGB")
        arr = np.ascontiguousarray(arr[..., :3])  # opaque alpha carries no information
    elif mode != "RGB":
        raise DatasetError(f"{path}: image mode {mode!r}, frames must be 8-bit RGB")
    if w != h:
        raise DatasetError(f"{path}: frame is {w}x{h}, frames must be square")
    if expected_size is not None and w != expected_size:
        raise DatasetError(f"{path}: frame is {w}x{h}, expected {expected_size}x{expected_size} "
                           f"like {ref or 'the rest of the dataset'}")
    return arr


class SequenceInfo(NamedTuple):
    """What a sequence looks like on disk, beyond the window that was read."""
    n_frames: int  # frames present on disk (not the window length)
    action_dim: int
    position_dim: int


def read_csvs(seq_dir: Path, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """actions [T, A] and positions [T, P] (float64) of a sequence with ``n_frames`` frames."""
    return read_csv_matrix(seq_dir / ACTIONS_CSV, n_frames), read_csv_matrix(seq_dir / POSITIONS_CSV, n_frames)


def sequence_info(seq_dir: Path) -> SequenceInfo:
    """The cheap check of one sequence: frame files present, both CSVs fully parsed."""
    actions, positions = read_csvs(seq_dir, n := count_frames(seq_dir))
    return SequenceInfo(n, actions.shape[1], positions.shape[1])


def read_sequence(seq_dir: PathLike, n_frames: int | None = None,
                  start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 [T, H, W, 3] and condition float32 [T, A + P] (actions, then positions) of frames
    ``start …`` (default: all); both CSVs are validated whole, so no broken row hides behind a window."""
    frames, cond, _ = Agreement().read(Path(seq_dir), n_frames, start)
    return frames, cond


class Agreement:
    """The rule every reader enforces: all sequences of a dataset (all splits together, for ``check``)
    agree on frame count, CSV widths and image size with the first one seen, the reference."""

    def __init__(self, seq: Path | None = None, info: SequenceInfo | None = None,
                 image_size: int | None = None) -> None:
        self.seq, self.info, self.image_size = seq, info, image_size

    def check(self, seq: Path, info: SequenceInfo, image_size: int | None = None) -> SequenceInfo:
        """``info`` if it matches the reference (the first call sets it), else DatasetError."""
        if self.info is None:
            self.seq, self.info, self.image_size = seq, info, image_size
        elif info != self.info:
            names = ("frames", "action columns", "position columns")
            name, a, b = next((n, a, b) for n, a, b in zip(names, info, self.info) if a != b)
            raise DatasetError(f"{seq}: has {a} {name}, but {self.seq} has {b}; all sequences must agree")
        return self.info

    def read(self, seq: Path, n_frames: int | None = None,
             start: int = 0) -> tuple[np.ndarray, np.ndarray, SequenceInfo]:
        """:func:`read_sequence` of ``seq`` and its :class:`SequenceInfo`, checked against the reference."""
        total = count_frames(seq)
        n_frames = total - start if n_frames is None else n_frames
        if start < 0 or n_frames < 1 or start + n_frames > total:
            raise DatasetError(f"{seq}: cannot read frames {start} … {start + n_frames - 1}, "
                               f"the sequence has {total} frames")
        actions, positions = read_csvs(seq, total)
        cond = np.concatenate([actions, positions], axis=1)[start : start + n_frames]
        first = read_frame(seq / f"{start}.png", self.image_size)
        # Later frames must match the first one read (or image_size, whose ref is the whole dataset).
        ref = "the rest of the dataset" if self.image_size is not None else f"{start}.png"
        frames = np.stack([first] + [read_frame(seq / f"{start + j}.png", first.shape[0], ref)
                                     for j in range(1, n_frames)])
        info = self.check(seq, SequenceInfo(total, actions.shape[1], positions.shape[1]), first.shape[0])
        return frames, cond.astype(np.float32), info


def write_sequence(seq_dir: PathLike, frames: np.ndarray, actions: np.ndarray, positions: np.ndarray,
                   overwrite: bool = False, compress_level: int | None = None) -> None:
    """Write frames uint8 [T, H, W, 3], actions [T, A] and positions [T, P] as one sequence, in a hidden folder
    renamed into place when complete: never a half-written sequence that looks finished."""
    seq_dir = Path(seq_dir)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if len(actions) != len(frames) or len(positions) != len(frames):
        raise ValueError("actions and positions need one row per frame")
    if seq_dir.exists() and not overwrite:
        raise DatasetError(f"{seq_dir}: sequence folder already exists")
    tmp, old = (seq_dir.parent / f".{kind}-{seq_dir.name}-{os.getpid()}" for kind in ("tmp", "old"))
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    png = {} if compress_level is None else {"compress_level": compress_level}
    for t, frame in enumerate(frames):
        Image.fromarray(frame, "RGB").save(tmp / f"{t}.png", **png)
    for name, values in ((ACTIONS_CSV, actions), (POSITIONS_CSV, positions)):
        # float32 → float64 is exact, and %.18e round-trips it: the CSV holds the very values
        np.savetxt(tmp / name, np.asarray(values, np.float64).reshape(len(frames), -1), delimiter=",")
    if replacing := seq_dir.exists():
        os.rename(seq_dir, old)
    os.rename(tmp, seq_dir)
    if replacing:
        shutil.rmtree(old)


class SplitReport(NamedTuple):
    """One split as :func:`check_root` found it."""
    split: str
    sequences: int
    frames: int  # frames on disk, all sequences together
    seq_len: int
    image_size: int
    action_dim: int
    position_dim: int

    def line(self) -> str:
        n, a, p = self.sequences, self.action_dim, self.position_dim
        return (f"{self.split}: {n} sequence{'s' if n != 1 else ''}, {self.frames} frames ({self.seq_len} "
                f"per sequence, {self.image_size}x{self.image_size} RGB, cond {a}+{p}={a + p})")


class CheckReport(NamedTuple):
    root: Path
    splits: dict[str, SplitReport]

    def __str__(self) -> str:
        return "\n".join([r.line() for r in self.splits.values()] + [f"OK: {self.root}"])


def check_root(root: PathLike, echo: bool = False, progress: bool = False) -> CheckReport:
    """Validate every split present, decoding every image (``python -m lab5 data check``): all sequences of
    all splits must agree, as a model trained on one is evaluated on another. ``echo``: print each split's line."""
    root = root_dir(root)
    splits = present_splits(root, f"no split folder under the data root (expected at least one of {', '.join(SPLITS)})")
    report, agree = CheckReport(root, {}), Agreement()
    for split in splits:
        sequences = find_sequences(root, split)
        bar = progress_bar(sequences, desc=f"check {split}", unit="seq", disable=not progress)
        frames = sum(agree.read(seq)[2].n_frames for seq in bar)
        info = agree.info
        report.splits[split] = SplitReport(split, len(sequences), frames, info.n_frames, agree.image_size,
                                           info.action_dim, info.position_dim)
        if echo:
            print(report.splits[split].line(), flush=True)
    return report
