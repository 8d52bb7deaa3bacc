"""The notebooks' own API (setup cell, parameters, what a notebook shows) and running them with papermill.

A notebook opens with ``wb.setup(globals())``, its ``parameters`` cell and ``wb.params(globals(), name)``, which
checks the names bound since: one neither declared (``NOTEBOOKS``) nor a ``Config`` field raises ``ConfigError``, so
``papermill ... -p bogus 1`` fails at once instead of silently training with the defaults."""

from __future__ import annotations

import itertools
import json
import logging
import os
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

import lab5
from lab5.config import FIELD_TYPES, RUNTIME_FIELDS, Config, ConfigError, coerce, field_value, make_config
from lab5.data.layout import DatasetError
from lab5.evaluate import evaluate_model, replayable, save_json
from lab5.files import home, show_path
from lab5.hardware import resolve_device, resolve_precision
from lab5.models.cvae import CVAE
from lab5.rundir import RunDirError, has_checkpoint, load_model, read_history, shipped_demo
from lab5.sim import embedded_root
from lab5.train import seed_everything

# Each notebook's declared parameters (its ``parameters`` cell) with their defaults;
# tests/test_workbook.py checks them against the notebooks themselves.
NOTEBOOKS: dict[str, dict[str, Any]] = {
    "01_derivation": {"preset": "demo"},
    "02_data_exploration": {"preset": "demo", "data_root": None},
    "03_model_build": {"preset": "demo", "data_root": None},
    "04_training": {"preset": "demo", "data_root": None, "run_dir": None, "seed": None,
                    "epochs": None, "interactive": True, "figures_dir": None},
    "05_evaluation": {"preset": "demo", "data_root": None, "run_dir": None, "samples": 3,
                      "max_sequences": 0, "interactive": True, "figures_dir": None,
                      "latent_samples": 20, "latent_sequences": 64},
}
# The parameters that are not Config fields, typed as their default (None: a path), and their minimum.
PARAM_TYPES: dict[str, type] = {k: Path if v is None else type(v) for declared in NOTEBOOKS.values()
                                for k, v in declared.items() if k not in FIELD_TYPES}
PARAM_MIN = {"samples": 1, "max_sequences": 0, "latent_samples": 2, "latent_sequences": 2}
# Notebooks that run for minutes: ``python -m lab5 workbook`` streams their printed output.
STREAMED = ("04_training",)

_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}
_PLAIN = (type(None), bool, int, float, str, list, tuple, dict, Path)
# setup()'s record, kept in the notebook's namespace (an underscore name is never a parameter) so that it lives with
# the kernel: "baseline", the namespace at setup (to spot rebinding); "names", the parameters, fixed at the first check.
_WINDOW = "_lab5_parameter_window"


def setup(namespace: dict[str, Any], seed: int = 0, threads: int | None = None) -> torch.device:
    """The first cell of every notebook (pass ``globals()``): seed, threads, plotting (seaborn's whitegrid theme,
    figures inline as PNG, tables on one width); the device."""
    import matplotlib  # heavy: kept off the import path of `python -m lab5 --help`
    import pandas as pd  # heavy, as matplotlib
    import seaborn as sns  # heavy, as matplotlib
    # On a second Run All the parameters cell may rebind a name to the very object it holds (a small int, True,
    # None), which no snapshot can tell from "unchanged": unbound here, whatever is bound next counts.
    for name in (FIELD_TYPES.keys() | PARAM_TYPES.keys()) & namespace.keys():
        del namespace[name]
    namespace[_WINDOW] = {"baseline": dict(namespace)}
    seed_everything(seed)
    if threads:
        torch.set_num_threads(threads)
    sns.set_theme(style="whitegrid", context="notebook")
    matplotlib.rcParams.update({"figure.dpi": 80, "savefig.dpi": 120, "axes.titlesize": 11})
    # Tables print on one width everywhere: stored outputs do not depend on a terminal.
    pd.set_option("display.width", 120, "display.max_colwidth", 60)
    ip = sys.modules["IPython"].get_ipython() if "IPython" in sys.modules else None   # a kernel has imported it
    if ip is not None:
        # lab5.viz builds Figures without pyplot: the inline backend renders a Figure a cell returns as an image;
        # text/plain is what a viewer without images shows (and what nbval compares).
        ip.run_line_magic("matplotlib", "inline")
        ip.run_line_magic("config", "InlineBackend.figure_formats = ['png']")
        ip.display_formatter.formatters["text/plain"].for_type(matplotlib.figure.Figure, lambda fig, p, cycle: p.text(
            f"[figure: {len(fig.axes)} panels, shown as an image]"))
    device = resolve_device("auto")
    print(f"lab5 {lab5.__version__} | torch {torch.__version__} | python {platform.python_version()} | "
          f"device {device} | {torch.get_num_threads()} threads | seed {seed}")
    return device


