"""Benchmark: what the embedded scenes' hidden masses and frictions do, and what they leave alone.

For the first ``--sequences`` scenes of a split, replays each scene's own actions with every object
at the lightest and most slippery (DENSITY[0], FRICTION[0]) and at the heaviest and roughest
(DENSITY[1], FRICTION[1]), and prints: the largest end-effector difference (0: the gripper obeys its
actions whatever the hidden properties), the share of scenes in which an object is pushed, and, in
those, how far apart the two replays put the objects (the largest object-position difference, px)
at frames 11 and 29. Also the share of scenes with a push in frames 1-11 for the data's actions and
for the counterfactual pushes of ``lab5.sim.replay``.

    python benchmarks/hidden_spread.py --sequences 200
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1, help="the embedded set's seed (1: the evaluation set)")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()

    from lab5.sim.replay import counterfactual_actions
    from lab5.sim.generate import sequence_seed
    from lab5.sim.world import DENSITY, FRICTION, make_scene, simulate_states

    ee, spread, pushed, real, new = [], [], [], [], []
    for i in range(args.sequences):
        seed = sequence_seed(args.seed, args.split, i)
        own = simulate_states(seed)
        scene = make_scene(seed)
        ends = [simulate_states(seed, actions=own["actions"], scene=replace(scene, objects=tuple(
                    replace(o, density=d, friction=f) for o in scene.objects)))
                for d, f in ((DENSITY[0], FRICTION[0]), (DENSITY[1], FRICTION[1]))]
        ee.append(float(np.abs(ends[0]["endeffector"] - ends[1]["endeffector"]).max()))
        gap = np.linalg.norm(ends[0]["object_pos"] - ends[1]["object_pos"], axis=-1).max(1)  # [T] px
        if own["touched"][1:].any():
            pushed.append(i)
            spread.append((gap[11], gap[29]))
        real.append(bool(own["touched"][1:12].any()))
        cf = simulate_states(seed, 12, actions=counterfactual_actions(seed, 12, 2))
        new.append(bool(cf["touched"][1:12].any()))
    s = np.array(spread)
    print(f"{args.sequences} scenes of seed {args.seed}, split {args.split}; density {DENSITY}, friction {FRICTION}")
    print(f"largest end-effector difference between the extremes: {max(ee):.3g} m")
    print(f"scenes with a push in frames 1-29: {len(pushed) / args.sequences:.0%}")
    for k, t in enumerate((11, 29)):
        print(f"object-position gap between the extremes at frame {t}, scenes with a push: median "
              f"{np.median(s[:, k]):.2f} px, 75th percentile {np.percentile(s[:, k], 75):.2f}, "
              f"90th {np.percentile(s[:, k], 90):.2f}, > 2 px in {np.mean(s[:, k] > 2):.0%}")
    print(f"scenes with a push in frames 1-11: data's actions {np.mean(real):.0%}, counterfactual {np.mean(new):.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
