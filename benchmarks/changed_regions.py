"""Benchmark: where a model's changed-pixel error lives, from the simulator's own masks.

The changed pixels of the lab's score (evaluate's ``changed``: differing from the last conditioning frame
by more than 0.1) are split by what changed there, found by rendering every frame again without the arm
(``render_states(..., arm=False)``):

- ``arm``: the arm, gripper or their shadows are drawn there in the true frame;
- ``uncovered``: they were drawn there in the last conditioning frame and are not now;
- ``objects``: neither, and the arm-free frame differs from the last conditioning frame's (a pushed object);
- ``other``: none of these (should be empty).

For the model (one sample per sequence, prior z) and for copy-last it prints, per region, its share of the
changed pixels, its share of the squared error and its PSNR (pooled over the region's pixels); then
the changed-pixel score as evaluate computes it (per frame, then the mean) with the truth pasted into one
region at a time: what drawing that region perfectly would give. Needs the embedded data (it re-simulates
each sequence from the seed in SYNTHETIC.json).

    python benchmarks/changed_regions.py --checkpoint checkpoints/demo --sequences 256
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

REGIONS = ("arm", "uncovered", "objects", "other")


def region_masks(base_seed: int, split: str, index: int, n_past: int, n_frames: int,
                 frames: np.ndarray) -> dict[str, np.ndarray]:
    """``[n_frames - n_past, H, W]`` masks of where the arm is now, was at frame n_past−1, and objects moved;
    ``frames`` (uint8 [T,H,W,3]) are the data's, to check that the simulation reproduces them."""
    from lab5.sim.generate import sequence_seed
    from lab5.sim.render import render_states
    from lab5.sim.world import simulate_states

    states = simulate_states(sequence_seed(base_seed, split, index), n_frames)
    full, bare = render_states(states), render_states(states, arm=False)
    if not np.array_equal(full, frames):
        raise ValueError(f"re-simulating {split} sequence {index} of seed {base_seed} does not reproduce its frames")
    drawn = (full != bare).any(-1)  # [T,H,W]: pixels the arm's drawing touched
    last = n_past - 1
    return {"arm": drawn[n_past:], "was_arm": np.broadcast_to(drawn[last], drawn[n_past:].shape),
            "objects": (bare[n_past:] != bare[last]).any(-1)}


def split_regions(changed: "torch.Tensor", masks: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """The changed pixels ``[B,T,H,W]`` split into `REGIONS` (disjoint, together all of them)."""
    arm = changed & masks["arm"]
    uncovered = changed & masks["was_arm"] & ~masks["arm"]
    objects = changed & masks["objects"] & ~masks["arm"] & ~masks["was_arm"]
    return {"arm": arm, "uncovered": uncovered, "objects": objects, "other": changed & ~(arm | uncovered | objects)}


def region_scores(pred: "torch.Tensor", truth: "torch.Tensor", changed: "torch.Tensor",
                  regions: dict[str, "torch.Tensor"]) -> dict[str, object]:
    """Per region: share of the changed pixels and of their squared error, pooled PSNR; and the changed-pixel
    score (mean of the per-frame PSNR) of ``pred`` and of ``pred`` with the truth pasted into each region."""
    import torch

    from lab5.evaluate import nan_summary
    from lab5.metrics import changed_psnr_per_frame

    def score(p: torch.Tensor) -> float:  # as evaluate's changed-pixel mean
        return nan_summary(changed_psnr_per_frame(p, truth, changed).numpy())["mean"]

    err = ((pred.double() - truth.double()) ** 2).mean(2)  # [B,T,H,W], channels pooled
    total_err, total_px = float((err * changed).sum()), float(changed.sum())
    out: dict[str, object] = {"score": score(pred), "regions": {}}
    for name, m in regions.items():
        e, n = float((err * m).sum()), float(m.sum())
        out["regions"][name] = {
            "pixel_share": n / total_px, "error_share": e / total_err if total_err else 0.0,
            "psnr": 10 * np.log10(n / e) if n and e else None,
            "score_with_truth_here": score(torch.where(m[:, :, None], truth, pred)) if n else None}
    return out


def db(value: float | None) -> str:
    """A dB figure of the table, or a dash where there is none."""
    return "–" if value is None else f"{value:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="checkpoints/demo", help="a run directory or exported checkpoint")
    parser.add_argument("--data", type=Path, help="embedded data root (default: the evaluation set, seed 1)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--sequences", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="the sampling seed of the model's z")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    from lab5.data.dataset import BairDataset
    from lab5.data.layout import DatasetError
    from lab5.evaluate import PROTOCOLS
    from lab5.metrics import changed_mask, copy_last
    from lab5.rundir import CheckpointError, load_model
    from lab5.sim import embedded_root
    from lab5.sim.replay import embedded_seed

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    protocol = PROTOCOLS["lab"]
    n_past, T = protocol.n_past, protocol.n_frames
    try:
        root = args.data or embedded_root(evaluation=True)
        base = embedded_seed(root)
        model, _, _ = load_model(args.checkpoint)
        ds = BairDataset(root, args.split, n_frames=T, validate=False)
    except (DatasetError, CheckpointError, OSError) as exc:
        print(f"changed_regions: {exc}", file=sys.stderr)
        return 2
    n = min(args.sequences, len(ds))
    x = torch.stack([ds[i][0] for i in range(n)])
    c = torch.stack([ds[i][1] for i in range(n)])
    try:
        masks = [region_masks(base, args.split, i, n_past, T,
                              (x[i] * 255).round().byte().permute(0, 2, 3, 1).numpy()) for i in range(n)]
    except ValueError as exc:
        print(f"changed_regions: {root}: {exc} (not the embedded set this simulator generates)", file=sys.stderr)
        return 2
    masks_t = {k: torch.from_numpy(np.stack([m[k] for m in masks])) for k in masks[0]}
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        pred = torch.cat([model.generate(x[i:i + 32], c[i:i + 32], n_past, protocol.n_future, gen)
                          for i in range(0, n, 32)])
    last_rep, truth = copy_last(x, n_past, protocol.n_future)
    changed = changed_mask(x[:, n_past - 1], truth)
    regions = split_regions(changed, masks_t)
    results = {"checkpoint": str(args.checkpoint), "data": str(root), "split": args.split, "sequences": n,
               "changed_fraction": float(changed.double().mean()),
               "model": region_scores(pred, truth, changed, regions),
               "copy_last": region_scores(last_rep, truth, changed, regions)}
    print(f"{args.checkpoint} on {n} sequences of {root} ({args.split}), lab protocol, 1 sample; "
          f"changed pixels {results['changed_fraction']:.1%} of the predicted frames")
    for who in ("model", "copy_last"):
        r = results[who]
        print(f"\n{who}: changed-pixel score {r['score']:.2f} dB")
        print("| region | share of changed px | share of squared error | PSNR (dB) | score with the truth there |")
        print("|---|---|---|---|---|")
        for name in REGIONS:
            g = r["regions"][name]
            print(f"| {name} | {g['pixel_share']:.1%} | {g['error_share']:.1%} | {db(g['psnr'])} | "
                  f"{db(g['score_with_truth_here'])} |")
    print(f"\n{time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