def params(namespace: dict[str, Any], notebook: str) -> NotebookParams:
    """The checked parameters a notebook runs with (pass ``globals()``): the names bound since ``setup``, fixed
    at the first call so that re-running the cell later does not take the notebook's own variables for parameters."""
    window = namespace.get(_WINDOW)
    if window is None:
        raise ConfigError("run the setup cell (wb.setup(globals())) before the parameters")
    names, base = window.get("names"), window["baseline"]
    if names is None:
        names = {k for k, v in namespace.items() if not k.startswith("_") and k not in _IPYTHON_NAMES
                 and isinstance(v, _PLAIN) and (k not in base or base[k] is not v)}
    checked = validate_params(notebook, {k: namespace[k] for k in names if k in namespace})
    window["names"] = names
    return checked


@dataclass
class NotebookParams:
    """The checked parameters of one notebook run."""

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
    latent_samples: int = 20     # 05's latent section: samples per sequence ...
    latent_sequences: int = 64   # ... on the first test sequences

    @property
    def name(self) -> str:
        """The run's name (``run_name``): it never collides with runs on other data."""
        return run_name(self.preset, self.overrides, self.data_root)

    @property
    def stem(self) -> str:
        """``name`` as a file-name part: ``demo_lr-0.001`` for ``demo,lr=0.001``."""
        return self.name.replace(",", "_").replace("=", "-").replace("/", "_")

    def __str__(self) -> str:
        """Where the notebook reads and writes, the overrides, and the settings (05 prints its checkpoint's)."""
        data = "embedded (simulated)" if self.data_root is None else show_path(self.data_root)
        lines = [f"notebook {self.notebook}: preset '{self.preset}', data {data}"]
        if self.run_dir is not None:
            lines.append(f"run_dir {show_path(self.run_dir)}, figures {show_path(self.figures_dir)}")
        given = ", ".join(f"{k}={v!r}" for k, v in sorted(self.overrides.items())) or "none"
        described = [] if self.notebook == "05_evaluation" else describe_config(self.cfg)
        return "\n".join([*lines, f"config overrides: {given}", *described])


def describe_config(cfg: Config) -> list[str]:
    """The model and the training settings of ``cfg``, one line each."""
    prior = {"fixed": "fixed N(0,I) prior", "learned": "learned prior", "none": "deterministic"}[cfg.prior]
    precision = resolve_precision(cfg.bf16, cfg.channels_last, resolve_device(cfg.device)).describe()
    condition = f"{cfg.condition}{' (standardised)' if cfg.cond_norm and cfg.condition != 'none' else ''}"
    return [f"model: {cfg.arch} (nf {cfg.nf}), g_dim {cfg.g_dim}, z_dim {cfg.z_dim}, rnn {cfg.rnn_size}, {prior}, "
            f"condition {condition}; frames {cfg.n_past} + {cfg.n_future}",
            f"training: {cfg.epochs} epochs x {cfg.iters_per_epoch or 'one pass'} iterations, batch {cfg.batch_size}, "
            f"lr {cfg.lr:g}, KL {cfg.kl_mode} (beta max {cfg.kl_beta_max:g}), teacher forcing {cfg.tf_ratio:g} -> "
            f"{cfg.tf_min:g}, step {cfg.step}, {precision}"]


def run_name(preset: str, overrides: dict[str, Any], data_root: str | Path | None = None) -> str:
    """``demo``; ``demo,lr=0.001,z_dim=16`` when settings that change the run are overridden;
    ``demo,data=bair`` for a run on the data root ``.../bair`` instead of the embedded set."""
    parts = [f"{k}={v}" for k, v in sorted(overrides.items()) if k not in RUNTIME_FIELDS and v is not None]
    if data_root is not None:
        parts.append(f"data={Path(data_root).name or 'root'}")
    return ",".join([preset, *parts])


