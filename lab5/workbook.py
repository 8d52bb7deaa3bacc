"""The notebooks' own API: the setup cell, the parameters, and the data and run a notebook uses.

Every notebook opens with the same setup cell and a papermill ``parameters`` cell, then checks
its parameters::

    from lab5 import viz, workbook as wb      # setup cell
    device = wb.setup(globals(), seed=0)

    preset = "demo"                           # parameters cell (papermill injects after it)
    ...

    P = wb.params(globals(), "04_training")

``setup`` unbinds every name that can be a parameter (left from an earlier run in the same
kernel) and remembers the names the namespace holds. ``params`` checks the names bound since:
the parameters cell's and whatever papermill injected. A name that is neither one of the
notebook's declared parameters (``NOTEBOOKS``) nor a ``Config`` field raises ``ConfigError``
naming it, so ``papermill 04_training.ipynb out.ipynb -p bogus 1`` fails at once instead of
silently training with the defaults. Config fields are accepted by every notebook (``-p lr 0.001``).
"""

from __future__ import annotations

import platform
import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lab5
from lab5.config import RUNTIME_FIELDS, Config, ConfigError, coerce, field_value, make_config
from lab5.data.layout import DatasetError
from lab5.display import history_table, plot_style, save_figure, show_image, show_path, table
from lab5.counterfactual import evaluate_with_counterfactual
from lab5.evaluate import save_json
from lab5.hardware import resolve_device, resolve_precision
from lab5.models.cvae import CVAE
from lab5.rundir import RunDirError, has_checkpoint, load_model, shipped_demo
from lab5.files import home
from lab5.sim import embedded_root

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
# Types of the parameters that are not Config fields ("path": a str, a Path or None), and their minimum.
PARAM_TYPES: dict[str, Any] = {"preset": str, "data_root": "path", "run_dir": "path", "figures_dir": "path",
                               "interactive": bool, "samples": int, "max_sequences": int,
                               "latent_samples": int, "latent_sequences": int}
PARAM_MIN = {"samples": 1, "max_sequences": 0, "latent_samples": 1, "latent_sequences": 2}
CONFIG_FIELDS = frozenset(f.name for f in fields(Config))

_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}
_PLAIN = (type(None), bool, int, float, str, list, tuple, dict, Path)
# setup() keeps what it saw in the notebook's own namespace (an underscore name is never taken
# for a parameter): it lives and dies with the kernel session.
_WINDOW = "_lab5_parameter_window"


@dataclass
class _Window:
    baseline: dict[str, Any]          # the namespace when setup() ran (values kept to spot rebinding)
    names: set[str] | None = None     # the parameter names, fixed at the first check


def setup(namespace: dict[str, Any], seed: int = 0, threads: int | None = None) -> torch.device:
    """The first cell of every notebook (pass ``globals()``): seed, threads, plotting; the device."""
    # A second Run All in the same kernel: the previous run's values are still bound, and the
    # parameters cell may bind a name to the very object it already holds (a small int, True,
    # None), which no snapshot can tell from "unchanged". Unbinding every name that can be a
    # parameter makes whatever the parameters cell (and papermill) bind next count, every run.
    for name in (CONFIG_FIELDS | set().union(*NOTEBOOKS.values())) & namespace.keys():
        del namespace[name]
    namespace[_WINDOW] = _Window(baseline=dict(namespace))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    plot_style()
    print(f"lab5 {lab5.__version__} | torch {torch.__version__} | python {platform.python_version()} | "
          f"device {device} | {torch.get_num_threads()} threads | seed {seed}")
    return device


def params(namespace: dict[str, Any], notebook: str) -> "NotebookParams":
    """The parameters a notebook runs with (pass ``globals()``), checked: the names bound since
    ``setup``, fixed at the first call so that re-running the cell later in an interactive session
    does not mistake the notebook's own variables for parameters."""
    window = namespace.get(_WINDOW)
    if window is None:
        raise ConfigError("run the setup cell (wb.setup(globals())) before the parameters")
    names = window.names
    if names is None:
        names = {k for k, v in namespace.items() if not k.startswith("_") and k not in _IPYTHON_NAMES
                 and isinstance(v, _PLAIN) and (k not in window.baseline or window.baseline[k] is not v)}
    checked = validate_params(notebook, {k: namespace[k] for k in names if k in namespace})
    window.names = names
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
        """The run's name: the preset, overrides that change what is computed, and the data root's
        folder name when it is not the embedded set (so runs on other data never collide)."""
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
        return "\n".join([*lines, f"config overrides: {given}", describe_config(self.cfg)])


