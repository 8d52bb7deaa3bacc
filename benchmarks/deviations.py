"""Benchmark: what each deviation from the report's listings does to the demo preset.

Trains the ``demo`` preset (6 epochs x 40 iterations, the workbook's 04) once per variant and seed
on the embedded training set: the defaults (SVG's initialisation, skips of x[n_past-2], teacher
forcing as Listing 2.7), then each with one switch set the other way (``init=torch``,
``skip_frame=last``, ``tf_style=conditioned``, ``cond_norm=false``: the report's raw conditions).
Prints the best and the last validation PSNR (lab protocol, 64 validation sequences) per run and the
mean over seeds, and writes them as JSON.

    python benchmarks/deviations.py --seeds 42,43 --json benchmarks/results/deviations_demo.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {"defaults": [], "init=torch": ["init=torch"], "skip_frame=last": ["skip_frame=last"],
            "tf_style=conditioned": ["tf_style=conditioned"], "cond_norm=false": ["cond_norm=false"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="42,43")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every run (e.g. bf16=false)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown} (known: {', '.join(VARIANTS)})")

    from lab5.config import make_config
    from lab5.sim import embedded_root
    from lab5.train import Solver

    data = embedded_root()
    runs: dict[str, dict[str, dict]] = {n: {} for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for name in names:
                cfg = make_config("demo", assignments=[f"seed={seed}", *VARIANTS[name], *args.set])
                t0 = time.perf_counter()
                history = Solver(cfg, data, Path(tmp) / f"{name}-{seed}", progress=False).fit()
                vals = [r["val_psnr"] for r in history]
                runs[name][str(seed)] = {"best_val_psnr": max(vals), "last_val_psnr": vals[-1],
                                         "seconds": round(time.perf_counter() - t0, 1)}
                print(f"{name:<22} seed {seed}: best {max(vals):.2f} dB, last {vals[-1]:.2f} dB "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    mean = {n: statistics.fmean(r["best_val_psnr"] for r in runs[n].values()) for n in names}
    print(f"\n{'variant':<22}{'mean best val PSNR (dB)':>26}  per seed")
    for n in names:
        print(f"{n:<22}{mean[n]:>26.2f}  " + ", ".join(f"{r['best_val_psnr']:.2f}" for r in runs[n].values()))
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "mean_best_val_psnr": mean, "seeds": seeds,
                                         "set": args.set}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
