"""The workbook's plumbing: the setup cell, notebook parameters, and running the notebooks.

Every notebook in ``notebooks/`` opens with the same two cells::

    from lab5 import workbook as wb          # setup cell
    device = wb.setup(seed=0)

    preset = "demo"                          # the papermill ``parameters`` cell
    ...

    P = wb.config_from_params(globals(), "04_training")   # the validation cell

``setup`` seeds, sets threads, configures plotting, unbinds every name that can be a
parameter (left from an earlier run in the same kernel) and remembers which global names
exist *before* the parameters cell. ``config_from_params`` then looks at the names that
appeared or changed since: the parameters cell's own names and whatever papermill
injected after it. A name that is neither one of the notebook's declared parameters
nor a ``Config`` field raises ``ConfigError`` naming it, so
``papermill 04_training.ipynb out.ipynb -p bogus 1`` fails at once instead of silently
training with the defaults. Config fields are accepted by every notebook
(``-p lr 0.001``) and type-checked by ``Config``.

``run_workbook`` / ``run_sweep`` execute the notebooks with papermill: they are the
``python -m lab5 workbook`` and ``python -m lab5 sweep`` commands.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import random
import shutil
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from lab5.config import RUNTIME_FIELDS, Config, ConfigError, _coerce, make_config
from lab5.hardware import resolve_device, resolve_precision

# --------------------------------------------------------------------------------------
# Notebook parameters
# --------------------------------------------------------------------------------------

# Each notebook's declared parameters (its ``parameters`` cell) with their defaults.
# tests/test_workbook.py checks these against the notebooks themselves.
NOTEBOOKS: dict[str, dict[str, Any]] = {
    "01_derivation": {"preset": "demo"},
    "02_data_exploration": {"preset": "demo", "data_root": None},
    "03_model_build": {"preset": "demo", "data_root": None},
    "04_training": {"preset": "demo", "data_root": None, "run_dir": None, "seed": None,
                    "epochs": None, "interactive": True, "figures_dir": None},
    "05_evaluation": {"preset": "demo", "data_root": None, "run_dir": None, "samples": 3,
                      "max_sequences": 0, "interactive": True, "figures_dir": None},
}

# Notebooks that run for minutes: ``python -m lab5 workbook`` streams their printed output.
STREAMED = ("04_training",)

# Types of the parameters that are not Config fields ("path": a str, a Path or None).
PARAM_TYPES: dict[str, Any] = {"preset": str, "data_root": "path", "run_dir": "path",
                               "figures_dir": "path", "interactive": bool, "samples": int,
                               "max_sequences": int}

_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}
_PLAIN = (type(None), bool, int, float, str, list, tuple, dict, Path)


@dataclass
class _Window:
    baseline: dict[str, Any]          # the namespace when setup() ran (values kept to spot rebinding)
    names: set[str] | None = None     # the parameter names, fixed at the first validation


# setup() stores the window in the notebook's own namespace (an underscore name, so it is never
# taken for a parameter): it lives and dies with the kernel session, and cannot be confused
# with another namespace's.
_WINDOW_KEY = "_lab5_parameter_window"


def config_fields() -> set[str]:
    return {f.name for f in fields(Config)}


@dataclass
class NotebookParams:
    """The validated parameters of one notebook run."""

    notebook: str
    cfg: Config
    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)   # Config fields given (not None)
    data_root: Path | None = None       # None: the embedded simulated data
    run_dir: Path | None = None         # resolved for 04; None in 05 means "find one"
    figures_dir: Path = Path("figures")
    interactive: bool = True
    samples: int = 3
    max_sequences: int = 0

    @property
    def name(self) -> str:
        """The run's name: the preset, overrides that change what is computed, and the data
        root's folder name when it is not the embedded set (so runs on other data never collide)."""
        return run_name(self.preset, self.overrides, self.data_root)

    @property
    def stem(self) -> str:
        """``name`` as a file-name part: ``demo_lr-0.001`` for ``demo,lr=0.001``."""
        return self.name.replace(",", "_").replace("=", "-").replace("/", "_")

    def __str__(self) -> str:
        data = "embedded (simulated)" if self.data_root is None else show_path(self.data_root)
        lines = [f"notebook {self.notebook}: preset '{self.preset}', data {data}"]
        if self.run_dir is not None:
            lines.append(f"run_dir {show_path(self.run_dir)}, figures {show_path(self.figures_dir)}")
        given = ", ".join(f"{k}={v!r}" for k, v in sorted(self.overrides.items())) or "none"
        lines.append(f"config overrides: {given}")
        lines.append(describe_config(self.cfg))
        return "\n".join(lines)


