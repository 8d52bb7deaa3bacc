"""Benchmark: how strongly a checkpoint's predictor reads each condition column.

The predictor's first layer takes [h, z, c]; for each condition column it prints the largest weight
(over the layer's units) on the column as the predictor sees it (standardised with ``cond_norm``),
and what a change of one pixel of arm motion (0.0125 m; an action step of 0.025 m, which moves the
arm one pixel) does to the layer's input: at most that weight times the change as seen. A frame code h
entry is of order 1, so a pixel that moves the layer by a hundredth is hard to draw precisely.

    python benchmarks/condition_weights.py checkpoints/demo
"""

from __future__ import annotations

import argparse
import sys

from lab5.sim.world import M_PER_PX  # one pixel of the 64x64 image, in metres

# The change of each BAIR condition column that moves the arm by one pixel (actions are held for two
# frames, half of the step each): dx, dy (m per held pair), then the positions x, y (m); none for the
# closure, the height command and z.
PIXEL_STEP = {"dx": 2 * M_PER_PX, "dy": 2 * M_PER_PX, "x": M_PER_PX, "y": M_PER_PX}
COLUMNS = ("dx", "dy", "closure", "height", "x", "y", "z")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="+", help="run directories or exported checkpoints")
    args = parser.parse_args()

    from lab5.rundir import CheckpointError, load_model

    for path in args.checkpoint:
        try:
            model, cfg, _ = load_model(path)
        except CheckpointError as exc:
            print(f"condition_weights: {exc}", file=sys.stderr)
            return 2
        w = model.predictor.embed.weight.detach()
        first = cfg.g_dim + model.z_dim
        std = model.cond_std if cfg.cond_norm else None
        print(f"{path}: condition {cfg.condition}, cond_norm {cfg.cond_norm}; frame code h: median column "
              f"max |w| {w[:, :cfg.g_dim].abs().amax(0).median():.3f}")
        print("| column | max abs weight | one pixel of arm motion moves the layer by at most |")
        print("|---|---|---|")
        for j, name in enumerate(COLUMNS[:w.shape[1] - first]):
            top = float(w[:, first + j].abs().max())
            step = PIXEL_STEP.get(name)
            seen = None if step is None else step / (float(std[j]) if std is not None else 1.0)
            print(f"| {name} | {top:.2f} | {'–' if seen is None else f'{top * seen:.3f}'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
