"""Running the notebooks with papermill: ``python -m lab5 workbook`` (01-05 in order) and
``python -m lab5 sweep`` (04 and 05 over a parameter grid)."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from lab5.config import ConfigError
from lab5.rundir import read_history
from lab5.files import home
from lab5.workbook import CONFIG_FIELDS, NOTEBOOKS, PARAM_TYPES, param_value, validate_params

# Notebooks that run for minutes: ``python -m lab5 workbook`` streams their printed output.
STREAMED = ("04_training",)


class NotebookFailed(RuntimeError):
    """A notebook stopped with an error; the message names the notebook and the cell."""


def notebooks_dir() -> Path:
    path = home() / "notebooks"
    if not (path / "01_derivation.ipynb").is_file():
        raise ConfigError(f"{path}: the workbook's notebooks are not there (set LAB5_HOME to the "
                          "repository checkout)")
    return path


def route_parameters(notebook: str, values: dict[str, Any]) -> dict[str, Any]:
    """The values meant for ``notebook``: its declared ones (unless equal to the default, so no cell is
    injected for them) and Config fields."""
    declared = NOTEBOOKS[notebook]
    return {k: v for k, v in values.items()
            if (k in declared and v != declared[k]) or (k not in declared and k in CONFIG_FIELDS)}


def check_parameters(values: dict[str, Any], notebooks: Iterable[str]) -> None:
    """Refuse a parameter no notebook knows, or a value a notebook would reject, before running."""
    unknown = sorted(set(values) - CONFIG_FIELDS.union(*NOTEBOOKS.values()))
    if unknown:
        raise ConfigError(f"unknown parameter {', '.join(repr(k) for k in unknown)} (notebook parameters: "
                          f"{', '.join(sorted(PARAM_TYPES))}; or any Config field)")
    for nb in notebooks:
        validate_params(nb, route_parameters(nb, values))


def execute_notebook(name: str, out: Path, parameters: dict[str, Any], kernel: str = "python3",
                     progress: bool = True) -> float:
    """Execute ``notebooks/<name>.ipynb`` into ``out`` (cwd: the notebooks folder); return seconds.
    Raises ``NotebookFailed`` naming the notebook, the cell and the exception."""
    import nbformat  # heavy: kept off the import path of `python -m lab5 --help`
    import papermill as pm  # heavy, as nbformat
    from papermill.exceptions import PapermillExecutionError  # with papermill

    # Config fields are parameters no parameters cell lists; papermill would warn about each.
    logging.getLogger("papermill").setLevel(logging.ERROR)
    src = notebooks_dir() / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(src), str(out), parameters=parameters, kernel_name=kernel, cwd=str(src.parent),
                            progress_bar=progress, stdout_file=sys.stdout if progress and name in STREAMED else None)
    except PapermillExecutionError as exc:
        first = (exc.source or "").strip().splitlines()
        raise NotebookFailed(f"{name}.ipynb failed at cell {exc.cell_index} (In [{exc.exec_count}]"
                             f"{': ' + first[0][:60] if first else ''}): {exc.ename}: {exc.evalue}\n"
                             f"the partly executed notebook is {out}") from None
    except Exception as exc:  # a kernel that died or did not start
        raise NotebookFailed(f"{name}.ipynb could not be executed: {type(exc).__name__}: {exc}") from None
    # papermill's run metadata (paths, timestamps) dropped, so a stored notebook diffs cleanly
    nb = nbformat.read(out, as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nbformat.write(nb, out)
    return time.perf_counter() - t0


def select_notebooks(only: list[str] | None) -> list[str]:
    if not only:
        return list(NOTEBOOKS)
    chosen = [n for n in NOTEBOOKS if any(n.startswith(o.removesuffix(".ipynb")) for o in only)]
    if not chosen:
        raise ConfigError(f"--only {' '.join(only)} matches no notebook ({', '.join(NOTEBOOKS)})")
    return chosen


def run_workbook(values: dict[str, Any], out: Path | None = None, inplace: bool = False, only: list[str] | None = None,
                 kernel: str = "python3", progress: bool = True) -> list[tuple[str, float]]:
    """Execute the notebooks in order into ``out`` (or in place); stop at the first failure."""
    names = select_notebooks(only)
    check_parameters(values, names)
    if inplace:
        if any(route_parameters(nb, values) for nb in names):
            raise ConfigError("--inplace stores the outputs of the notebooks' default parameters (what "
                              "nbval checks); drop the parameters or write to --out instead")
        staging = home() / "runs" / "workbook-inplace"   # kept: a failed notebook stays readable there
    else:
        staging = Path(out) if out is not None else home() / "runs" / f"workbook-{values.get('preset', 'demo')}"
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
        grid[key.strip()] = [param_value(key.strip(), v) for v in raw.split(",") if v.strip()]
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
        summary.append({**row, **sweep_metrics(folder)})
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    print(f"wrote {out / 'summary.json'}")
    return summary


def sweep_metrics(folder: Path) -> dict[str, Any]:
    """Best validation PSNR of a grid point's run, and its test and copy-last PSNR from 05's results."""
    vals = [r["val_psnr"] for r in read_history(folder / "run") if r.get("val_psnr") is not None]
    metrics: dict[str, Any] = {"best_val_psnr": round(max(vals), 3) if vals else None}
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
    return "\n".join(lines + ["  ".join(str(row.get(k, "")).ljust(widths[k]) for k in keys) for row in summary])


def command(args: argparse.Namespace) -> int:
    """``workbook`` and ``sweep``."""
    values: dict[str, Any] = {k: param_value(k, v) for k, v in args.param or []}
    if args.preset is not None:
        values["preset"] = args.preset
    try:
        if args.command == "sweep":
            run_sweep(parse_grid(args.grid), values, Path(args.out) if args.out else None, kernel=args.kernel,
                      progress=not args.no_progress)
        else:
            run_workbook(values, Path(args.out) if args.out else None, inplace=args.inplace, only=args.only,
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
    p.set_defaults(func=command)

    p = sub.add_parser("sweep", parents=[common], help="run 04_training and 05_evaluation over a parameter grid")
    p.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2",
                   help="a parameter and its values (repeatable; the grid is their product)")
    p.add_argument("--out", help="output folder (default runs/sweep); one subfolder per grid point")
    p.set_defaults(func=command)
