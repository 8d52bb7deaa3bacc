"""What a notebook shows: the plotting style, figures saved and shown, images, rounded tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab5.files import home

IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def plot_style() -> None:
    """Seaborn's whitegrid theme when installed, figures inline as PNG, tables on one width."""
    import matplotlib  # heavy: kept off the import path of `python -m lab5 --help`
    import pandas as pd  # heavy, as matplotlib

    try:
        import seaborn as sns  # optional: plots still work without it, only plainer

        sns.set_theme(style="whitegrid", context="notebook")
    except ImportError:
        pass
    matplotlib.rcParams.update({"figure.dpi": 80, "savefig.dpi": 120, "axes.titlesize": 11})
    # Tables print on one width everywhere: stored outputs do not depend on a terminal.
    pd.set_option("display.width", 120)
    pd.set_option("display.max_colwidth", 60)
    try:
        from IPython import get_ipython  # only inside a kernel

        ip = get_ipython()
    except ImportError:
        ip = None
    if ip is None:
        return
    # lab5.viz builds Figures without pyplot: the inline backend registers the formatter that
    # renders a Figure a cell returns as an image; text/plain is what a viewer without images
    # shows (and what nbval compares).
    ip.run_line_magic("matplotlib", "inline")
    ip.run_line_magic("config", "InlineBackend.figure_formats = ['png']")
    ip.display_formatter.formatters["text/plain"].for_type(
        matplotlib.figure.Figure, lambda fig, p, cycle: p.text(f"[figure: {len(fig.axes)} panels, shown as an image]"))


def show_path(path: str | Path) -> str:
    """``path`` relative to the lab5 home when inside it (stable across machines), else absolute."""
    path = Path(path)
    for a, b in ((path.absolute(), home().absolute()), (path.resolve(), home().resolve())):
        try:
            return str(a.relative_to(b)) or "."
        except ValueError:
            continue
    return str(path)


def save_figure(fig: Any, name: str, folder: str | Path | None = None) -> Path:
    """Save ``fig`` as ``folder/name`` (default folder: ``figures/`` of the lab5 home); print where."""
    folder = Path(folder) if folder is not None else home() / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    # Run names hold dots (lr=0.001): only a known image suffix counts as the file type.
    path = folder / (name if Path(name).suffix.lower() in IMAGE_SUFFIXES else f"{name}.png")
    # No metadata: the same figure gives the same bytes, so regenerated files diff cleanly.
    fig.savefig(path, bbox_inches="tight", metadata={"Software": None})
    print(f"saved {show_path(path)}")
    return path


def show_image(path: str | Path) -> Any:
    """An image file (PNG, GIF) as a cell output, embedded in the notebook: it shows wherever the
    executed notebook is written, where a Markdown link to figures/ would break."""
    from IPython.display import Image  # only inside a kernel

    return Image(filename=str(path))


def tidy(value: Any, digits: int) -> Any:
    """Floats rounded to ``digits`` (and -0.0 as 0.0), so printed tables stay stable."""
    return round(value, digits) + 0.0 if isinstance(value, float) else value


def table(columns: dict[str, dict[str, Any]], digits: int = 4) -> Any:
    """A pandas table from ``{column: {row: value}}`` with floats rounded; a missing cell prints empty."""
    import pandas as pd  # heavy: kept off the import path of `python -m lab5 --help`

    order = list(dict.fromkeys(row for rows in columns.values() for row in rows))  # as given, not sorted
    frame = pd.DataFrame({col: pd.Series({row: tidy(v, digits) for row, v in rows.items()}, dtype=object)
                          for col, rows in columns.items()}, index=order)
    return frame.where(frame.notna(), "")


def history_table(history: list[dict[str, Any]], digits: int = 4) -> Any:
    """The per-epoch rows of a run (``history.jsonl``) as a rounded pandas table."""
    import pandas as pd  # heavy: kept off the import path of `python -m lab5 --help`

    return pd.DataFrame([{k: tidy(v, digits) for k, v in r.items()} for r in history if "epoch" in r]).set_index("epoch")