def run_name(preset: str, overrides: dict[str, Any], data_root: str | Path | None = None) -> str:
    """``demo``; ``demo,lr=0.001,z_dim=16`` when settings that change the run are overridden;
    ``demo,data=bair`` for a run on the data root ``.../bair`` instead of the embedded set."""
    parts = [f"{k}={overrides[k]}" for k in sorted(overrides)
             if k not in RUNTIME_FIELDS and k not in ("preset",) and overrides[k] is not None]
    if data_root is not None:
        parts.append(f"data={Path(data_root).name or 'root'}")
    return ",".join([preset, *parts])


def describe_config(cfg: Config) -> str:
    """A two-line summary of the settings a reader cares about."""
    prior = {"fixed": "fixed N(0,I) prior", "learned": "learned prior", "none": "deterministic"}[cfg.prior]
    iters = cfg.iters_per_epoch or "one pass"
    return (f"model: {cfg.arch} (nf {cfg.nf}), g_dim {cfg.g_dim}, z_dim {cfg.z_dim}, rnn {cfg.rnn_size}, "
            f"{prior}; frames {cfg.n_past} + {cfg.n_future}\n"
            f"training: {cfg.epochs} epochs x {iters} iterations, batch {cfg.batch_size}, lr {cfg.lr:g}, "
            f"KL {cfg.kl_mode} (beta max {cfg.kl_beta_max:g}), teacher forcing {cfg.tf_ratio:g} "
            f"-> {cfg.tf_min:g}, step {cfg.step}, "
            f"{resolve_precision(cfg.bf16, cfg.channels_last, resolve_device(cfg.device)).describe()}")


def _check_type(name: str, value: Any) -> Any:
    kind = PARAM_TYPES[name]
    if kind == "path":
        if value is None or isinstance(value, Path):
            return value
        if isinstance(value, str) and value.strip():
            return Path(value).expanduser()
        raise ConfigError(f"notebook parameter '{name}' expects a path or None, got {value!r} "
                          f"({type(value).__name__})")
    try:
        return _coerce(name, value, kind)
    except ConfigError:
        raise ConfigError(f"notebook parameter '{name}' expects {kind.__name__}, got {value!r} "
                          f"({type(value).__name__})") from None


def validate_params(notebook: str, values: dict[str, Any]) -> NotebookParams:
    """Check one notebook's parameter values and build its ``NotebookParams``.

    ``values`` holds the notebook's parameters (declared or injected). Unknown names and
    ill-typed values raise ``ConfigError`` naming them.
    """
    if notebook not in NOTEBOOKS:
        raise ConfigError(f"unknown notebook '{notebook}' (known: {', '.join(NOTEBOOKS)})")
    declared, cfg_fields = NOTEBOOKS[notebook], config_fields()
    unknown = sorted(k for k in values if k not in declared and k not in cfg_fields)
    if unknown:
        raise ConfigError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)} "
            f"for {notebook} (its parameters: {', '.join(declared)}; or any Config field: "
            f"{', '.join(sorted(cfg_fields - {'preset'}))})")
    merged = {**declared, **values}
    own = {k: _check_type(k, v) for k, v in merged.items() if k in PARAM_TYPES}
    overrides = {k: v for k, v in merged.items() if k in cfg_fields and k != "preset" and v is not None}
    preset = own["preset"]
    cfg = make_config(preset, overrides=overrides)     # unknown preset / ill-typed field -> ConfigError
    from lab5.runs import home

    figures = own.get("figures_dir") or home() / "figures"
    run_dir = own.get("run_dir")
    if run_dir is None and notebook == "04_training":
        run_dir = home() / "runs" / run_name(preset, overrides, own.get("data_root"))
    for name in ("samples", "max_sequences"):
        if name in own and own[name] < (1 if name == "samples" else 0):
            raise ConfigError(f"notebook parameter '{name}' must be >= {1 if name == 'samples' else 0}, "
                              f"got {own[name]!r}")
    return NotebookParams(notebook=notebook, cfg=cfg, preset=preset, overrides=overrides,
                          data_root=own.get("data_root"), run_dir=run_dir, figures_dir=Path(figures),
                          interactive=own.get("interactive", True), samples=own.get("samples", 3),
                          max_sequences=own.get("max_sequences", 0))


