"""Command line: ``python -m lab5 {data,train,export,evaluate,generate,workbook,sweep,assignment} ...``.

Every error a user can cause (bad data, config, checkpoint or run directory) is printed as one
``error: ...`` line naming the file or field, with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lab5 import rundir
from lab5.config import PRESETS, ConfigError, make_config, parse_assignments
from lab5.data.convert import convert_bair
from lab5.data.dataset import BairDataset, build_cache
from lab5.data.layout import SPLITS, DatasetError, check_root
from lab5.evaluate import PROTOCOLS, evaluate_model, format_table, get_protocol, save_json
from lab5.files import check_writable, write_atomic
from lab5.rundir import CheckpointError, RunDirError
from lab5.sim import embedded_root, make_synthetic
from lab5.train import Solver, TrainingError
from lab5.viz import prediction_gif
from lab5.workbook import NotebookFailed, param_value, run_sweep, run_workbook

USER_ERRORS = (ConfigError, CheckpointError, DatasetError, RunDirError, TrainingError)


def cmd_data(args: argparse.Namespace) -> int:
    """``data {check,cache,convert-bair,make-synthetic}``; a DatasetError is one ``error:`` line (main)."""
    if args.data_command == "check":
        print(f"OK: {check_root(args.root, echo=True, progress=args.progress).root}")
    elif args.data_command == "cache":
        for split, s in build_cache(args.root, splits=args.splits, out=args.out, progress=True).items():
            print(f"{split}: {s['sequences']} sequence{'s' if s['sequences'] != 1 else ''} → {s['frames_path']} "
                  f"({s['bytes'] / 2**20:.1f} MiB, {s['seconds']:.1f} s)")
    elif args.data_command == "convert-bair":
        s = convert_bair(args.src, args.out, force=args.force, val_fraction=args.val_fraction)
        for split, n in s["sequences"].items():
            print(f"{split}: {n} sequences from {s['files'][split]} files")
        print(f"written {s['written']}, skipped (already done) {s['skipped']}, {s['seconds']:.1f} s → {s['dst']}")
    else:  # make-synthetic, given only what the user gave, so that its own defaults apply otherwise
        given = {k: getattr(args, k) for k in (*SPLITS, "seed", "workers") if getattr(args, k) is not None}
        r = make_synthetic(args.out, **given)
        how = "reused, already complete" if r["reused"] else f"{r['seconds']:.1f} s"
        print(f"{r['path']}: {', '.join(f'{s} {r[s]}' for s in SPLITS if s in r)} sequences ({how})")
    return 0


def add_data_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The ``data`` command and its subcommands."""
    p = sub.add_parser("data", help="check, cache, convert or generate datasets", description=(
        "Data commands. Problems with the data print `error: <file>: <problem>` and exit 1."))
    p.set_defaults(func=cmd_data)
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    c = dsub.add_parser("check", help="validate a lab-layout root fully (decodes every image)")
    c.add_argument("root", help="data root holding train/ validate/ test/")
    c.add_argument("--progress", action="store_true", help="show a progress bar per split")
    c = dsub.add_parser("cache", help="build the uint8 memmap cache of a lab-layout root")
    c.add_argument("root")
    c.add_argument("--splits", nargs="+", default=None, help="default: every split present")
    c.add_argument("--out", default=None, help="cache folder (default ROOT/.lab5_cache)")
    c = dsub.add_parser("convert-bair", help="convert the original BAIR TFRecords to the lab layout")
    c.add_argument("src", help="softmotion30_44k/ (holding train/ test/ [val/]) or its parent")
    c.add_argument("--out", required=True, help="destination data root")
    c.add_argument("--force", action="store_true", help="write into a non-empty destination")
    c.add_argument("--val-fraction", type=float, default=0.05,
                   help="without SRC/val: fraction of train files (the first ones) used as validate")
    c = dsub.add_parser("make-synthetic", help="generate the embedded simulated dataset")
    c.add_argument("--out", required=True, help="destination data root")
    for split in SPLITS:
        c.add_argument(f"--{split}", type=int, default=None, metavar="N", help=f"{split} sequences")
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--workers", type=int, default=None)


