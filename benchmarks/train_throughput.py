"""Benchmark: training throughput of the reference, exact and fast steps, side by side.

Each path runs in its own subprocess (so peak RSS is per path) on random data of the
preset's shapes (frames uniform in [0, 1], a 7-d condition), teacher forcing on, and
times full training iterations (forward + backward + Adam step): ``--warmup`` untimed,
then the median of ``--iters`` (``--rounds R`` repeats every path R times, interleaved,
and takes the median over all timed iterations: other work on a shared machine then
hits every path alike). FLOPs per sequence come from
``torch.utils.flop_counter.FlopCounterMode`` over one iteration at a small batch
(matmuls and convolutions only; FLOPs are linear in the batch size).

    python benchmarks/train_throughput.py --preset lab --batch-size 16 --iters 5 \\
        --json bench.json [--paths reference,exact,fast] [--device cpu|cuda]
    python benchmarks/train_throughput.py --preset lab --batch-size 64 --paths fast --iters 2

The paths: ``reference`` (per-frame loop, fp32), ``exact`` (encode once, batched over
time with per-frame BatchNorm, fp32), ``fast`` (batched, ``bf16=auto``, the preset's
``channels_last``: for ``demo`` that is the demo's default step). ``--set-PATH key=value``
overrides a path's config (e.g. ``--set-fast compile=true`` or ``bf16=false``). On a CPU
every path runs with ``lab5.hardware.tune_cpu_allocator``, as the Solver trains.

``--isa avx2`` re-runs everything with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``:
on an AVX-512 machine PyTorch and oneDNN then dispatch only AVX2 kernels, which measures
the AVX2 path (bf16 emulated) on any host. ``meta`` in the JSON records the CPU model,
ATen's capability, native bf16 and the ISA setting; each path records what bf16 and
channels_last resolved to.
Prints, per path, seq/s, the ratio to the reference, peak RSS (and peak CUDA memory),
GFLOP per sequence and achieved GFLOP/s, and what one 3x3 convolution reaches on this
machine in fp32 and bf16 (the ceiling to read GFLOP/s against); ``--json`` writes the same as
``{"reference": {...}, "exact": {...}, "fast": {...}, "meta": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

# What each path means; anything else comes from the preset (and --set-PATH).
PATH_CONFIG = {
    "reference": {"step": "reference", "bf16": False, "channels_last": False, "compile": False},
    "exact": {"step": "exact", "bf16": False, "channels_last": False, "compile": False},
    "fast": {"step": "fast", "bf16": "auto", "compile": False},
}
# What --isa sets (before torch is imported: both libraries read them once).
ISA_ENV = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}
COND_DIM = 7  # action (4) + end-effector position (3), as in BAIR


def _config(args: argparse.Namespace, path: str):
    from lab5.config import make_config

    cfg = make_config(args.preset, overrides={**PATH_CONFIG[path], "batch_size": args.batch_size,
                                              "device": args.device},
                      assignments=getattr(args, f"set_{path}") or None)
    return cfg


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def worker(args: argparse.Namespace) -> dict:
    """Time one path in this process; return its figures."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lab5.hardware import resolve_device, resolve_precision, tune_cpu_allocator
    from lab5.models.cvae import CVAE
    from lab5.train import autocast, channels_last

    path = args.worker
    cfg = _config(args, path)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.bf16, cfg.channels_last, device)
    if precision.warning():
        print(precision.warning(), file=sys.stderr)
    if device.type == "cpu":
        tune_cpu_allocator()
    torch.manual_seed(cfg.seed)
    model = CVAE(cfg, COND_DIM).to(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    if cfg.compile:
        model.encoder.compile()
        model.decoder.compile()

    def batch(n: int):
        g = torch.Generator().manual_seed(0)
        x = torch.rand(n, cfg.n_frames, 3, 64, 64, generator=g)
        c = torch.rand(n, cfg.n_frames, COND_DIM, generator=g) * 2 - 1
        return x.to(device), c.to(device)

    def iteration(x, c) -> float:
        opt.zero_grad(set_to_none=True)
        with autocast(precision.bf16, device):
            out = model(channels_last(x) if precision.channels_last else x, c, 1e-4, True)
        out.loss.backward()
        opt.step()
        return float(out.loss.detach())

    # FLOPs at a small batch (the counter is slow and FLOPs scale linearly with the batch).
    n_flop = min(2, args.batch_size)
    counter = FlopCounterMode(display=False)
    with counter:
        iteration(*batch(n_flop))
    flop_per_seq = counter.get_total_flops() / n_flop

    x, c = batch(args.batch_size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for k in range(args.warmup + args.iters):
        _sync(device)
        t0 = time.perf_counter()
        losses.append(iteration(x, c))
        _sync(device)
        if k >= args.warmup:
            times.append(time.perf_counter() - t0)
        print(f"  [{path}] iteration {k + 1}/{args.warmup + args.iters}: {time.perf_counter() - t0:.2f} s",
              file=sys.stderr, flush=True)
    sec = statistics.median(times)
    seq_per_s = args.batch_size / sec
    result = {
        "seq_per_s": seq_per_s,
        "sec_per_iter": sec,
        "iter_times": times,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "gflop_per_seq": flop_per_seq / 1e9,
        "gflop_per_s": flop_per_seq * seq_per_s / 1e9,
        "final_loss": losses[-1],
        "load_average": os.getloadavg(),
        "config": {k: getattr(cfg, k) for k in ("step", "bf16", "channels_last", "compile", "arch",
                                                "batch_size", "n_past", "n_future", "g_dim",
                                                "z_dim", "rnn_size")},
        "resolved": {"bf16": precision.bf16, "channels_last": precision.channels_last},
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["gpu"] = torch.cuda.get_device_name(device)
    return result


def _combine(runs: list[dict], batch_size: int) -> dict:
    """One path's figures over its rounds: median and best of all timed iterations, peak of peaks."""
    times = [t for r in runs for t in r["iter_times"]]
    out = dict(runs[-1])
    out["iter_times"] = times
    out["sec_per_iter"] = statistics.median(times)
    out["seq_per_s"] = batch_size / out["sec_per_iter"]
    out["best_seq_per_s"] = batch_size / min(times)
    out["gflop_per_s"] = out["gflop_per_seq"] * out["seq_per_s"]
    out["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    if "peak_cuda_mib" in out:
        out["peak_cuda_mib"] = max(r["peak_cuda_mib"] for r in runs)
    out["rounds"] = len(runs)
    return out


def conv_ceiling(device: str, threads: int, repeats: int = 10) -> dict[str, float]:
    """GFLOP/s of one 3x3 convolution (64 -> 64 channels, 16 x 64 x 64), fp32 and bf16
    channels_last: what this machine's convolution kernels reach, to read the paths'
    GFLOP/s against (the machine, not lab5, sets that ceiling)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    x = torch.randn(16, 64, 64, 64, device=dev)
    w = torch.randn(64, 64, 3, 3, device=dev)
    flops = 2 * x.numel() * w[0].numel()  # one multiply-add per input channel x tap per output
    out = {}
    for name, dtype, fmt in (("fp32", torch.float32, torch.contiguous_format),
                             ("bf16", torch.bfloat16, torch.channels_last)):
        xi, wi = x.to(dtype).contiguous(memory_format=fmt), w.to(dtype).contiguous(memory_format=fmt)
        times = []
        for _ in range(repeats + 2):
            _sync(dev)
            t0 = time.perf_counter()
            torch.nn.functional.conv2d(xi, wi, padding=1)
            _sync(dev)
            times.append(time.perf_counter() - t0)
        out[name] = flops / statistics.median(times[2:]) / 1e9
    return out


def machine_meta(device: str) -> dict:
    """The CPU model, ATen's capability, native bf16 on ``device`` and the ISA settings."""
    from lab5.hardware import cpu_capability, cpu_model, native_bf16

    return {"cpu_model": cpu_model(), "cpu_capability": cpu_capability(),
            "native_bf16": native_bf16(device),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
            "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY", "default")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="lab")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--iters", type=int, default=5, help="timed iterations (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every path this many times, interleaved (a loaded machine)")
    parser.add_argument("--paths", default="reference,exact,fast")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--isa", choices=sorted(ISA_ENV),
                        help="dispatch only these kernels (avx2: measure the AVX2 path on an AVX-512 host)")
    for path in PATH_CONFIG:
        parser.add_argument(f"--set-{path}", nargs="*", metavar="KEY=VALUE",
                            help=f"config overrides for the {path} path")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.isa and any(os.environ.get(k) != v for k, v in ISA_ENV[args.isa].items()):
        if argv is not None:  # called from Python: torch is loaded already, nothing to re-run
            parser.error(f"--isa {args.isa}: set {ISA_ENV[args.isa]} in the environment instead")
        # Set before torch loads, for this process (the conv ceiling) and every worker.
        os.environ.update(ISA_ENV[args.isa])
        os.execv(sys.executable, [sys.executable, __file__, *sys.argv[1:]])
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = [p for p in paths if p not in PATH_CONFIG]
    if unknown:
        parser.error(f"unknown path(s) {unknown}; known: {list(PATH_CONFIG)}")
    load_before = os.getloadavg()
    print(f"preset {args.preset}, batch {args.batch_size}, {args.warmup} warm-up + {args.iters} timed "
          f"iterations, device {args.device}; load average {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f}", flush=True)
    forwarded = sys.argv[1:] if argv is None else argv
    runs: dict[str, list[dict]] = {path: [] for path in paths}
    for k in range(args.rounds):  # rounds interleave the paths, so load changes hit all of them
        for path in paths:
            cmd = [sys.executable, __file__, *forwarded, "--worker", path]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                print(f"error: the {path} path failed (exit {proc.returncode})", file=sys.stderr)
                return 1
            runs[path].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            if args.rounds > 1:
                print(f"  round {k + 1}: {path} {runs[path][-1]['seq_per_s']:.3f} seq/s", flush=True)
    results = {path: _combine(r, args.batch_size) for path, r in runs.items()}
    base = results.get("reference", {}).get("seq_per_s")
    print(f"{'path':<10} {'seq/s':>8} {'x ref':>7} {'best':>8} {'peak RSS':>10} {'GFLOP/seq':>10} "
          f"{'GFLOP/s':>8}  config")
    for path, r in results.items():
        r["ratio_to_reference"] = r["seq_per_s"] / base if base else None
        ratio = f"{r['ratio_to_reference']:.2f}" if base else "-"
        flags = ", ".join(f"{k}={r['resolved'][k]}" + (" (auto)" if r["config"][k] == "auto" else "")
                          for k in ("bf16", "channels_last")) + f", compile={r['config']['compile']}"
        mem = f"{r['peak_rss_mib']:.0f} MiB" + (f" (CUDA {r['peak_cuda_mib']:.0f})" if "peak_cuda_mib" in r else "")
        print(f"{path:<10} {r['seq_per_s']:8.3f} {ratio:>7} {r['best_seq_per_s']:8.3f} {mem:>10} "
              f"{r['gflop_per_seq']:10.1f} {r['gflop_per_s']:8.1f}  {flags}")
    if base:
        print("(seq/s: median iteration; best: fastest iteration; ratios use the medians)")
    ceiling = conv_ceiling(args.device, args.threads)
    machine = machine_meta(args.device)
    print(f"machine: {machine['cpu_model']}; ATen {machine['cpu_capability']}, native bf16 "
          f"{machine['native_bf16']}, ONEDNN_MAX_CPU_ISA {machine['onednn_max_cpu_isa']}")
    print(f"this machine's 3x3 convolution (16x64x64x64): fp32 {ceiling['fp32']:.0f} GFLOP/s, "
          f"bf16 channels_last {ceiling['bf16']:.0f} GFLOP/s")
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if args.json:
        meta = {"preset": args.preset, "batch_size": args.batch_size, "iters": args.iters,
                "warmup": args.warmup, "device": args.device, "load_before": load_before,
                "load_after": load_after, "cpu_count": os.cpu_count(),
                "conv3x3_gflop_per_s": ceiling, **machine,
                "resolved_bf16": {p: r["resolved"]["bf16"] for p, r in results.items()}}
        args.json.write_text(json.dumps({**results, "meta": meta}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