def _parameter_names(namespace: dict[str, Any], baseline: dict[str, Any] | None) -> set[str]:
    """Names bound or rebound since ``setup()``: the parameters cell's and papermill's."""
    names = set()
    for key, value in namespace.items():
        if key.startswith("_") or key in _IPYTHON_NAMES or not isinstance(value, _PLAIN):
            continue
        if baseline is None or key not in baseline or baseline[key] is not value:
            names.add(key)
    return names


def config_from_params(namespace: dict[str, Any], notebook: str,
                       baseline: dict[str, Any] | None = None) -> NotebookParams:
    """The validation cell: check the parameters found in ``namespace`` (pass ``globals()``).

    The parameter names are those bound since ``setup()`` (``baseline`` overrides that
    snapshot, for tests), fixed at the first call so that re-running the cell later in an
    interactive session does not mistake the notebook's own variables for parameters.
    """
    window = namespace.get(_WINDOW_KEY) if baseline is None else None
    if window is not None:
        baseline = window.baseline
    if window is not None and window.names is not None:
        names = window.names
    else:
        names = _parameter_names(namespace, baseline)
    params = validate_params(notebook, {k: namespace[k] for k in names if k in namespace})
    if window is not None and window.names is None:
        window.names = names
    return params


# --------------------------------------------------------------------------------------
# The setup cell and small notebook helpers
# --------------------------------------------------------------------------------------

def setup(seed: int = 0, threads: int | None = None, namespace: dict[str, Any] | None = None):
    """The first cell of every notebook: seed, threads, plotting style; return the torch device.

    ``namespace`` defaults to the caller's globals (the notebook's); its names are
    remembered so that ``config_from_params`` can tell the parameters apart.
    """
    import numpy as np
    import torch

    import lab5

    if namespace is None:
        namespace = sys._getframe(1).f_globals
    # A second Run All in the same kernel: the previous run's parameter values are still bound,
    # and the parameters cell may bind a name to the very object it already holds (a small int,
    # True, None), which no snapshot can tell from "unchanged". Unbinding every name that can be
    # a parameter makes whatever the parameters cell (and papermill) bind next count, every run.
    for name in (config_fields() | set().union(*NOTEBOOKS.values())) & namespace.keys():
        del namespace[name]
    namespace[_WINDOW_KEY] = _Window(baseline=dict(namespace))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _plot_style()
    print(f"lab5 {lab5.__version__} | torch {torch.__version__} | python {platform.python_version()} | "
          f"device {device} | {torch.get_num_threads()} threads | seed {seed}")
    return device


def _plot_style() -> None:
    import matplotlib

    try:
        import seaborn as sns

        sns.set_theme(style="whitegrid", context="notebook")
    except ImportError:  # plots still work, only plainer
        pass
    matplotlib.rcParams.update({"figure.dpi": 80, "savefig.dpi": 120, "axes.titlesize": 11})
    try:  # tables print on one width everywhere (stored outputs do not depend on a terminal)
        import pandas as pd

        pd.set_option("display.width", 120)
        pd.set_option("display.max_colwidth", 60)
    except ImportError:
        pass
    try:  # figures shown inline as PNG (small, and stable to store)
        from IPython import get_ipython

        ip = get_ipython()
        if ip is not None:
            # lab5.viz builds Figures without pyplot: the inline backend registers the
            # formatter that renders a Figure a cell returns as an image.
            ip.run_line_magic("matplotlib", "inline")
            ip.run_line_magic("config", "InlineBackend.figure_formats = ['png']")
            # The text a viewer without images falls back to (and nbval compares).
            from matplotlib.figure import Figure

            ip.display_formatter.formatters["text/plain"].for_type(
                Figure, lambda fig, p, cycle: p.text(f"[figure: {len(fig.axes)} panels, shown as an image]"))
    except Exception:  # not in IPython, or no inline backend
        pass


