"""Full validation of a lab-layout data root: every CSV parsed and every image decoded.

``python -m lab5 data check ROOT`` prints, per split, the number of sequences and frames, or
exits non-zero with the first problem (file + what is wrong). Run it once after a download or
conversion; training then only needs the cheap checks ``BairDataset`` does on construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lab5.data.layout import SPLITS, Agreement, DatasetError, PathLike, find_sequences, present_splits
from lab5.files import progress_bar


@dataclass
class SplitReport:
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


@dataclass
class CheckReport:
    root: Path
    splits: dict[str, SplitReport] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [r.line() for r in self.splits.values()] + [f"OK: {self.root}"]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def check_root(root: PathLike, splits: list[str] | None = None, echo: bool = False,
               progress: bool = False) -> CheckReport:
    """Validate every split present (at least one must exist); all sequences of all splits must agree
    (a model trained on one split is evaluated on another). Raises :class:`DatasetError` at the first
    problem. ``echo`` prints each split's line as soon as it is checked."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"data root {root} does not exist")
    if splits is None:
        splits = present_splits(root, f"no split folder under the data root (expected at least one of "
                                      f"{', '.join(SPLITS)})")
    report = CheckReport(root)
    agree = Agreement()
    for split in splits:
        sequences = find_sequences(root, split)
        bar = progress_bar(sequences, desc=f"check {split}", unit="seq", disable=not progress)
        frames = sum(agree.read(seq)[2].n_frames for seq in bar)
        info, size = agree.info, agree.image_size
        report.splits[split] = SplitReport(split, len(sequences), frames, info.n_frames, size,
                                           info.action_dim, info.position_dim)
        if echo:
            print(report.splits[split].line(), flush=True)
    return report