def check_param(name: str, value: Any) -> Any:
    """A notebook parameter as its type: a Config field's (``field_value``), else ``PARAM_TYPES``'."""
    if name in FIELD_TYPES:
        return field_value(name, value)
    kind = PARAM_TYPES[name]
    try:
        if kind is not Path:
            value = coerce(name, value, kind)
        elif isinstance(value, str) and value.strip():
            return Path(value).expanduser()
        elif value is not None and not isinstance(value, Path):
            raise ConfigError(name)
    except ConfigError:
        raise ConfigError(f"notebook parameter '{name}' expects {'a path or None' if kind is Path else kind.__name__}"
                          f", got {value!r} ({type(value).__name__})") from None
    if name in PARAM_MIN and value < PARAM_MIN[name]:
        raise ConfigError(f"notebook parameter '{name}' must be >= {PARAM_MIN[name]}, got {value!r}")
    return value


def param_value(name: str, text: str) -> Any:
    """A command-line value (``-p NAME TEXT``, ``--grid NAME=TEXT,...``) as the parameter's type;
    ``None`` is None, as papermill reads it. An unknown name is left to ``validate_params``."""
    if text.strip() in ("None", "none"):
        return None
    if name in FIELD_TYPES or PARAM_TYPES.get(name, Path) is not Path:
        return check_param(name, text)
    return text   # a path stays a string: papermill injects it into the notebook as one


def validate_params(notebook: str, values: dict[str, Any]) -> NotebookParams:
    """One notebook's NotebookParams from its values (declared or injected); ``ConfigError`` names a bad one."""
    if notebook not in NOTEBOOKS:
        raise ConfigError(f"unknown notebook '{notebook}' (known: {', '.join(NOTEBOOKS)})")
    declared = NOTEBOOKS[notebook]
    unknown = sorted(k for k in values if k not in declared and k not in FIELD_TYPES)
    if unknown:
        raise ConfigError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)} "
            f"for {notebook} (its parameters: {', '.join(declared)}; or any Config field: "
            f"{', '.join(sorted(FIELD_TYPES.keys() - {'preset'}))})")
    merged = {**declared, **values}
    own = {k: check_param(k, v) for k, v in merged.items() if k in PARAM_TYPES}
    preset = check_param("preset", merged["preset"])
    overrides = {k: v for k, v in merged.items() if k in FIELD_TYPES and k != "preset" and v is not None}
    cfg = make_config(preset, overrides=overrides)
    overrides = {k: getattr(cfg, k) for k in overrides}   # as typed values: "0.001" names a run as 0.001 does
    if own.get("run_dir") is None and notebook == "04_training":
        own["run_dir"] = home() / "runs" / run_name(preset, overrides, own.get("data_root"))
    # $LAB5_FIGURES: where the autograder (lab5.assignment) sends a submission's figures, away from the home's
    own["figures_dir"] = Path(own.get("figures_dir") or os.environ.get("LAB5_FIGURES") or home() / "figures")
    return NotebookParams(notebook=notebook, cfg=cfg, preset=preset, overrides=overrides, **own)


def data_root(params: NotebookParams, evaluation: bool = False) -> Path:
    """The data root of a notebook: ``params.data_root``, or the embedded set (generated on first use)."""
    if params.data_root is None:
        return embedded_root(evaluation=evaluation)
    if not Path(params.data_root).is_dir():
        raise DatasetError(f"data root {params.data_root} does not exist (notebook parameter 'data_root')")
    return Path(params.data_root)