def show_path(path: str | Path) -> str:
    """``path`` relative to the lab5 home when inside it (stable across machines), else absolute."""
    from lab5.runs import home

    path = Path(path)
    for a, b in ((path.absolute(), home().absolute()), (path.resolve(), home().resolve())):
        try:
            return str(a.relative_to(b)) or "."
        except ValueError:
            continue
    return str(path)


def data_root(params: NotebookParams, evaluation: bool = False) -> Path:
    """The data root of a notebook: ``params.data_root``, or the embedded set (generated on first use)."""
    from lab5.runs import embedded_root

    if params.data_root is not None:
        from lab5.data.dataset import DatasetError

        root = Path(params.data_root)
        if not root.is_dir():
            raise DatasetError(f"data root {root} does not exist (notebook parameter 'data_root')")
        return root
    return embedded_root(evaluation=evaluation)


def save_figure(fig, name: str, folder: str | Path | None = None) -> Path:
    """Save ``fig`` as ``folder/name`` (default folder: ``figures/`` of the lab5 home); print where."""
    from lab5.runs import home

    folder = Path(folder) if folder is not None else home() / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    # Run names hold dots (lr=0.001): only a known image suffix counts as the file type.
    known = (".png", ".pdf", ".svg", ".jpg", ".jpeg")
    path = folder / (name if Path(name).suffix.lower() in known else f"{name}.png")
    # No metadata: the same figure gives the same bytes, so regenerated files diff cleanly.
    fig.savefig(path, bbox_inches="tight", metadata={"Software": None})
    print(f"saved {show_path(path)}")
    return path


def show_image(path: str | Path):
    """An image file (PNG, GIF) as a cell output, embedded in the notebook: it shows wherever
    the executed notebook is written, where a Markdown link to figures/ would break."""
    from IPython.display import Image

    return Image(filename=str(path))


def _tidy(value: Any, digits: int) -> Any:
    if isinstance(value, float):
        return round(value, digits) + 0.0   # + 0.0 turns -0.0 into 0.0
    return value


def table(columns: dict[str, dict[str, Any]], digits: int = 4):
    """A pandas table from ``{column: {row: value}}`` with floats rounded (stable to print)."""
    import pandas as pd

    frame = pd.DataFrame({col: pd.Series({row: _tidy(v, digits) for row, v in rows.items()}, dtype=object)
                          for col, rows in columns.items()})
    return frame.where(frame.notna(), "")   # a cell some column lacks prints empty, not NaN


def history_table(history: list[dict[str, Any]], digits: int = 4):
    """The per-epoch rows of a run (``history.jsonl``) as a rounded pandas table."""
    import pandas as pd

    rows = [{k: _tidy(v, digits) for k, v in r.items()} for r in history if "epoch" in r]
    return pd.DataFrame(rows).set_index("epoch")


def save_results(results: dict[str, Any], params: NotebookParams) -> Path:
    """Write ``evaluate_model``'s results as ``05_results_<run name>.json`` beside the figures."""
    from lab5.evaluate import save_json

    path = Path(params.figures_dir) / f"05_results_{params.stem}.json"
    save_json(results, path)
    print(f"saved {show_path(path)}")
    return path


