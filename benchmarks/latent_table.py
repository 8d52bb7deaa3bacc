"""Benchmark: the README's table of what z and the actions do, for the shipped checkpoints.

Evaluates checkpoints/demo and the three latent-* checkpoints under the lab protocol (2 -> 10
frames, prior z, predictions fed back) on the embedded evaluation set (a seed not used in
training), with ``--samples`` samples per sequence, plus counterfactual actions for the models that
read actions. Prints a markdown table (whole frames and changed pixels) and the targets of issue
"Evidence that holds", and writes every result as JSON.

    python benchmarks/latent_table.py --samples 20 --json benchmarks/results/latent_table.json

``--runs`` evaluates some of the checkpoints (labels separated by ";") and merges them into the
JSON file's results from an earlier call; the table and checks cover whatever the file then holds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEMO = "demo (fixed prior, beta -> 1)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--max-sequences", type=int, default=0, help="0: the whole test split")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", default="", help="labels to evaluate, separated by ';' (default all), merged into --json")
    args = parser.parse_args()

    import torch

    from lab5.data.dataset import BairDataset
    from lab5.evaluate import PROTOCOLS, compare_models, evaluate_model, replayable
    from lab5.files import home
    from lab5.rundir import SHIPPED_LATENT, load_model, shipped_demo
    from lab5.sim import embedded_root

    torch.set_num_threads(args.threads)
    root = embedded_root(evaluation=True)
    data = BairDataset(root, "test", n_frames=PROTOCOLS["lab"].n_frames)
    # Every shipped run by its label; only the ones evaluated need to exist (--runs).
    runs = {DEMO: shipped_demo(), **{label: home() / "checkpoints" / name for label, name in SHIPPED_LATENT.items()}}
    chosen = [r.strip() for r in args.runs.split(";") if r.strip()] or list(runs)
    unknown = [r for r in chosen if r not in runs]
    if unknown:
        parser.error(f"--runs: unknown {unknown} (known: {', '.join(runs)})")
    earlier = json.loads(args.json.read_text()) if args.runs and args.json and args.json.is_file() else {}
    if earlier and earlier["samples"] != args.samples:
        parser.error(f"{args.json} holds results of {earlier['samples']} samples, not {args.samples}")
    results, seconds = earlier.get("results", {}), earlier.get("seconds", {})
    for label in chosen:
        path = runs[label]
        t0 = time.perf_counter()
        model, _, _ = load_model(path)
        results[label] = evaluate_model(model, data, "lab", samples=args.samples, max_sequences=args.max_sequences,
                                        progress=False, counterfactual_root=root if replayable(model, root) else None)
        seconds[label] = time.perf_counter() - t0
        print(f"{label}: {seconds[label]:.0f} s", flush=True)

    results = {label: results[label] for label in runs if label in results}  # the table's row order
    if args.json:  # first: a failure below never loses the evaluations
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"samples": args.samples, "data": str(root), "seconds": seconds,
                                         "results": results}, indent=2) + "\n")
    table = compare_models(results)
    print("\n| model | " + " | ".join(table) + " |")
    print("|---" * (len(table) + 1) + "|")
    for label in results:
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v)
                 for v in (table[col].get(label, "–") for col in table)]
        print(f"| {label} | " + " | ".join(cells) + " |")

    checks = done_when(results) if len(results) == len(runs) else {}
    print()
    for name, value in checks.items():
        print(f"{name}: {value:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"samples": args.samples, "data": str(root), "seconds": seconds,
                                         "checks": checks, "results": results}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def done_when(results: dict) -> dict[str, float]:
    """Issue "Evidence that holds": its targets, as measured differences (each line names its threshold)."""
    free, start, demo = results["LP, action-free"], results["LP, actions+start"], results[DEMO]
    cf = start["counterfactual"]
    return {
        "actions+start: counterfactual - factual conditions, changed pixels (>= 2 dB)":
            cf["changed_psnr"] - cf["factual_conditions"]["changed_psnr"],
        "actions+start: counterfactual - factual conditions, whole frames (>= 0.5 dB)":
            cf["psnr"] - cf["factual_conditions"]["psnr"],
        "actions+start: best-of-N - mean, changed pixels (>= 0.5 dB)":
            start["best_of_n"]["changed_psnr"]["best"] - start["best_of_n"]["changed_psnr"]["mean"],
        "actions+start: test-time KL, nats per frame (>= 0.5)": start["kl"]["mean"],
        "action-free LP: best-of-N - mean (>= 1.0 dB)": free["best_of_n"]["psnr"]["best"] - free["psnr"]["mean"],
        "demo: changed-pixel PSNR (>= 22 dB)": demo["changed"]["psnr"]["mean"],
        "demo: whole frames - copy-last (>= 5 dB)": demo["psnr"]["mean"] - demo["copy_last"]["psnr"],
        "contact fraction, real": cf["contact_fraction"]["real"],
        "contact fraction, counterfactual": cf["contact_fraction"]["counterfactual"],
    }


if __name__ == "__main__":
    raise SystemExit(main())