def evaluation_run(params: NotebookParams) -> tuple[CVAE, Config, Path, torch.device]:
    """The run 05 evaluates: ``run_dir``; else, on a user data root, the run 04 trained there if any; else the shipped
    demo for the demo preset without model overrides; else the run of 04 (saying so when the demo is missing)."""
    own, demo = home() / "runs" / params.name, shipped_demo()
    is_demo = run_name(params.preset, params.overrides) == "demo"
    looked = [demo] * is_demo + [own]
    found = [own] * (params.data_root is not None) + looked
    src = Path(params.run_dir) if params.run_dir is not None else next((p for p in found if has_checkpoint(p)), None)
    if src is None:
        raise RunDirError(f"no checkpoint to evaluate (looked in {', '.join(map(show_path, looked))}); "
                          "run 04_training first, or pass run_dir")
    if params.run_dir is None and params.data_root is None and is_demo and src == own:
        print(f"note: the shipped demo checkpoint ({show_path(demo)}) is not there; "
              f"evaluating the run of 04_training ({show_path(own)}) instead")
    device = resolve_device(params.cfg.device)
    model, cfg, state = load_model(src, device)
    best = state.get("best")
    best_txt = f", best val PSNR {best:.2f} dB" if isinstance(best, float) and best > -1e9 else ""
    print(f"evaluating {show_path(src)}: {cfg.preset} preset, checkpoint of epoch {state.get('epoch')}{best_txt}",
          *describe_config(cfg), sep="\n")
    return model, cfg, src, device


def latent_results(params: NotebookParams, models: dict[str, CVAE], data: Any, root: Path,
                   device: torch.device) -> dict[str, dict[str, Any]]:
    """05's latent section: each model under the lab protocol on the first test sequences, plus counterfactual
    actions for the models that read actions (on the embedded data, which the simulator can replay)."""
    return {label: evaluate_model(model, data, "lab", samples=params.latent_samples, device=device,
                                  max_sequences=params.latent_sequences, progress=False,
                                  counterfactual_root=root if replayable(model, root) else None)
            for label, model in models.items()}


# --- what a notebook shows ------------------------------------------------------------------------

def save_figure(fig: Any, name: str, params: NotebookParams) -> Path:
    """Save ``fig`` as ``<figures_dir>/<name>_<run stem>.png`` and print where: the stem names the run, so a
    parameterised run never overwrites the figures of another (or the committed ones)."""
    path = Path(params.figures_dir) / f"{name}_{params.stem}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    # No metadata: the same figure gives the same bytes, so regenerated files diff cleanly.
    fig.savefig(path, bbox_inches="tight", metadata={"Software": None})
    print(f"saved {show_path(path)}")
    return path


def save_results(results: dict[str, Any], params: NotebookParams) -> Path:
    """Write ``evaluate_model``'s results as ``05_results_<run name>.json`` beside the figures."""
    path = Path(params.figures_dir) / f"05_results_{params.stem}.json"
    save_json(results, path)
    print(f"saved {show_path(path)}")
    return path


def show_image(path: str | Path) -> Any:
    """An image file (PNG, GIF) as a cell output: unlike a link to figures/, it shows wherever the notebook is."""
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
    rows = [{k: tidy(v, digits) for k, v in r.items()} for r in history if "epoch" in r]
    return pd.DataFrame(rows).set_index("epoch")


# --- running the notebooks with papermill ---------------------------------------------------------

class NotebookFailed(RuntimeError):
    """A notebook stopped with an error; the message names the notebook and the cell."""


def notebooks_dir() -> Path:
    """``notebooks/`` of the lab5 home, checked to hold the workbook."""
    path = home() / "notebooks"
    if not (path / "01_derivation.ipynb").is_file():
        raise ConfigError(f"{path}: the workbook's notebooks are not there (set LAB5_HOME to the "
                          "repository checkout)")
    return path


def route_parameters(notebook: str, values: dict[str, Any]) -> dict[str, Any]:
    """The values meant for ``notebook``: Config fields, and its declared ones unless at their default."""
    declared = NOTEBOOKS[notebook]
    return {k: v for k, v in values.items()
            if (k in declared and v != declared[k]) or (k not in declared and k in FIELD_TYPES)}


def check_parameters(values: dict[str, Any], notebooks: Iterable[str]) -> None:
    """Refuse a parameter no notebook knows, or a value a notebook would reject, before running."""
    unknown = sorted(values.keys() - FIELD_TYPES.keys() - PARAM_TYPES.keys())
    if unknown:
        raise ConfigError(f"unknown parameter {', '.join(repr(k) for k in unknown)} (notebook parameters: "
                          f"{', '.join(sorted({'preset', *PARAM_TYPES}))}; or any Config field)")
    for nb in notebooks:
        validate_params(nb, route_parameters(nb, values))