def evaluation_run(params: NotebookParams):
    """The run 05 evaluates, and why: ``run_dir`` when given; else, on a user data root, the
    run 04 trained there (same parameters) if any; else the shipped demo for the demo
    preset without model overrides; else the run of 04 (saying so when the shipped demo
    is missing).

    Returns ``(model, cfg, run_dir, device)``.
    """
    from lab5.checkpoint import load_checkpoint
    from lab5.runs import home, load_run, shipped_demo
    from lab5.solver import RunDirError

    def has_run(d: Path) -> bool:
        return (d / "best.pt").is_file() or (d / "last.pt").is_file()

    own = home() / "runs" / params.name
    is_demo = run_name(params.preset, params.overrides) == "demo"
    if params.run_dir is not None:
        src = Path(params.run_dir)
    elif params.data_root is not None and has_run(own):
        src = own
    elif is_demo and has_run(shipped_demo()):
        src = shipped_demo()
    elif has_run(own):
        src = own
        if is_demo:
            print(f"note: the shipped demo checkpoint ({show_path(shipped_demo())}) is not there; "
                  f"evaluating the run of 04_training ({show_path(own)}) instead")
    else:
        where = [show_path(shipped_demo())] if is_demo else []
        raise RunDirError(f"no checkpoint to evaluate (looked in {', '.join(where + [show_path(own)])}); "
                          "run 04_training first, or pass run_dir")
    model, cfg, device = load_run(src, params.cfg.device)
    # An exported run (the shipped demo) holds best.pt only; a training run also last.pt.
    state = load_checkpoint(src / "best.pt" if (src / "best.pt").is_file() else src / "last.pt")
    best = state.get("best")
    best_txt = f", best val PSNR {best:.2f} dB" if isinstance(best, float) and best > -1e9 else ""
    print(f"evaluating {show_path(src)}: {cfg.preset} preset, {cfg.arch}, checkpoint of epoch "
          f"{state.get('epoch')}{best_txt}")
    return model, cfg, src, device


# --------------------------------------------------------------------------------------
# Running notebooks: python -m lab5 workbook / sweep
# --------------------------------------------------------------------------------------

class NotebookFailed(RuntimeError):
    """A notebook stopped with an error; the message names the notebook and the cell."""


def notebooks_dir() -> Path:
    from lab5.runs import home

    path = home() / "notebooks"
    if not (path / "01_derivation.ipynb").is_file():
        raise ConfigError(f"{path}: the workbook's notebooks are not there (set LAB5_HOME to the "
                          "repository checkout)")
    return path


def parse_value(text: str) -> Any:
    """A command-line value as papermill reads ``-p``: int, float, True/False/None, else str."""
    if text in ("True", "False", "None", "true", "false", "none"):
        return {"true": True, "false": False, "none": None}[text.lower()]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def route_parameters(notebook: str, values: dict[str, Any]) -> dict[str, Any]:
    """The values of ``values`` meant for ``notebook``: its declared ones and Config fields,
    leaving out those equal to the notebook's default (so no cell is injected for them)."""
    declared, cfg_fields = NOTEBOOKS[notebook], config_fields()
    out = {}
    for key, value in values.items():
        if key in declared:
            if value != declared[key]:
                out[key] = value
        elif key in cfg_fields:
            out[key] = value
    return out


def check_parameters(values: dict[str, Any], notebooks: Iterable[str]) -> None:
    """Refuse a parameter no notebook knows, or a value a notebook would reject, before running."""
    known = set(config_fields()).union(*(NOTEBOOKS[n] for n in NOTEBOOKS))
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown parameter {', '.join(repr(k) for k in unknown)} (notebook parameters: "
                          f"{', '.join(sorted(PARAM_TYPES))}; or any Config field)")
    for nb in notebooks:
        validate_params(nb, route_parameters(nb, values))


def _clean(nb) -> None:
    """Drop papermill's run metadata (paths, timestamps) so a stored notebook diffs cleanly."""
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)


