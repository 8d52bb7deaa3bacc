"""Benchmark: does the fast path train as well as the reference?

Trains the same small config twice on the same data and seed -- once with the reference
step (per-frame loop, fp32), once with the fast step (batched over time with BatchNorm
over all frames, bf16 autocast, channels_last) -- for the same number of iterations, then
prints both validation PSNRs (the lab protocol: 2 frames in, 10 predicted, fed back) and
their difference. The fast path passes if it is within ``--tolerance`` dB (0.3).

    python benchmarks/fast_quality.py [--data ROOT] [--preset demo] [--epochs 3]
        [--iters-per-epoch 100] [--json OUT] [--set KEY=VALUE ...]

Teacher forcing is held at 1 (the lab's setting, and the regime where the fast path's
batching applies; without it the fast step is the exact one). Without ``--data`` a
simulated set (512 train / 128 validation sequences, seed 0) is generated in a temporary
directory. About 12 minutes on one CPU core with the defaults (``--threads 1``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

PATHS = {
    "reference": {"step": "reference", "bf16": False, "channels_last": False},
    "fast": {"step": "fast", "bf16": True, "channels_last": True},
}


def train(path: str, args: argparse.Namespace, data: Path, out: Path) -> dict:
    from lab5.config import make_config
    from lab5.solver import Solver

    overrides = {**PATHS[path], "epochs": args.epochs, "iters_per_epoch": args.iters_per_epoch,
                 "tf_ratio": 1.0, "tf_decay_step": 0.0, "val_every": args.epochs,
                 "val_sequences": args.val_sequences, "seed": args.seed, "device": "cpu",
                 "threads": args.threads}
    cfg = make_config(args.preset, overrides=overrides, assignments=args.set or None)
    t0 = time.perf_counter()
    solver = Solver(cfg, data, out / path, force=True, progress=False)
    history = solver.fit()
    seconds = time.perf_counter() - t0
    last = history[-1]
    return {"val_psnr": last["val_psnr"], "train_loss": last["loss"], "train_mse": last["mse"],
            "seconds": seconds, "iterations": args.epochs * args.iters_per_epoch,
            "config": {k: getattr(cfg, k) for k in ("preset", "arch", "batch_size", "step", "bf16",
                                                    "channels_last", "lr", "seed")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="lab-layout root (default: generate a simulated set)")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--iters-per-epoch", type=int, default=100)
    parser.add_argument("--val-sequences", type=int, default=0, help="0: the whole validation split")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: robust on a shared machine, where two OpenMP "
                             "threads competing with other work slow the small-op reference 10x)")
    parser.add_argument("--tolerance", type=float, default=0.3, help="allowed |PSNR difference| in dB")
    parser.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="config overrides for both runs")
    parser.add_argument("--paths", default="reference,fast",
                        help="which to train (one alone: e.g. the fast path at another seed)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or set(paths) - set(PATHS):
        parser.error(f"--paths: choose from {list(PATHS)}")

    with tempfile.TemporaryDirectory(prefix="lab5-quality-") as tmp:
        tmp = Path(tmp)
        data = args.data
        if data is None:
            from lab5.data.cache import build_cache
            from lab5.data.synthetic import make_synthetic

            data = tmp / "data"
            make_synthetic(data, train=512, validate=128, test=0, seed=0, progress=False)
            build_cache(data)
        results = {}
        for path in paths:
            print(f"training {path} ...", flush=True)
            results[path] = train(path, args, data, tmp)
            r = results[path]
            print(f"  {path}: val PSNR {r['val_psnr']:.2f} dB, train loss {r['train_loss']:.4f}, "
                  f"{r['iterations']} iterations in {r['seconds']:.0f} s", flush=True)
    if len(results) < 2:  # one path: nothing to compare
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        return 0
    diff = results["fast"]["val_psnr"] - results["reference"]["val_psnr"]
    ok = abs(diff) <= args.tolerance
    print(f"val PSNR: reference {results['reference']['val_psnr']:.2f} dB, fast {results['fast']['val_psnr']:.2f} dB, "
          f"difference {diff:+.2f} dB ({'within' if ok else 'OUTSIDE'} ±{args.tolerance} dB); "
          f"wall time reference {results['reference']['seconds']:.0f} s, fast {results['fast']['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({**results, "difference_db": diff, "within_tolerance": ok,
                                         "data": str(args.data or "generated")}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