def execute_notebook(name: str, out: Path, values: dict[str, Any], kernel: str = "python3",
                     progress: bool = True) -> float:
    """Execute ``notebooks/<name>.ipynb`` with the ``values`` meant for it into ``out`` (cwd: the notebooks
    folder); return seconds. Raises ``NotebookFailed`` naming the notebook, the cell and the exception."""
    import nbformat  # heavy: kept off the import path of `python -m lab5 --help`
    import papermill as pm  # heavy, as nbformat
    # Config fields are parameters no parameters cell lists; papermill would warn about each.
    logging.getLogger("papermill").setLevel(logging.ERROR)
    src = notebooks_dir() / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(src), str(out), parameters=route_parameters(name, values), kernel_name=kernel,
                            cwd=str(src.parent), progress_bar=progress,
                            stdout_file=sys.stdout if progress and name in STREAMED else None)
    except pm.PapermillExecutionError as exc:
        first = (exc.source or "").strip().splitlines()
        raise NotebookFailed(f"{name}.ipynb failed at cell {exc.cell_index} (In [{exc.exec_count}]"
                             f"{': ' + first[0][:60] if first else ''}): {exc.ename}: {exc.evalue}\n"
                             f"the partly executed notebook is {out}") from None
    except Exception as exc:  # a kernel that died or did not start
        raise NotebookFailed(f"{name}.ipynb could not be executed: {type(exc).__name__}: {exc}") from None
    # papermill's run metadata (paths, timestamps) dropped, so a stored notebook diffs cleanly
    nb = nbformat.read(out, as_version=4)
    for meta in [nb.metadata] + [cell.metadata for cell in nb.cells]:
        meta.pop("papermill", None)
        meta.pop("execution", None)
    for cell in (c for c in nb.cells if c.cell_type == "code"):   # a markdown cell has no outputs field
        cell["outputs"] = tidy_streams(cell.get("outputs", []))
    prune_widget_state(nb)
    nbformat.write(nb, out)
    return time.perf_counter() - t0


def tidy_streams(outputs: list[Any]) -> list[Any]:
    """A cell's outputs as a terminal shows them: consecutive stream fragments merged and each line cut to what
    follows its last carriage return, so a stored training log keeps one line per epoch, not every bar refresh."""
    tidy: list[Any] = []
    for output in outputs:
        if output.get("output_type") == "stream" and tidy and tidy[-1].get("name") == output.get("name") \
                and tidy[-1].get("output_type") == "stream":
            tidy[-1]["text"] += output["text"]
        else:
            tidy.append(output)
    for output in (o for o in tidy if o.get("output_type") == "stream"):
        lines = [(line.rstrip("\r").rsplit("\r", 1)[-1].rstrip() if "\r" in line else line, "\r" in line)
                 for line in output["text"].split("\n")]
        # a line a carriage return erased (a finished bar) goes; an empty line printed on purpose stays
        output["text"] = "".join(line + "\n" for line, bar in lines[:-1] if line or not bar) + lines[-1][0]
    return [o for o in tidy if o.get("output_type") != "stream" or o["text"].strip()]


WIDGET_VIEW, WIDGET_STATE = "application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json"


def prune_widget_state(nb: Any) -> None:
    """Keep the stored state of the widgets an output shows and of the models they refer to, controls disabled (a
    trusted notebook renders them as a still view); drop the rest (progress bars), or the key if none is shown."""
    states = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    todo = [o["data"][WIDGET_VIEW]["model_id"] for cell in nb.cells for o in cell.get("outputs", [])
            if WIDGET_VIEW in o.get("data", {})]
    kept: dict[str, Any] = {}
    while todo:
        if (model := todo.pop()) in states and model not in kept:
            kept[model] = states[model]
            todo += re.findall(r'(?:IPY_MODEL_|"model_id": ")(\w+)', json.dumps(states[model]["state"]))
    for state in (k["state"] for k in kept.values() if "disabled" in k["state"]):
        state["disabled"] = True
    if kept:
        nb.metadata.widgets[WIDGET_STATE]["state"] = kept
    else:
        nb.metadata.pop("widgets", None)


