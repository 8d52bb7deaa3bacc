"""Command line: ``python -m lab5 {data,train,evaluate,generate,workbook,sweep} ...``.

Every error a user can cause (bad data, bad config, bad checkpoint, bad run directory)
is printed as one ``error: ...`` line naming the file or field, with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lab5.config import PRESETS, ConfigError, make_config


def _user_errors() -> tuple[type[BaseException], ...]:
    from lab5.checkpoint import CheckpointError
    from lab5.data.dataset import DatasetError
    from lab5.solver import RunDirError, TrainingError

    return (ConfigError, CheckpointError, DatasetError, RunDirError, TrainingError)


def cmd_train(args: argparse.Namespace) -> int:
    from lab5.solver import Solver

    if args.resume:
        from lab5.config import Config
        from lab5.solver import RunDirError

        run_dir = Path(args.resume)
        if not (run_dir / "last.pt").is_file():
            raise RunDirError(f"{run_dir}: nothing to resume (no last.pt); start it again with --force")
        cfg = Config.from_json(run_dir / "config.json").override(args.set) if args.set else None
        data = args.data or _saved_data_root(run_dir)
        solver = Solver(cfg, data, run_dir, resume=True, progress=not args.no_progress)
    else:
        if not args.run_dir or not args.data:
            raise ConfigError("train needs --data ROOT and --run-dir DIR (or --resume RUN_DIR)")
        cfg = make_config(args.preset or "demo", assignments=args.set)
        solver = Solver(cfg, args.data, args.run_dir, force=args.force, progress=not args.no_progress)
    history = solver.fit()
    if solver.dist.main:
        last = history[-1] if history else {}
        print(f"trained {solver.epoch} epochs into {solver.run_dir}; best val PSNR "
              f"{solver.best:.2f} dB; last loss {last.get('loss', float('nan')):.4f}")
    return 0


def _saved_data_root(run_dir: Path) -> str:
    path = run_dir / "data_root.txt"  # written by the Solver when the run starts
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no data_root.txt; pass --data ROOT")
    return path.read_text().strip()


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lab5.evaluate import evaluate_model, format_table, save_json
    from lab5.runs import evaluation_data, load_run

    model, cfg, device = load_run(args.run_dir, args.device)
    data = evaluation_data(args.data, args.split, cfg)
    results = evaluate_model(model, data, cfg.n_past, cfg.n_future, samples=args.samples,
                             seed=args.seed, device=device, max_sequences=args.max_sequences,
                             split=args.split, progress=not args.no_progress)
    results["protocol"]["data_root"] = str(data.root)
    results["protocol"]["run_dir"] = str(args.run_dir)
    print(format_table(results))
    if args.json:
        save_json(results, args.json)
        print(f"wrote {args.json}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from lab5.viz import prediction_gif
    from lab5.runs import evaluation_data, load_run

    model, cfg, device = load_run(args.run_dir, args.device)
    data = evaluation_data(args.data, args.split, cfg)
    prediction_gif(model, data, cfg, args.out, indices=range(args.sequences), samples=args.samples,
                   seed=args.seed, device=device)
    print(f"wrote {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from lab5.checkpoint import export_run

    path = export_run(args.run_dir, args.out)
    size = sum(f.stat().st_size for f in Path(args.out).iterdir()) / 2**20
    print(f"wrote {path} ({size:.1f} MiB in {args.out})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab5", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    from lab5.data import cli as data_cli

    data_cli.register(sub)

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
    p.set_defaults(func=cmd_export)

    for name, func, helptext in (("evaluate", cmd_evaluate, "lab-protocol PSNR/SSIM table"),
                                 ("generate", cmd_generate, "GIF: ground truth beside predictions")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--run-dir", default="checkpoints/demo", help="run directory (default: the shipped demo)")
        p.add_argument("--data", help="lab-layout data root (default: the embedded evaluation set, "
                                      "generated on first use)")
        p.add_argument("--split", default="test")
        p.add_argument("--samples", type=int, default=1 if name == "evaluate" else 3)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="auto")
        p.add_argument("--no-progress", action="store_true")
        if name == "evaluate":
            p.add_argument("--json", help="write the results as JSON")
            p.add_argument("--max-sequences", type=int, default=0)
        else:
            p.add_argument("--out", required=True, help="output .gif")
            p.add_argument("--sequences", type=int, default=4)
        p.set_defaults(func=func)

    from lab5 import workbook

    workbook.register(sub)  # workbook (notebooks 01-05 with papermill), sweep (04 + 05 over a grid)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _user_errors() as exc:
        print(f"error: {_message(exc)}", file=sys.stderr)
        return 1


def _message(exc: BaseException) -> str:
    """The error's own message; a DataLoader worker re-raises it wrapped in its traceback."""
    text = str(exc)
    if "Original Traceback" in text:
        head, _, tail = text.rstrip().splitlines()[-1].partition(": ")
        if head.endswith(type(exc).__name__):
            return tail
    return text


if __name__ == "__main__":
    sys.exit(main())
