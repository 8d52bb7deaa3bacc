"""Benchmark: does the fast path train as well as the reference?

Trains the same small config with the reference step (per-frame loop, fp32) and the fast
step (batched over time with BatchNorm over all frames, bf16 autocast, channels_last) --
optionally also the exact step (the reference's maths, encode once, fp32) -- on the same
data, for the same number of iterations, at each seed, then prints each validation PSNR
(the lab protocol: 2 frames in, 10 predicted, fed back), the mean per path, and the
difference of the means. The fast path passes if that difference is within
``--tolerance`` dB (0.3).

    python benchmarks/fast_quality.py [--data ROOT] [--preset demo] [--epochs 3]
        [--iters-per-epoch 100] [--seeds 42,43] [--paths reference,fast,exact]
        [--json OUT] [--set KEY=VALUE ...]

Why several seeds: training is chaotic. Paths whose losses and gradients agree to 1e-5
(reference and exact) still end on different trajectories after a few hundred updates,
and so does one path run with 1 or 2 threads (summation order); after 1,000 iterations of
the demo model the validation PSNR differs by a few tenths of a dB from such rounding alone.
One run per path measures that noise as much as the path.

Teacher forcing is held at 1 (the lab's setting, and the regime where the fast path's
batching applies; without it the fast step is the exact one). Without ``--data`` a
simulated set (512 train / 128 validation sequences, seed 0) is generated in a temporary
directory. With ``--data data/embedded-seed0 --threads 2 --epochs 5 --iters-per-epoch 200``
one seed takes about 13 minutes for the reference, 10 for exact and 6 for fast on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

PATHS = {
    "reference": {"step": "reference", "bf16": False, "channels_last": False},
    "fast": {"step": "fast", "bf16": True, "channels_last": True},
    "exact": {"step": "exact", "bf16": False, "channels_last": False},
}


def train(path: str, seed: int, args: argparse.Namespace, data: Path, out: Path) -> dict:
    from lab5.config import make_config
    from lab5.train import Solver

    overrides = {**PATHS[path], "epochs": args.epochs, "iters_per_epoch": args.iters_per_epoch,
                 "tf_ratio": 1.0, "tf_decay_step": 0.0, "val_every": args.epochs,
                 "val_sequences": args.val_sequences, "seed": seed, "device": "cpu",
                 "threads": args.threads}
    cfg = make_config(args.preset, overrides=overrides, assignments=args.set or None)
    t0 = time.perf_counter()
    solver = Solver(cfg, data, out / f"{path}-{seed}", force=True, progress=False)
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
    parser.add_argument("--seeds", default="42", help="comma-separated training seeds, each run per path")
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
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds: comma-separated integers, got {args.seeds!r}")
    if not seeds:
        parser.error("--seeds: give at least one seed")

    with tempfile.TemporaryDirectory(prefix="lab5-quality-") as tmp:
        tmp = Path(tmp)
        data = args.data
        if data is None:
            from lab5.data.dataset import build_cache
            from lab5.sim import make_synthetic

            data = tmp / "data"
            make_synthetic(data, train=512, validate=128, test=0, seed=0, progress=False)
            build_cache(data)
        runs: dict[str, dict[str, dict]] = {path: {} for path in paths}
        for seed in seeds:
            for path in paths:
                print(f"training {path}, seed {seed} ...", flush=True)
                r = runs[path][str(seed)] = train(path, seed, args, data, tmp)
                print(f"  {path}, seed {seed}: val PSNR {r['val_psnr']:.2f} dB, train loss "
                      f"{r['train_loss']:.4f}, {r['iterations']} iterations in {r['seconds']:.0f} s", flush=True)
    mean = {path: statistics.fmean(r["val_psnr"] for r in runs[path].values()) for path in paths}
    spread = {path: (statistics.stdev(r["val_psnr"] for r in runs[path].values()) if len(seeds) > 1 else None)
              for path in paths}
    for path in paths:
        values = ", ".join(f"{r['val_psnr']:.2f}" for r in runs[path].values())
        sd = f" (sd {spread[path]:.2f})" if spread[path] is not None else ""
        print(f"{path}: val PSNR mean {mean[path]:.2f} dB{sd} over seeds {args.seeds}: {values}")
    out: dict = {"runs": runs, "mean_val_psnr": mean, "sd_val_psnr": spread, "seeds": seeds,
                 "data": str(args.data or "generated"), "threads": args.threads}
    ok = True
    if "reference" in mean and "fast" in mean:
        diff = mean["fast"] - mean["reference"]
        ok = abs(diff) <= args.tolerance
        print(f"mean val PSNR difference fast - reference: {diff:+.2f} dB "
              f"({'within' if ok else 'OUTSIDE'} ±{args.tolerance} dB)")
        out.update(difference_db=diff, within_tolerance=ok)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
