"""Files and progress: where lab5 keeps its files, writes that a kill leaves whole (the old content or
the new, never a torn file), JSON lines, and text progress bars."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

from tqdm.std import tqdm


def home() -> Path:
    """Where data/, runs/ and checkpoints/ live: ``$LAB5_HOME``, else this package's checkout, else ~/.cache/lab5."""
    if os.environ.get("LAB5_HOME"):
        return Path(os.environ["LAB5_HOME"])
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").is_file():
        return repo
    return Path.home() / ".cache" / "lab5"


def show_path(path: str | Path) -> str:
    """``path`` relative to the lab5 home when inside it (no user's directory in a stored output), else absolute."""
    path = Path(path)
    for a, b in ((path.absolute(), home().absolute()), (path.resolve(), home().resolve())):
        if a.is_relative_to(b):
            return str(a.relative_to(b)) or "."
    return str(path)


Content = str | bytes | Callable[[BinaryIO], None]


def write_atomic(path: str | os.PathLike, content: Content) -> None:
    """Write ``content`` (text, bytes, or a function that writes to the binary file it is given) to a temporary
    sibling, flush it to disk, then rename it over ``path``. Through a Python file, a full disk raises OSError, also
    in torch.save (given a path, torch says only ``RuntimeError: [enforce fail at inline_container.cc]``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            if callable(content):
                content(fh)
            else:
                fh.write(content.encode() if isinstance(content, str) else content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(folder: str | os.PathLike) -> None:
    """Create ``folder`` if needed and prove a file can be written in it; raise OSError if not."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".probe-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


def to_jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# Text bars, not ipywidgets: a notebook file keeps a widget bar's first state but a text bar's final one. Each
# refresh is a message on a kernel's IOPub channel, so a bar refreshes about REFRESHES times whatever the speed.
REFRESHES = 25


def progress_bar(iterable: Iterable[Any] | None = None, *, total: float | None = None, **kwargs: Any) -> tqdm:
    """A text ``tqdm(iterable, total=..., **kwargs)`` refreshing every ``total / REFRESHES`` steps, at least 0.5 s
    apart (2 s without a total), and on close. ``set_postfix(..., refresh=False)``: the next refresh shows it."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if total:
        # A fixed miniters turns off tqdm's dynamic one; an infinite maxinterval stops its
        # monitor thread from resetting miniters to 1 when steps are slow (lab preset, CPU).
        kwargs = {"miniters": max(1, math.ceil(total / REFRESHES)), "mininterval": 0.5,
                  "maxinterval": math.inf, **kwargs}
    else:
        kwargs = {"mininterval": 2.0, **kwargs}
    # In a Jupyter kernel, stdout: a notebook shows stderr as warnings.
    kwargs.setdefault("file", sys.stdout if "ipykernel" in sys.modules else sys.stderr)
    return tqdm(iterable, total=total, **kwargs)


def write(message: str) -> None:
    """Print a line between the bars (``tqdm.write``: the bars are redrawn below it)."""
    tqdm.write(message, file=sys.stdout)
