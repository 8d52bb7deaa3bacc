"""Benchmark: can the DataLoader feed the fast training step?

Measures, for the demo and lab presets, in sequences per second:

* the DataLoader alone (``BairDataset`` reading its uint8 cache, batches drawn as the
  Solver draws them, ``num_workers`` 0, 1, 2; pinned memory when CUDA is present);
* the fast training step alone (forward + backward + Adam on a fixed batch);
* both together (the loader feeding the step), which is what training sees.

The loader keeps up when it is several times faster than the step and "together" is
close to "step alone".

    python benchmarks/data_throughput.py [--data ROOT] [--presets demo,lab] [--batches 20]
        [--step-iters 3] [--workers 0,1,2] [--json OUT]

Without ``--data`` a simulated set (256 training sequences of 30 frames, seed 0) is
generated in a temporary directory and cached with ``lab5.data.dataset.build_cache``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader


def _loader(dataset, cfg, workers: int, batches: int, pin: bool) -> DataLoader:
    from lab5.train import epoch_batches

    order = epoch_batches(len(dataset), cfg.batch_size, batches, cfg.seed, 0)
    return DataLoader(dataset, batch_sampler=order, num_workers=workers, pin_memory=pin,
                      persistent_workers=False)


def loader_rate(dataset, cfg, workers: int, batches: int, pin: bool) -> dict:
    """Sequences/s of the loader alone; the first batch (worker start-up) is timed apart."""
    t0 = time.perf_counter()
    it = iter(_loader(dataset, cfg, workers, batches, pin))
    next(it)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = sum(x.shape[0] for x, _ in it)
    return {"seq_per_s": n / (time.perf_counter() - t0), "first_batch_s": first}


def make_step(cfg, cond_dim: int, device: torch.device):
    """One fast training iteration as a function of a batch."""
    from lab5.hardware import resolve_precision, tune_cpu_allocator
    from lab5.models.cvae import CVAE
    from lab5.train import autocast, channels_last

    if device.type == "cpu":
        tune_cpu_allocator()  # as the Solver trains
    torch.manual_seed(cfg.seed)
    model = CVAE(cfg, cond_dim).to(device)
    precision = resolve_precision(cfg.bf16, cfg.channels_last, device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def step(x: torch.Tensor, c: torch.Tensor) -> None:
        x, c = x.to(device, non_blocking=True), c.to(device, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        with autocast(precision.bf16, device):  # as the Solver trains
            loss = model(channels_last(x) if precision.channels_last else x, c, 1e-4, True).loss
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def step_rates(dataset, cfg, step_iters: int, workers: list[int], device: torch.device) -> dict:
    """Sequences/s of the step on a fixed batch, and fed by the loader (1 warm-up iteration)."""
    step = make_step(cfg, dataset.cond_dim, device)
    x, c = next(iter(_loader(dataset, cfg, 0, 1, False)))
    step(x, c)  # warm-up
    times = []
    for _ in range(step_iters):
        t0 = time.perf_counter()
        step(x, c)
        times.append(time.perf_counter() - t0)
    out = {"step_alone": cfg.batch_size / statistics.median(times)}
    for w in workers:
        it = iter(_loader(dataset, cfg, w, step_iters + 1, device.type == "cuda"))
        step(*next(it))  # worker start-up and warm-up
        t0 = time.perf_counter()
        n = 0
        for xb, cb in it:
            step(xb, cb)
            n += xb.shape[0]
        out[f"together_workers{w}"] = n / (time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    from lab5.config import make_config
    from lab5.data.dataset import BairDataset

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="lab-layout root (default: generate a simulated set)")
    parser.add_argument("--presets", default="demo,lab")
    parser.add_argument("--batches", type=int, default=20, help="batches per loader measurement")
    parser.add_argument("--step-iters", type=int, default=3, help="timed fast-step iterations")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--batch-size", type=int, default=0, help="override the presets' batch size")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    device = torch.device(args.device)
    pin = device.type == "cuda"

    results: dict = {"meta": {"load_before": os.getloadavg(), "cpu_count": os.cpu_count(),
                              "device": str(device), "pin_memory": pin}}
    with tempfile.TemporaryDirectory(prefix="lab5-data-bench-") as tmp:
        root = args.data
        if root is None:
            from lab5.data.dataset import build_cache
            from lab5.sim import make_synthetic

            root = Path(tmp) / "data"
            make_synthetic(root, train=256, validate=0, test=0, seed=0, progress=False)
            build_cache(root, progress=False)
        for preset in args.presets.split(","):
            over = {"step": "fast", "bf16": "auto", "channels_last": "auto", "device": args.device}
            if args.batch_size:
                over["batch_size"] = args.batch_size
            cfg = make_config(preset, overrides=over)
            dataset = BairDataset(root, "train", n_frames=cfg.n_frames, random_window=cfg.random_window,
                                  seed=cfg.seed)
            r: dict = {"batch_size": cfg.batch_size, "using_cache": dataset.using_cache,
                       "random_window": cfg.random_window}
            for w in workers:
                r[f"loader_workers{w}"] = loader_rate(dataset, cfg, w, args.batches, pin)
            print(f"[{preset}] batch {cfg.batch_size}, cache {'on' if dataset.using_cache else 'OFF'}: loader "
                  + ", ".join(f"{r[f'loader_workers{w}']['seq_per_s']:.0f} seq/s ({w} workers)" for w in workers),
                  flush=True)
            r.update(step_rates(dataset, cfg, args.step_iters, workers, device))
            best_loader = max(r[f"loader_workers{w}"]["seq_per_s"] for w in workers)
            r["loader_over_step"] = best_loader / r["step_alone"]
            print(f"[{preset}] fast step alone {r['step_alone']:.2f} seq/s; fed by the loader "
                  + ", ".join(f"{r[f'together_workers{w}']:.2f} ({w} workers)" for w in workers)
                  + f"; loader/step = {r['loader_over_step']:.0f}x", flush=True)
            results[preset] = r
    results["meta"]["load_after"] = os.getloadavg()
    print(f"load average before {results['meta']['load_before'][0]:.2f}, after {results['meta']['load_after'][0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
