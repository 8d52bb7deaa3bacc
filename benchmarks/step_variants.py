"""Benchmark: what each speed measure buys the training step, one variant per process.

The variants of one step (``exact`` or ``fast``) differ in one measure at a time: glibc's
allocator tuned or not (``lab5.hardware.tune_cpu_allocator``),
channels_last, bf16 autocast, ``torch.compile``. Each runs in a fresh process (the allocator
setting and the ISA are process-wide) on random data of the preset's shapes, teacher forcing
on, and prints the median seq/s of ``--iters`` timed iterations after one warm-up.

    python benchmarks/step_variants.py --preset lab --isa avx2 \\
        --variants batched,batched-noalloc,batched-cl,batched-compile
    python benchmarks/step_variants.py --preset demo --step fast --variants batched,batched-noalloc,batched-cl

A variant is ``batched`` followed by any of ``-noalloc``, ``-cl``, ``-bf16``, ``-compile``.
(The frame-by-frame form of the exact step, ``per-frame`` here until commit 82cac01, was slower
than the batched one on every measured host and was removed.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ISA_ENV = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}
COND_DIM = 7


def worker(preset: str, step: str, variant: str, iters: int, batch: int) -> dict:
    import torch

    from lab5.config import make_config
    from lab5.hardware import tune_cpu_allocator
    from lab5.models.cvae import CVAE
    from lab5.train import autocast, channels_last

    form, *flags = variant.split("-")
    if form != "batched":
        raise SystemExit(f"variant {variant!r}: it starts with batched")
    if "noalloc" not in flags:
        tune_cpu_allocator()
    cfg = make_config(preset, overrides={"batch_size": batch, "step": step, "device": "cpu"})
    torch.manual_seed(0)
    model = CVAE(cfg, COND_DIM)
    if "cl" in flags:
        model = model.to(memory_format=torch.channels_last)
    if "compile" in flags:
        model.encoder.compile()
        model.decoder.compile()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, cfg.n_frames, 3, 64, 64, generator=g)
    c = torch.rand(batch, cfg.n_frames, COND_DIM, generator=g) * 2 - 1
    if "cl" in flags:
        x = channels_last(x)
    times = []
    for _ in range(1 + iters):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with autocast("bf16" in flags, x.device):
            out = model(x, c, 1e-4, True)
        out.loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return {"variant": variant, "seq_per_s": batch / statistics.median(times[1:]),
            "first_iteration_s": times[0], "iter_times": times[1:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="lab")
    parser.add_argument("--step", default="exact", choices=["exact", "fast"])
    parser.add_argument("--variants", default="batched,batched-noalloc")
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--isa", choices=sorted(ISA_ENV))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.preset, args.step, args.worker, args.iters, args.batch_size)))
        return 0
    env = {**os.environ, **(ISA_ENV[args.isa] if args.isa else {})}
    print(f"preset {args.preset}, step {args.step}, batch {args.batch_size}, ISA {args.isa or 'default'}, "
          f"1 warm-up + {args.iters} timed iterations per variant")
    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--worker", variant], env=env,
                              stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            print(f"error: variant {variant} failed (exit {proc.returncode})", file=sys.stderr)
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{variant:<24} {r['seq_per_s']:8.3f} seq/s   (first iteration {r['first_iteration_s']:.1f} s)",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