def run_name(preset: str, overrides: dict[str, Any], data_root: str | Path | None = None) -> str:
    """``demo``; ``demo,lr=0.001,z_dim=16`` when settings that change the run are overridden;
    ``demo,data=bair`` for a run on the data root ``.../bair`` instead of the embedded set."""
    parts = [f"{k}={overrides[k]}" for k in sorted(overrides)
             if k not in RUNTIME_FIELDS and k != "preset" and overrides[k] is not None]
    if data_root is not None:
        parts.append(f"data={Path(data_root).name or 'root'}")
    return ",".join([preset, *parts])


def describe_config(cfg: Config) -> str:
    """A two-line summary of the settings a reader cares about."""
    prior = {"fixed": "fixed N(0,I) prior", "learned": "learned prior", "none": "deterministic"}[cfg.prior]
    precision = resolve_precision(cfg.bf16, cfg.channels_last, resolve_device(cfg.device)).describe()
    return (f"model: {cfg.arch} (nf {cfg.nf}), g_dim {cfg.g_dim}, z_dim {cfg.z_dim}, rnn {cfg.rnn_size}, "
            f"{prior}; frames {cfg.n_past} + {cfg.n_future}\n"
            f"training: {cfg.epochs} epochs x {cfg.iters_per_epoch or 'one pass'} iterations, batch "
            f"{cfg.batch_size}, lr {cfg.lr:g}, KL {cfg.kl_mode} (beta max {cfg.kl_beta_max:g}), teacher "
            f"forcing {cfg.tf_ratio:g} -> {cfg.tf_min:g}, step {cfg.step}, {precision}")


def check_param(name: str, value: Any) -> Any:
    """A notebook parameter that is not a Config field, as its type (``PARAM_TYPES``)."""
    kind = PARAM_TYPES[name]
    if kind == "path":
        if value is None or isinstance(value, Path):
            return value
        if isinstance(value, str) and value.strip():
            return Path(value).expanduser()
        raise ConfigError(f"notebook parameter '{name}' expects a path or None, got {value!r} "
                          f"({type(value).__name__})")
    try:
        value = coerce(name, value, kind)
    except ConfigError:
        raise ConfigError(f"notebook parameter '{name}' expects {kind.__name__}, got {value!r} "
                          f"({type(value).__name__})") from None
    if name in PARAM_MIN and value < PARAM_MIN[name]:
        raise ConfigError(f"notebook parameter '{name}' must be >= {PARAM_MIN[name]}, got {value!r}")
    return value


def param_value(name: str, text: str) -> Any:
    """A command-line value (``-p NAME TEXT``, ``--grid NAME=TEXT,...``) as the parameter's type;
    ``None`` is None, as papermill reads it. An unknown name is left to ``validate_params``."""
    if text.strip() in ("None", "none"):
        return None
    if name in PARAM_TYPES:  # a path stays a string: papermill injects it into the notebook as one
        return text if PARAM_TYPES[name] == "path" else check_param(name, text)
    return field_value(name, text) if name in CONFIG_FIELDS else text


