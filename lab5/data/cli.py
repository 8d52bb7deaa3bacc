"""``python -m lab5 data {check,cache,convert-bair,make-synthetic}``.

Data problems (:class:`~lab5.data.layout.DatasetError`) print ``error: <message>`` on stderr
and exit 1 without a traceback: the message already names the file and the problem.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Any, Callable

from lab5.data.cache import build_cache
from lab5.data.check import check_root
from lab5.data.convert import convert_bair
from lab5.data.layout import SPLITS, DatasetError
from lab5.sim import make_synthetic


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args) or 0)
        except DatasetError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1

    return run


def _cmd_check(args: argparse.Namespace) -> int:
    report = check_root(args.root, echo=True, progress=args.progress)
    print(f"OK: {report.root}")
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    summary = build_cache(args.root, splits=args.splits, out=args.out, progress=True)
    for split, s in summary.items():
        print(f"{split}: {s['sequences']} sequence{'s' if s['sequences'] != 1 else ''} → {s['frames_path']} "
              f"({s['bytes'] / 2**20:.1f} MiB, {s['seconds']:.1f} s)")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    s = convert_bair(args.src, args.out, force=args.force, val_fraction=args.val_fraction)
    for split, n in s["sequences"].items():
        print(f"{split}: {n} sequences from {s['files'][split]} files")
    print(f"written {s['written']}, skipped (already done) {s['skipped']}, {s['seconds']:.1f} s → {s['dst']}")
    return 0


def _cmd_synthetic(args: argparse.Namespace) -> int:
    # Only pass what the user gave, so make_synthetic's own defaults apply otherwise.
    names = (*SPLITS, "seed", "workers")
    kwargs: dict[str, Any] = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    try:
        result = make_synthetic(args.out, **kwargs)
    except FileExistsError as e:  # its "destination not empty" refusal, already a clear message
        print(f"error: {e}", file=sys.stderr)
        return 1
    if isinstance(result, dict):
        counts = ", ".join(f"{s} {result[s]}" for s in SPLITS if s in result)
        how = "reused, already complete" if result.get("reused") else f"{result.get('seconds', 0):.1f} s"
        print(f"{result.get('path', args.out)}: {counts} sequences ({how})")
    return 0


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``data`` command and its subcommands to the top-level subparsers."""
    p = sub.add_parser("data", help="check, cache, convert or generate datasets", description=(
        "Data commands. Problems with the data print `error: <file>: <problem>` and exit 1."))
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    c = dsub.add_parser("check", help="validate a lab-layout root fully (decodes every image)")
    c.add_argument("root", help="data root holding train/ validate/ test/")
    c.add_argument("--progress", action="store_true", help="show a progress bar per split")
    c.set_defaults(func=_guard(_cmd_check))

    c = dsub.add_parser("cache", help="build the uint8 memmap cache of a lab-layout root")
    c.add_argument("root")
    c.add_argument("--splits", nargs="+", default=None, help="default: every split present")
    c.add_argument("--out", default=None, help="cache folder (default ROOT/.lab5_cache)")
    c.set_defaults(func=_guard(_cmd_cache))

    c = dsub.add_parser("convert-bair", help="convert the original BAIR TFRecords to the lab layout")
    c.add_argument("src", help="softmotion30_44k/ (holding train/ test/ [val/]) or its parent")
    c.add_argument("--out", required=True, help="destination data root")
    c.add_argument("--force", action="store_true", help="write into a non-empty destination")
    c.add_argument("--val-fraction", type=float, default=0.05,
                   help="without SRC/val: fraction of train files (the first ones) used as validate")
    c.set_defaults(func=_guard(_cmd_convert))

    c = dsub.add_parser("make-synthetic", help="generate the embedded simulated dataset")
    c.add_argument("--out", required=True, help="destination data root")
    for split in SPLITS:
        c.add_argument(f"--{split}", type=int, default=None, metavar="N", help=f"{split} sequences")
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--workers", type=int, default=None)
    c.set_defaults(func=_guard(_cmd_synthetic))