def cmd_train(args: argparse.Namespace) -> int:
    if args.resume:
        run_dir = Path(args.resume)
        cfg = rundir.resume_config(run_dir, None).replace(**parse_assignments(args.set))
        data = args.data or rundir.read_data_root(run_dir)
        if data is None:
            raise ConfigError(f"{run_dir}: no {rundir.DATA_ROOT}; pass --data ROOT")
    else:
        if not args.run_dir or not args.data:
            raise ConfigError("train needs --data ROOT and --run-dir DIR (or --resume RUN_DIR)")
        run_dir, data, cfg = args.run_dir, args.data, make_config(args.preset or "demo", assignments=args.set)
    solver = Solver(cfg, data, run_dir, resume=bool(args.resume), force=args.force, progress=not args.no_progress)
    history = solver.fit()
    if solver.dist.main:
        last = history[-1] if history else {}
        print(f"trained {solver.epoch} epochs into {solver.run_dir}; best val PSNR "
              f"{solver.best:.2f} dB; last loss {last.get('loss', float('nan')):.4f}")
    return 0


def evaluation_data(args: argparse.Namespace, n_frames: int) -> BairDataset:
    """``--data``, or the embedded evaluation set."""
    root = Path(args.data) if args.data else embedded_root(evaluation=True)
    return BairDataset(root, args.split, n_frames=n_frames)


