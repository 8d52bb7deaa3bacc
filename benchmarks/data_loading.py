"""Benchmark: iterating ``BairDataset`` from PNGs vs from the uint8 memmap cache.

Builds a throw-away lab-layout root of BAIR-sized sequences (64x64 PNGs of smooth scenes with a
moving block and sensor noise, so the files compress like real BAIR frames, ~9 KB), builds the
cache, then reads every item several times each way in one process and thread.

    python benchmarks/data_loading.py [--sequences 64] [--frames 30] [--n-frames 12]
                                      [--repeats 5] [--json OUT] [--min-speedup 5]

Prints sequences/s for each path (median over repeats) and their ratio; exits 1 if the cache
is less than ``--min-speedup`` times faster.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lab5.data.dataset import BairDataset, build_cache
from lab5.data.layout import write_sequence


def make_root(root: Path, n_sequences: int, n_frames: int, size: int = 64, seed: int = 0) -> None:
    """Random but image-like sequences (smooth background, moving block, noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for k in range(n_sequences):
        base = np.stack([yy * rng.uniform(60, 200), xx * rng.uniform(60, 200), (xx + yy) * 60], -1)
        pos = rng.uniform(8, size - 24, 2)
        frames = np.empty((n_frames, size, size, 3), dtype=np.uint8)
        for t in range(n_frames):
            img = base + rng.normal(0, 4, base.shape)
            y, x = (pos + t * rng.uniform(-1, 1, 2)).clip(0, size - 16).astype(int)
            img[y : y + 16, x : x + 16] = rng.uniform(0, 255, 3)
            frames[t] = img.clip(0, 255).astype(np.uint8)
        actions = rng.normal(0, 0.05, (n_frames, 4)).astype(np.float32)
        positions = rng.uniform(0.2, 0.5, (n_frames, 3)).astype(np.float32)
        write_sequence(root / "train" / "traj_0_to_255.tfrecords" / str(k), frames, actions, positions)


def time_pass(ds: BairDataset, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequences", type=int, default=64)
    p.add_argument("--frames", type=int, default=30, help="frames per sequence on disk")
    p.add_argument("--n-frames", type=int, default=12, help="window length read per item")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--min-speedup", type=float, default=5.0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # measure the loader, not intra-op threading

    with tempfile.TemporaryDirectory(prefix="lab5-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_root(root, args.sequences, args.frames)
        t_make = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_cache(root, progress=False)
        t_cache = time.perf_counter() - t0
        png = BairDataset(root, "train", n_frames=args.n_frames, use_cache=False)
        cached = BairDataset(root, "train", n_frames=args.n_frames)
        assert cached.using_cache, cached.cache_status
        assert all(torch.equal(png[i][0], cached[i][0]) for i in (0, len(png) - 1))
        png_bytes = sum(f.stat().st_size for f in root.rglob("*.png")) / (args.sequences * args.frames)
        t_png = time_pass(png, args.repeats)
        t_cached = time_pass(cached, args.repeats)

    n = args.sequences
    png_rate = n / statistics.median(t_png)
    cached_rate = n / statistics.median(t_cached)
    result = {
        "sequences": n,
        "frames_on_disk": args.frames,
        "n_frames": args.n_frames,
        "repeats": args.repeats,
        "mean_png_bytes": round(png_bytes),
        "png_seq_per_s": round(png_rate, 1),
        "cached_seq_per_s": round(cached_rate, 1),
        "speedup": round(cached_rate / png_rate, 1),
        "make_root_s": round(t_make, 2),
        "build_cache_s": round(t_cache, 2),
        "torch": torch.__version__,
    }
    print(f"root: {n} sequences x {args.frames} frames, mean PNG {png_bytes / 1024:.1f} KiB; items of {args.n_frames} frames")
    print(f"build cache: {t_cache:.2f} s")
    print(f"PNG decode : {png_rate:8.1f} sequences/s (median of {args.repeats})")
    print(f"memmap     : {cached_rate:8.1f} sequences/s (median of {args.repeats})")
    print(f"speedup    : {result['speedup']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if result["speedup"] < args.min_speedup:
        print(f"FAIL: cache less than {args.min_speedup}x faster", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