def execute_notebook(name: str, out: Path, parameters: dict[str, Any], kernel: str = "python3",
                     progress: bool = True) -> float:
    """Execute ``notebooks/<name>.ipynb`` into ``out`` (cwd: the notebooks folder); return seconds.

    Raises ``NotebookFailed`` naming the notebook, the cell and the exception.
    """
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    import logging

    # Config fields are parameters no parameters cell lists; papermill would warn about each.
    logging.getLogger("papermill").setLevel(logging.ERROR)
    src = notebooks_dir() / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        # With progress, what a long notebook prints (04's epoch lines) reaches the terminal as
        # it comes, not only papermill's count of finished cells.
        pm.execute_notebook(str(src), str(out), parameters=parameters, kernel_name=kernel,
                            cwd=str(src.parent), progress_bar=progress,
                            stdout_file=sys.stdout if progress and name in STREAMED else None)
    except PapermillExecutionError as exc:
        first = (exc.source or "").strip().splitlines()
        raise NotebookFailed(
            f"{name}.ipynb failed at cell {exc.cell_index} (In [{exc.exec_count}]"
            f"{': ' + first[0][:60] if first else ''}): {exc.ename}: {exc.evalue}\n"
            f"the partly executed notebook is {out}") from None
    except Exception as exc:  # a kernel that died or did not start
        raise NotebookFailed(f"{name}.ipynb could not be executed: {type(exc).__name__}: {exc}") from None
    nb = nbformat.read(out, as_version=4)
    _clean(nb)
    nbformat.write(nb, out)
    return time.perf_counter() - t0


def select_notebooks(only: list[str] | None) -> list[str]:
    if not only:
        return list(NOTEBOOKS)
    chosen = [n for n in NOTEBOOKS if any(n.startswith(o.removesuffix(".ipynb")) for o in only)]
    if not chosen:
        raise ConfigError(f"--only {' '.join(only)} matches no notebook ({', '.join(NOTEBOOKS)})")
    return chosen


def run_workbook(values: dict[str, Any], out: Path | None = None, inplace: bool = False,
                 only: list[str] | None = None, kernel: str = "python3", progress: bool = True) -> list[tuple[str, float]]:
    """Execute the notebooks in order into ``out`` (or in place); stop at the first failure."""
    from lab5.runs import home

    names = select_notebooks(only)
    check_parameters(values, names)
    if inplace:
        extra = {nb: route_parameters(nb, values) for nb in names}
        if any(extra.values()):
            raise ConfigError("--inplace stores the outputs of the notebooks' default parameters (what "
                              "nbval checks); drop the parameters or write to --out instead")
        staging = home() / "runs" / "workbook-inplace"   # kept: a failed notebook stays readable there
    else:
        preset = values.get("preset", "demo")
        out = Path(out) if out is not None else home() / "runs" / f"workbook-{preset}"
        staging = out
    timings = []
    for i, name in enumerate(names, 1):
        target = staging / f"{name}.ipynb"
        print(f"[{i}/{len(names)}] {name}.ipynb ...", flush=True)
        seconds = execute_notebook(name, target, route_parameters(name, values), kernel, progress)
        if inplace:  # only a notebook that ran to the end replaces the stored one
            shutil.copyfile(target, notebooks_dir() / f"{name}.ipynb")
        print(f"[{i}/{len(names)}] {name}.ipynb done in {seconds:.0f} s", flush=True)
        timings.append((name, seconds))
    where = notebooks_dir() if inplace else staging
    print(f"executed {len(timings)} notebook(s) into {where} in {sum(s for _, s in timings):.0f} s; "
          f"figures in {home() / 'figures'}")
    return timings


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["lr=1e-3,2e-3", "kl_mode=monotonic,cyclical"]`` -> ``{"lr": [0.001, 0.002], ...}``."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or not raw.strip():
            raise ConfigError(f"--grid {item!r} is not of the form key=v1,v2,...")
        grid[key.strip()] = [parse_value(v.strip()) for v in raw.split(",") if v.strip()]
    return grid