def cmd_evaluate(args: argparse.Namespace) -> int:
    model, cfg, device = rundir.load_run(args.run_dir, args.device)
    protocol = get_protocol(args.protocol)
    data = evaluation_data(args, protocol.n_frames)
    results = evaluate_model(model, data, protocol, samples=args.samples, seed=args.seed, device=device,
                             max_sequences=args.max_sequences, split=args.split, progress=not args.no_progress,
                             counterfactual_root=data.root if args.counterfactual else None)
    results["protocol"].update(data_root=str(data.root), run_dir=str(args.run_dir))
    print(format_table(results))
    if args.json:
        save_json(results, args.json)
        print(f"wrote {args.json}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    model, cfg, device = rundir.load_run(args.run_dir, args.device)
    prediction_gif(model, evaluation_data(args, cfg.n_frames), cfg, args.out, indices=range(args.sequences),
                   samples=args.samples, seed=args.seed, device=device)
    print(f"wrote {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    path = rundir.export_run(args.run_dir, args.out, args.checkpoint)
    size = sum(f.stat().st_size for f in Path(args.out).iterdir()) / 2**20
    print(f"wrote {path} ({size:.1f} MiB in {args.out})")
    return 0


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["lr=1e-3,2e-3", "kl_mode=monotonic,cyclical"]`` -> ``{"lr": [0.001, 0.002], ...}``."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or not raw.strip():
            raise ConfigError(f"--grid {item!r} is not of the form key=v1,v2,...")
        grid[key.strip()] = [param_value(key.strip(), v) for v in raw.split(",") if v.strip()]
    return grid


def cmd_notebooks(args: argparse.Namespace) -> int:
    """``workbook`` and ``sweep``: the notebooks run with papermill."""
    values: dict[str, Any] = {k: param_value(k, v) for k, v in args.param or []}
    if args.preset is not None:
        values["preset"] = args.preset
    out, run = Path(args.out) if args.out else None, {"kernel": args.kernel, "progress": not args.no_progress}
    try:
        if args.command == "sweep":
            run_sweep(parse_grid(args.grid), values, out, **run)
        else:
            run_workbook(values, out, inplace=args.inplace, only=args.only, **run)
    except NotebookFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def add_notebook_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The ``workbook`` and ``sweep`` subcommands."""
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
    p.set_defaults(func=cmd_notebooks)
    p = sub.add_parser("sweep", parents=[common], help="run 04_training and 05_evaluation over a parameter grid")
    p.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2",
                   help="a parameter and its values (repeatable; the grid is their product)")
    p.add_argument("--out", help="output folder (default runs/sweep); one subfolder per grid point")
    p.set_defaults(func=cmd_notebooks)


def cmd_assignment(args: argparse.Namespace) -> int:
    """``assignment release`` and ``assignment grade``; exit status 1 when a submission could not be graded."""
    try:
        from lab5 import assignment  # nbgrader and nbclient take seconds to import: only for this command
    except ImportError as exc:
        raise ConfigError(f"the assignment commands need the dev extra (pip install -e '.[dev]'): {exc}") from None
    if args.assignment_command == "release":
        assignment.release(Path(args.out))
        return 0
    if args.json:   # before minutes of grading, not after
        try:
            check_writable(Path(args.json).absolute().parent)
        except OSError as exc:
            raise ConfigError(f"--json {args.json}: cannot write there ({exc.strerror or exc})") from None
    results = assignment.grade([Path(p) for p in args.notebooks], timeout=args.timeout)
    print(assignment.format_scores(results))
    if args.json:
        total = {"score": sum(r["score"] for r in results), "max": sum(r["max"] for r in results)}
        write_atomic(args.json, json.dumps({**total, "notebooks": results}, indent=2) + "\n")
        print(f"wrote {args.json}")
    for r in (r for r in results if r["error"]):
        print(f"error: {r['path']}: {r['error']}", file=sys.stderr)
    return 1 if any(r["error"] for r in results) else 0


def add_assignment_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """The ``assignment`` command: the student release and the autograder (docs/assignment.md)."""
    p = sub.add_parser("assignment", help="release the student notebooks, or grade submissions",
                       description="The workbook as an assignment (nbgrader's cell markers): see docs/assignment.md.")
    p.set_defaults(func=cmd_assignment)
    asub = p.add_subparsers(dest="assignment_command", required=True, metavar="COMMAND")
    c = asub.add_parser("release", help="write the student notebooks: answers and hidden tests removed, no outputs")
    c.add_argument("--out", required=True, help="destination folder (outside notebooks/)")
    c = asub.add_parser("grade", help="run submissions headless and print a score table with feedback")
    c.add_argument("notebooks", nargs="+", metavar="NOTEBOOK", help="submitted .ipynb files")
    c.add_argument("--json", help="also write the scores as JSON (per notebook: score, max, exercises)")
    c.add_argument("--timeout", type=int, default=600, help="seconds per cell before it is interrupted (default 600)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab5", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_data_parser(sub)
    p = sub.add_parser("train", help="train a CVAE (or --resume a killed run)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="named preset (default demo)")
    p.add_argument("--data", help="lab-layout data root")
    p.add_argument("--run-dir", help="output run directory")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from last.pt")
    p.add_argument("--force", action="store_true", help="replace a run already in --run-dir")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("export", help="a small shippable copy of a run (best.pt without optimizer)")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="best.pt (else last.pt), or last.pt: the state after the last iteration")
    p.set_defaults(func=cmd_export)
    for name, func, helptext in (("evaluate", cmd_evaluate, "PSNR/SSIM table under the lab or SVG protocol"),
                                 ("generate", cmd_generate, "GIF: ground truth beside predictions")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--run-dir", default="checkpoints/demo", help="run directory (default: the shipped demo)")
        p.add_argument("--data", help="lab-layout data root (default: the embedded evaluation set, "
                                      "generated on first use)")
        p.add_argument("--split", default="test")
        p.add_argument("--samples", type=int, default=None if name == "evaluate" else 3,
                       help="samples per sequence (evaluate: the protocol's unless given)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="auto")
        p.add_argument("--no-progress", action="store_true")
        if name == "evaluate":
            p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="lab",
                           help="lab: 2 -> 10 frames, 1 sample (the default, the lab's grading); "
                                "svg: 2 -> 28 frames, best of 100 samples per sequence (the papers')")
            p.add_argument("--counterfactual", action="store_true",
                           help="also score each test scene re-simulated with another sequence's actions "
                                "(embedded simulated data only)")
            p.add_argument("--json", help="write the results as JSON")
            p.add_argument("--max-sequences", type=int, default=0)
        else:
            p.add_argument("--out", required=True, help="output .gif")
            p.add_argument("--sequences", type=int, default=4)
        p.set_defaults(func=func)
    add_notebook_commands(sub)
    add_assignment_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"error: {message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:   # Ctrl-C: what was written stays valid (atomic writes; resume, embedded sets)
        print(f"interrupted: python -m lab5 {args.command} stopped", file=sys.stderr)
        return 130


def message(exc: BaseException) -> str:
    """The error's own message; a DataLoader worker re-raises it wrapped in its traceback."""
    text = str(exc)
    if "Original Traceback" in text:
        head, _, tail = text.rstrip().splitlines()[-1].partition(": ")
        if head.endswith(type(exc).__name__):
            return tail
    return text


if __name__ == "__main__":
    sys.exit(main())