def validate_params(notebook: str, values: dict[str, Any]) -> NotebookParams:
    """Check one notebook's parameter values (declared or injected) and build its NotebookParams;
    unknown names and ill-typed values raise ``ConfigError`` naming them."""
    if notebook not in NOTEBOOKS:
        raise ConfigError(f"unknown notebook '{notebook}' (known: {', '.join(NOTEBOOKS)})")
    declared = NOTEBOOKS[notebook]
    unknown = sorted(k for k in values if k not in declared and k not in CONFIG_FIELDS)
    if unknown:
        raise ConfigError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)} "
            f"for {notebook} (its parameters: {', '.join(declared)}; or any Config field: "
            f"{', '.join(sorted(CONFIG_FIELDS - {'preset'}))})")
    merged = {**declared, **values}
    own = {k: check_param(k, v) for k, v in merged.items() if k in PARAM_TYPES}
    overrides = {k: v for k, v in merged.items() if k in CONFIG_FIELDS and k != "preset" and v is not None}
    cfg = make_config(own["preset"], overrides=overrides)
    overrides = {k: getattr(cfg, k) for k in overrides}   # as typed values: "0.001" names a run as 0.001 does
    run_dir = own.get("run_dir")
    if run_dir is None and notebook == "04_training":
        run_dir = home() / "runs" / run_name(own["preset"], overrides, own.get("data_root"))
    extra = {k: own[k] for k in ("interactive", "samples", "max_sequences", "latent_samples", "latent_sequences")
             if k in own}
    return NotebookParams(notebook=notebook, cfg=cfg, preset=own["preset"], overrides=overrides,
                          data_root=own.get("data_root"), run_dir=run_dir,
                          figures_dir=Path(own.get("figures_dir") or home() / "figures"), **extra)


def data_root(params: NotebookParams, evaluation: bool = False) -> Path:
    """The data root of a notebook: ``params.data_root``, or the embedded set (generated on first use)."""
    if params.data_root is None:
        return embedded_root(evaluation=evaluation)
    root = Path(params.data_root)
    if not root.is_dir():
        raise DatasetError(f"data root {root} does not exist (notebook parameter 'data_root')")
    return root


def save_results(results: dict[str, Any], params: NotebookParams) -> Path:
    """Write ``evaluate_model``'s results as ``05_results_<run name>.json`` beside the figures."""
    path = Path(params.figures_dir) / f"05_results_{params.stem}.json"
    save_json(results, path)
    print(f"saved {show_path(path)}")
    return path


def evaluation_run(params: NotebookParams) -> tuple[CVAE, Config, Path, torch.device]:
    """The run 05 evaluates, and why: ``run_dir`` when given; else, on a user data root, the run 04
    trained there (same parameters) if any; else the shipped demo for the demo preset without model
    overrides; else the run of 04 (saying so when the shipped demo is missing)."""
    own = home() / "runs" / params.name
    is_demo = run_name(params.preset, params.overrides) == "demo"
    if params.run_dir is not None:
        src = Path(params.run_dir)
    elif params.data_root is not None and has_checkpoint(own):
        src = own
    elif is_demo and has_checkpoint(shipped_demo()):
        src = shipped_demo()
    elif has_checkpoint(own):
        src = own
        if is_demo:
            print(f"note: the shipped demo checkpoint ({show_path(shipped_demo())}) is not there; "
                  f"evaluating the run of 04_training ({show_path(own)}) instead")
    else:
        where = [show_path(shipped_demo())] if is_demo else []
        raise RunDirError(f"no checkpoint to evaluate (looked in {', '.join(where + [show_path(own)])}); "
                          "run 04_training first, or pass run_dir")
    device = resolve_device(params.cfg.device)
    model, cfg, state = load_model(src, device)
    best = state.get("best")
    best_txt = f", best val PSNR {best:.2f} dB" if isinstance(best, float) and best > -1e9 else ""
    print(f"evaluating {show_path(src)}: {cfg.preset} preset, {cfg.arch}, checkpoint of epoch "
          f"{state.get('epoch')}{best_txt}")
    return model, cfg, src, device


def latent_results(params: NotebookParams, models: dict[str, CVAE], data: Any, root: Path,
                   device: torch.device) -> dict[str, dict[str, Any]]:
    """05's latent section: each model under the lab protocol with ``latent_samples`` samples on the
    first ``latent_sequences`` test sequences, plus counterfactual actions for the models that read
    actions (on the embedded data, which the simulator can replay)."""
    return {label: evaluate_with_counterfactual(model, data, root, params.latent_samples, params.latent_sequences,
                                                device) for label, model in models.items()}


__all__ = ["NOTEBOOKS", "NotebookParams", "setup", "params", "validate_params", "data_root", "evaluation_run",
           "save_results", "latent_results", "save_figure", "show_image", "show_path", "table", "history_table", "run_name"]