def combinations(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def combination_name(combo: dict[str, Any]) -> str:
    """A folder name from a grid point: ``kl_mode=cyclical,lr=0.001``."""
    return ",".join(f"{k}={v}" for k, v in sorted(combo.items())).replace("/", "_") or "default"


def run_sweep(grid: dict[str, list[Any]], values: dict[str, Any], out: Path | None = None,
              kernel: str = "python3", progress: bool = True) -> list[dict[str, Any]]:
    """Run 04 and 05 for every point of ``grid`` into ``out/<k=v,...>/``; write a summary."""
    from lab5.runs import home

    names = ["04_training", "05_evaluation"]
    for key in grid:
        if key in ("run_dir", "figures_dir"):
            raise ConfigError(f"--grid {key}: the sweep sets it for each grid point")
    points = combinations(grid)
    for combo in points:
        check_parameters({**values, **combo}, names)
    out = Path(out) if out is not None else home() / "runs" / "sweep"
    summary = []
    for i, combo in enumerate(points, 1):
        folder = out / combination_name(combo)
        params = {**values, **combo, "run_dir": str(folder / "run"), "figures_dir": str(folder / "figures"),
                  "interactive": False}
        print(f"[{i}/{len(points)}] {combination_name(combo)}", flush=True)
        row: dict[str, Any] = dict(combo)
        for name in names:
            row[f"{name[:2]}_seconds"] = round(execute_notebook(
                name, folder / f"{name}.ipynb", route_parameters(name, params), kernel, progress), 1)
        row.update(_sweep_metrics(folder))
        summary.append(row)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    print(f"wrote {out / 'summary.json'}")
    return summary


def _sweep_metrics(folder: Path) -> dict[str, Any]:
    from lab5.solver import read_history

    metrics: dict[str, Any] = {}
    try:
        rows = [r for r in read_history(folder / "run") if "epoch" in r]
        vals = [r["val_psnr"] for r in rows if r.get("val_psnr") is not None]
        metrics["best_val_psnr"] = round(max(vals), 3) if vals else None
    except Exception:  # a history that is not there is reported as missing, not fatal
        metrics["best_val_psnr"] = None
    results = sorted((folder / "figures").glob("05_results_*.json"))
    if results:
        res = json.loads(results[-1].read_text())
        metrics["test_psnr"] = round(res["psnr"]["mean"], 3)
        metrics["copy_last_psnr"] = round(res["copy_last"]["psnr"], 3)
    return metrics


def format_summary(summary: list[dict[str, Any]]) -> str:
    if not summary:
        return "(empty sweep)"
    keys = list(dict.fromkeys(k for row in summary for k in row))
    widths = {k: max(len(k), *(len(str(row.get(k, ""))) for row in summary)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(str(row.get(k, "")).ljust(widths[k]) for k in keys) for row in summary]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Command line (registered by lab5.cli.build_parser)
# --------------------------------------------------------------------------------------

def _values(args: argparse.Namespace) -> dict[str, Any]:
    values = {k: parse_value(v) for k, v in (args.param or [])}
    if args.preset is not None:
        values["preset"] = args.preset
    return values


def cmd_workbook(args: argparse.Namespace) -> int:
    try:
        run_workbook(_values(args), Path(args.out) if args.out else None, inplace=args.inplace,
                     only=args.only, kernel=args.kernel, progress=not args.no_progress)
    except NotebookFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    try:
        run_sweep(parse_grid(args.grid), _values(args), Path(args.out) if args.out else None,
                  kernel=args.kernel, progress=not args.no_progress)
    except NotebookFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``workbook`` and ``sweep`` subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--preset", help="preset passed to every notebook (default: the notebooks' demo)")
    common.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                        help="a notebook parameter or Config field, as papermill's -p (repeatable)")
    common.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    common.add_argument("--no-progress", action="store_true", help="no papermill progress bars")

    p = sub.add_parser("workbook", parents=[common],
                       help="execute notebooks 01-05 with papermill; stop at the first failing cell")
    p.add_argument("--out", help="output folder for the executed notebooks (default runs/workbook-<preset>)")
    p.add_argument("--inplace", action="store_true",
                   help="store the outputs in notebooks/ itself (default parameters only): the committed run")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks (prefixes: 04 05)")
    p.set_defaults(func=cmd_workbook)

    p = sub.add_parser("sweep", parents=[common],
                       help="run 04_training and 05_evaluation over a parameter grid")
    p.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2",
                   help="a parameter and its values (repeatable; the grid is their product)")
    p.add_argument("--out", help="output folder (default runs/sweep); one subfolder per grid point")
    p.set_defaults(func=cmd_sweep)


__all__ = ["NOTEBOOKS", "NotebookParams", "NotebookFailed", "setup", "config_from_params",
           "validate_params", "data_root", "save_figure", "show_image", "show_path", "evaluation_run",
           "run_workbook", "run_sweep", "parse_grid", "combination_name", "register"]