def run_workbook(values: dict[str, Any], out: Path | None = None, inplace: bool = False, only: list[str] | None = None,
                 kernel: str = "python3", progress: bool = True) -> list[tuple[str, float]]:
    """Execute the notebooks (all, or ``only`` these prefixes) in order into ``out`` or in place; stop at a failure."""
    names = [n for n in NOTEBOOKS if not only or any(n.startswith(o.removesuffix(".ipynb")) for o in only)]
    if not names:
        raise ConfigError(f"--only {' '.join(only or [])} matches no notebook ({', '.join(NOTEBOOKS)})")
    check_parameters(values, names)
    if inplace and any(route_parameters(nb, values) for nb in names):
        raise ConfigError("--inplace stores the outputs of the notebooks' default parameters (what "
                          "nbval checks); drop the parameters or write to --out instead")
    # in place: the notebooks run in runs/workbook-inplace first, where a failed one stays readable
    staging = home() / "runs" / ("workbook-inplace" if inplace else f"workbook-{values.get('preset', 'demo')}")
    staging = Path(out) if out is not None and not inplace else staging
    timings = []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name}.ipynb ...", flush=True)
        timings.append((name, execute_notebook(name, staging / f"{name}.ipynb", values, kernel, progress)))
        if inplace:  # only a notebook that ran to the end replaces the stored one
            shutil.copyfile(staging / f"{name}.ipynb", notebooks_dir() / f"{name}.ipynb")
        print(f"[{i}/{len(names)}] {name}.ipynb done in {timings[-1][1]:.0f} s", flush=True)
    print(f"executed {len(timings)} notebook(s) into {notebooks_dir() if inplace else staging} in "
          f"{sum(s for _, s in timings):.0f} s; figures in {home() / 'figures'}")
    return timings


def combinations(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every point of ``{key: [values]}``, keys sorted."""
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def combination_name(combo: dict[str, Any]) -> str:
    """A folder name from a grid point: ``kl_mode=cyclical,lr=0.001``."""
    return ",".join(f"{k}={v}" for k, v in sorted(combo.items())).replace("/", "_") or "default"


def run_sweep(grid: dict[str, list[Any]], values: dict[str, Any], out: Path | None = None,
              kernel: str = "python3", progress: bool = True) -> list[dict[str, Any]]:
    """Run 04 and 05 for every point of ``grid`` into ``out/<k=v,...>/``; write a summary."""
    names = ["04_training", "05_evaluation"]
    for key in (k for k in grid if k in ("run_dir", "figures_dir")):
        raise ConfigError(f"--grid {key}: the sweep sets it for each grid point")
    points = combinations(grid)
    for combo in points:
        check_parameters({**values, **combo}, names)
    out = Path(out) if out is not None else home() / "runs" / "sweep"
    summary = []
    for i, combo in enumerate(points, 1):
        folder = out / combination_name(combo)
        point = {**values, **combo, "run_dir": str(folder / "run"), "figures_dir": str(folder / "figures"),
                 "interactive": False}
        print(f"[{i}/{len(points)}] {combination_name(combo)}", flush=True)
        seconds = {f"{name[:2]}_seconds": round(execute_notebook(
            name, folder / f"{name}.ipynb", point, kernel, progress), 1) for name in names}
        summary.append({**combo, **seconds, **sweep_metrics(folder)})
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    keys = list(dict.fromkeys(k for row in summary for k in row))   # the summary as a plain text table
    cells = [keys] + [[str(row.get(k, "")) for k in keys] for row in summary]
    widths = [max(map(len, column)) for column in zip(*cells)]
    print("\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in cells) or "(empty sweep)")
    print(f"wrote {out / 'summary.json'}")
    return summary


def sweep_metrics(folder: Path) -> dict[str, Any]:
    """Best validation PSNR of a grid point's run, and its test and copy-last PSNR from 05's results."""
    vals = [r["val_psnr"] for r in read_history(folder / "run") if r.get("val_psnr") is not None]
    metrics: dict[str, Any] = {"best_val_psnr": round(max(vals), 3) if vals else None}
    if results := sorted((folder / "figures").glob("05_results_*.json")):
        res = json.loads(results[-1].read_text())
        metrics.update(test_psnr=round(res["psnr"]["mean"], 3), copy_last_psnr=round(res["copy_last"]["psnr"], 3))
    return metrics
