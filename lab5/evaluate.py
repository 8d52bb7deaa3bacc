"""Evaluation under the lab's protocol (2 -> 10 frames, one sample) or the papers' (``svg``: 2 -> 28, best of 100),
with the grader's metrics (``finn_eval_seq`` of SVG's utils.py: PSNR and SSIM per colour channel, averaged),
best-of-N, and the baselines in the same table: copy-last-frame and the model given another sequence's conditions.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lab5.config import CONDITIONS, ConfigError
from lab5.files import progress_bar, write_atomic
from lab5.metrics import (CHANGED_THRESHOLD, changed_mask, changed_psnr_per_frame, copy_last, psnr_per_frame,
                          ssim_per_frame)
from lab5.models.cvae import CVAE
from lab5.sim.generate import MANIFEST
from lab5.sim.replay import counterfactual_data

Z_SOURCE = "posterior z on conditioning frames, prior z on predicted frames"
PSNR_TEXT = ("10*log10(1/MSE) per colour channel, pixels in [0,1], averaged over the channels "
             "(the grader's finn_eval_seq), then over predicted frames and sequences")
SSIM_TEXT = ("per colour channel with an 11x11 Gaussian window (sigma 1.5), valid border, data range 1, "
             "averaged over the channels (finn_ssim), then over predicted frames and sequences")
BEST_TEXT = ("per sequence, the sample with the highest SSIM averaged over its predicted frames "
             "(SVG's generate_svg_lp.py); by PSNR when SSIM is not computed: the truth picks the sample")
CHANGED_TEXT = ("PSNR over the pixels of each predicted frame that differ from the last conditioning frame by "
                f"more than {CHANGED_THRESHOLD} in some channel (channels pooled), averaged over the predicted "
                "frames that have such pixels and over sequences")
CHANGED_BEST_TEXT = ("per sequence, the sample with the highest changed-pixel PSNR: the truth picks the sample "
                     "on this metric")


@dataclass(frozen=True)
class Protocol:
    name: str
    n_past: int
    n_future: int
    samples: int

    @property
    def n_frames(self) -> int:
        return self.n_past + self.n_future


PROTOCOLS = {"lab": Protocol("lab", 2, 10, 1), "svg": Protocol("svg", 2, 28, 100)}
BEST_OF_N = (1, 2, 5, 10, 20, 100)


def get_protocol(name: str | Protocol) -> Protocol:
    if isinstance(name, Protocol):
        return name
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol '{name}' (known: {', '.join(PROTOCOLS)})")
    return PROTOCOLS[name]


def nan_summary(values: np.ndarray) -> dict[str, Any]:
    """Mean and per-frame curve of a ``[sequences, frames]`` array, NaN entries (no changed pixel) left out."""
    with warnings.catch_warnings():  # a frame with no changed pixel in any sequence stays NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        return {"mean": float(np.nanmean(values)), "per_frame": [float(v) for v in np.nanmean(values, 0)]}


def changed_scores(last: torch.Tensor, truth: torch.Tensor, preds: dict[str, torch.Tensor],
                   threshold: float = CHANGED_THRESHOLD) -> dict[str, Any]:
    """The changed-pixel block of the JSON: ``threshold``, ``fraction`` and per prediction ``psnr``."""
    mask = changed_mask(last, truth, threshold)
    return {"threshold": threshold, "fraction": float(mask.double().mean()), "what": CHANGED_TEXT,
            **{name: {"psnr": nan_summary(changed_psnr_per_frame(p, truth, mask).numpy())}
               for name, p in preds.items()}}


class ShuffledConditions(Dataset):
    """Frames of sequence i with another sequence's conditions (a fixed derangement) in ``columns`` (default all)."""

    def __init__(self, dataset: Dataset, seed: int = 0, columns: slice = slice(None)) -> None:
        n = len(dataset)
        if n < 2:
            raise ValueError("shuffling conditions across sequences needs at least 2 sequences")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        self.source = torch.empty(n, dtype=torch.long)
        self.source[perm] = perm.roll(-1)  # each sequence takes the next one's conditions in a cycle
        self.dataset, self.columns = dataset, columns

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        frames, cond = self.dataset[i]
        cond = cond.clone()
        cond[..., self.columns] = self.dataset[int(self.source[i])][1][..., self.columns]
        return frames, cond


def stack_frames(dataset: Dataset, n_frames: int, max_sequences: int = 0) -> torch.Tensor:
    """The first ``n_frames`` frames of the first ``max_sequences`` (0: all) sequences, ``[N,T,3,H,W]``."""
    n = min(max_sequences or len(dataset), len(dataset))
    return torch.stack([dataset[i][0][:n_frames] for i in range(n)])


def summary(values: np.ndarray) -> dict[str, Any]:
    """Mean and per-frame curve of a ``[sequences, frames]`` array."""
    return {"mean": float(values.mean()), "per_frame": [float(v) for v in values.mean(0)]}


def best_of(psnr: np.ndarray, ssim: np.ndarray | None) -> dict[str, Any]:
    """Best-of-N of ``[sequences, samples, frames]`` metrics (``BEST_TEXT``): the chosen (best) and the
    last-ranked (worst) sample's PSNR and SSIM, the mean over all samples, and the best's per-frame curves."""
    rank = (ssim if ssim is not None else psnr).mean(2)
    rows, best, worst = np.arange(len(rank)), rank.argmax(1), rank.argmin(1)
    out: dict[str, Any] = {"n": psnr.shape[1], "chosen_by": BEST_TEXT, "per_frame": {}}
    for name, values in (("psnr", psnr), ("ssim", ssim)):
        if values is not None:
            out[name] = {"mean": float(values.mean()), "best": float(values[rows, best].mean()),
                         "worst": float(values[rows, worst].mean())}
            out["per_frame"][name] = [float(v) for v in values[rows, best].mean(0)]
    return out


def best_changed(changed: np.ndarray) -> dict[str, Any]:
    """Best, worst and mean sample by changed-pixel PSNR (``CHANGED_BEST_TEXT``); sequences with none left out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_sample = np.nanmean(changed, 2)
    keep = ~np.isnan(per_sample).all(1)
    per_sample = per_sample[keep]
    return {"best": float(per_sample.max(1).mean()), "mean": float(per_sample.mean()),
            "worst": float(per_sample.min(1).mean()), "chosen_by": CHANGED_BEST_TEXT}


def best_of_n_curve(psnr: np.ndarray, ssim: np.ndarray | None) -> dict[str, list]:
    """Best-of-n over the first n samples, for n = 1, 2, 5, 10, 20, 100 up to the samples drawn."""
    ns = [n for n in BEST_OF_N if n < psnr.shape[1]] + [psnr.shape[1]]
    chosen = [best_of(psnr[:, :n], None if ssim is None else ssim[:, :n]) for n in ns]
    return {"n": ns, **{k: [c[k]["best"] for c in chosen] for k in ("psnr", "ssim") if k in chosen[0]}}


@torch.no_grad()
def sample_metrics(model: CVAE, dataset: Dataset, protocol: Protocol, samples: int, seed: int,
                   device: str | torch.device, batch_size: int = 32, with_ssim: bool = True, tag: str = "generate",
                   progress: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, float]:
    """PSNR, SSIM and changed-pixel PSNR ``[sequences, samples, frames]`` of ``samples`` predictions per
    sequence, and the samples' diversity: the per-pixel standard deviation across samples, averaged."""
    n_past, T = protocol.n_past, protocol.n_frames
    gen = torch.Generator(device=device).manual_seed(seed)
    psnr, ssim, changed, spread = [], [], [], 0.0
    for x, c in progress_bar(DataLoader(dataset, batch_size=batch_size), desc=tag, disable=not progress, leave=False):
        x, c = x[:, :T].to(device), c[:, :T].to(device)
        truth, p_s, s_s, c_s, total, squares = x[:, n_past:T], [], [], [], 0.0, 0.0
        mask = changed_mask(x[:, n_past - 1], truth)
        for _ in range(samples):  # one sample at a time: 100 of them would not fit in memory together
            pred = model.generate(x, c, n_past, protocol.n_future, gen)
            p_s.append(psnr_per_frame(pred, truth).cpu().numpy())
            c_s.append(changed_psnr_per_frame(pred, truth, mask).cpu().numpy())
            if with_ssim:
                s_s.append(ssim_per_frame(pred, truth))
            total, squares = total + pred.double(), squares + pred.double() ** 2
        psnr.append(np.stack(p_s, 1))
        changed.append(np.stack(c_s, 1))
        if with_ssim:
            ssim.append(np.stack(s_s, 1))
        variance = (squares / samples - (total / samples) ** 2).clamp_min(0)
        spread += float(variance.sqrt().mean()) * len(x)
    return (np.concatenate(psnr), (np.concatenate(ssim) if with_ssim else None), np.concatenate(changed),
            spread / len(dataset))


@torch.no_grad()
def test_kl(model: CVAE, dataset: Dataset, protocol: Protocol, device: str | torch.device,
            batch_size: int = 32) -> dict[str, Any]:
    """KL(q(z_t | x_<=t) ‖ p(z_t | x_<t)) at test time, in nats per frame, for frames 1..T−1 along the
    true frames: how much the posterior, which sees frame t, knows that the prior does not."""
    T = protocol.n_frames
    per_frame = np.zeros(T - 1)
    for x, c in DataLoader(dataset, batch_size=batch_size):
        per_frame += model.kl_per_frame(x[:, :T].to(device), c[:, :T].to(device)).double().cpu().numpy() * len(x)
    per_frame /= len(dataset)
    return {"mean": float(per_frame.mean()), "per_frame": [float(v) for v in per_frame],
            "what": f"nats per frame, frames 1..{T - 1}, posterior and prior along the true frames"}


def shuffles(model: CVAE, dataset: Dataset, run: dict[str, Any]) -> dict[str, Any]:
    """The model given another sequence's actions, end-effector positions, or both: how much it depends on each."""
    a = model.action_dim
    kinds = {"shuffled_conditions": (slice(None), "actions and end-effector positions of another sequence"),
             "shuffled_actions_only": (slice(0, a), "actions of another sequence, its own end-effector positions"),
             "shuffled_positions_only": (slice(a, None), "end-effector positions of another sequence, its own actions")}
    # A shuffle of columns the model never reads measures nothing (actions+start reads the positions of
    # the conditioning frames only: shuffling them is part of shuffling the conditions).
    actions, positions = CONDITIONS[model.cfg.condition]
    used = set(kinds) if positions == "all" else {"shuffled_conditions", "shuffled_actions_only"} if actions else set()
    out: dict[str, Any] = {}
    for key, (columns, what) in kinds.items():
        if key not in used:
            continue
        psnr, _, _, _ = sample_metrics(model, ShuffledConditions(dataset, run["seed"], columns), samples=1,
                                       with_ssim=False, tag=key, **run)
        out[key] = {"psnr": float(psnr.mean()), "what": f"same model, {what}"}
    if out:
        out["shuffled_actions"] = out["shuffled_conditions"]  # the name before the three were told apart
    return out


@torch.no_grad()
def evaluate_model(model: CVAE, dataset: Dataset, protocol: str | Protocol = "lab", samples: int | None = None,
                   batch_size: int = 32, seed: int = 0, device: str | torch.device = "cpu",
                   max_sequences: int = 0, split: str = "test", with_ssim: bool = True,
                   with_shuffled: bool = True, progress: bool = True,
                   counterfactual_root: str | Path | None = None) -> dict[str, Any]:
    """The results dict of ``lab5 evaluate --json`` (``samples``: the protocol's unless given), with the
    counterfactual when ``counterfactual_root`` names the embedded data ``dataset`` comes from."""
    p = get_protocol(protocol)
    samples = samples or p.samples
    if max_sequences:
        dataset = torch.utils.data.Subset(dataset, range(min(max_sequences, len(dataset))))
    frames = dataset[0][0].shape[0]
    if frames < p.n_frames:
        raise ConfigError(f"protocol '{p.name}' needs sequences of {p.n_frames} frames, the dataset gives {frames}")
    model.eval()
    run = dict(protocol=p, seed=seed, device=device, batch_size=batch_size, progress=progress)
    psnr, ssim, changed, pixel_std = sample_metrics(model, dataset, samples=samples, with_ssim=with_ssim, **run)
    copy_pred, truth = copy_last(stack_frames(dataset, p.n_frames), p.n_past, p.n_future)
    copy_psnr = summary(psnr_per_frame(copy_pred, truth).numpy())
    copy_changed = changed_scores(copy_pred[:, 0], truth, {"copy_last": copy_pred})
    results: dict[str, Any] = {
        "protocol": {"name": p.name, "split": split, "sequences": len(dataset), "n_past": p.n_past,
                     "n_future": p.n_future, "samples": samples, "z": Z_SOURCE, "condition": model.cfg.condition,
                     "feedback": "predictions fed back (teacher forcing 0)", "psnr": PSNR_TEXT,
                     **({"ssim": SSIM_TEXT} if with_ssim else {}), "seed": seed},
        "psnr": summary(psnr.mean(1)),
        "changed": {"threshold": copy_changed["threshold"], "fraction": copy_changed["fraction"],
                    "psnr": nan_summary(changed.mean(1)), "what": CHANGED_TEXT},
        "copy_last": {"psnr": copy_psnr["mean"], "psnr_per_frame": copy_psnr["per_frame"],
                      "changed": copy_changed["copy_last"]},
        "kl": test_kl(model, dataset, p, device, batch_size),
    }
    if with_ssim:
        copy_ssim = ssim_per_frame(copy_pred, truth)
        results["ssim"] = summary(ssim.mean(1))
        results["copy_last"].update(ssim=float(copy_ssim.mean()), ssim_per_frame=summary(copy_ssim)["per_frame"])
    if with_shuffled and len(dataset) >= 2:
        results.update(shuffles(model, dataset, run))
    if samples > 1:
        results.update(best_of_n={**best_of(psnr, ssim), "changed_psnr": best_changed(changed)},
                       best_of_n_curve=best_of_n_curve(psnr, ssim),
                       diversity={"pixel_std": pixel_std, "what": "per-pixel standard deviation across the "
                                  "samples, averaged over pixels, frames and sequences"})
    if counterfactual_root is not None:
        results["counterfactual"] = counterfactual(model, dataset, counterfactual_root, split, p, seed, device,
                                                   max_sequences)
    return results


@torch.no_grad()
def counterfactual(model: CVAE, dataset: Dataset, root: str | Path, split: str = "test",
                   protocol: str | Protocol = "lab", seed: int = 0, device: str | torch.device = "cpu",
                   max_sequences: int = 0) -> dict[str, Any]:
    """Scores on the counterfactual truth (``sim.replay``) of the model given the new actions (one prior sample),
    the same model given the factual conditions (same noise: it ignores the new actions), and copy-last-frame."""
    p = get_protocol(protocol)
    data = counterfactual_data(dataset, root, split, p.n_past, p.n_frames, max_sequences)
    x = data["x"]
    model.eval()
    preds = {name: model.generate(x.to(device), c.to(device), p.n_past, p.n_future,
                                  torch.Generator(device=device).manual_seed(seed)).cpu()
             for name, c in (("model", data["c"]), ("factual_conditions", data["factual_c"]))}
    preds["copy_last"], truth = copy_last(x, p.n_past, p.n_future)
    changed = changed_scores(x[:, p.n_past - 1], truth, preds)

    def scores(name: str, ssim: bool = True) -> dict[str, float]:
        out = {"psnr": float(psnr_per_frame(preds[name], truth).mean()),
               "changed_psnr": changed[name]["psnr"]["mean"]}
        return {**out, "ssim": float(ssim_per_frame(preds[name], truth).mean())} if ssim else out

    return {**scores("model"), "copy_last": scores("copy_last"),
            "factual_conditions": scores("factual_conditions", ssim=False),
            "changed_fraction": changed["fraction"], "contact_fraction": data["contact_fraction"],
            "sequences": len(x),
            "what": "each test scene re-simulated from its own start, its own actions up to the last conditioning "
                    "frame and then another push of the same random policy; the model given those actions (and "
                    "positions); factual_conditions: the same model given the data's conditions (it ignores the "
                    "new actions)"}


def replayable(model: CVAE, root: str | Path) -> bool:
    """Whether the model reads actions and ``root`` is embedded data the simulator can replay."""
    return CONDITIONS[model.cfg.condition][0] and (Path(root) / MANIFEST).is_file()


def compare_protocols(model: CVAE, dataset: Dataset, seed: int = 0, device: str | torch.device = "cpu",
                      max_sequences: int = 4) -> dict[str, dict[str, float]]:
    """The same model on the same first sequences under both protocols, as ``{column: {row: value}}`` (the lab
    column alone when the sequences are shorter than the svg protocol's 30 frames)."""
    opts = dict(seed=seed, device=device, max_sequences=max_sequences, with_shuffled=False, progress=False)
    lab = evaluate_model(model, dataset, "lab", **opts)
    table = {"lab (2 -> 10, 1 sample)": {"PSNR (dB)": lab["psnr"]["mean"], "SSIM": lab["ssim"]["mean"]}}
    if dataset[0][0].shape[0] >= PROTOCOLS["svg"].n_frames:
        svg = evaluate_model(model, dataset, "svg", **opts)
        best = svg["best_of_n"]
        table["svg, mean of 100 (2 -> 28)"] = {"PSNR (dB)": svg["psnr"]["mean"], "SSIM": svg["ssim"]["mean"]}
        table["svg, best of 100 (2 -> 28)"] = {"PSNR (dB)": best["psnr"]["best"], "SSIM": best["ssim"]["best"]}
    return table


def compare_models(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Several models' ``evaluate_model`` results side by side, as ``{column: {model: value}}``."""
    columns: dict[str, dict[str, Any]] = {}
    for name, r in results.items():
        n, best = r["protocol"]["samples"], r.get("best_of_n", {})
        row = {"condition": r["protocol"]["condition"], "sequences": r["protocol"]["sequences"]}
        for label, key, mean in (("PSNR", "psnr", r["psnr"]["mean"]), ("SSIM", "ssim", r["ssim"]["mean"]),
                                 ("changed-pixel PSNR", "changed_psnr", r["changed"]["psnr"]["mean"])):
            row.update({f"{label} mean of {n}": mean, f"{label} best of {n}": best.get(key, {}).get("best", mean)})
        row.update({"copy-last PSNR": r["copy_last"]["psnr"],
                    "copy-last changed-pixel PSNR": r["copy_last"]["changed"]["psnr"]["mean"],
                    "test KL (nats/frame)": r["kl"]["mean"],
                    "pixel std (%)": 100 * r.get("diversity", {}).get("pixel_std", 0.0)})
        if "counterfactual" in r:
            cf = r["counterfactual"]
            row.update({"counterfactual PSNR": cf["psnr"], "given factual conditions": cf["factual_conditions"]["psnr"],
                        "counterfactual changed-pixel PSNR": cf["changed_psnr"],
                        "given factual conditions, changed": cf["factual_conditions"]["changed_psnr"],
                        "copy-last on it, changed": cf["copy_last"]["changed_psnr"]})
        for column, value in row.items():
            columns.setdefault(column, {})[name] = value
    return columns


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of the results, headed by the protocol it was measured under."""
    p = results["protocol"]
    lines = [f"protocol '{p['name']}': {p['n_past']} conditioning + {p['n_future']} predicted frames; {p['z']}; "
             f"{p['feedback']}; {p['samples']} sample(s) per sequence; split '{p['split']}', "
             f"{p['sequences']} sequences",
             f"condition: {p['condition']}; changed pixels: {results['changed']['fraction']:.1%} of the predicted "
             f"frames' pixels differ from the last conditioning frame by > {results['changed']['threshold']}",
             f"{'method':<40}{'PSNR (dB)':>10}{'SSIM':>8}{'changed px (dB)':>17}"]

    def row(name: str, psnr: float, ssim: float | None, changed: float | None) -> None:
        ssim_txt = f"{ssim:8.3f}" if ssim is not None and not math.isnan(ssim) else f"{'-':>8}"
        changed_txt = f"{changed:17.2f}" if changed is not None else f"{'-':>17}"
        lines.append(f"{name:<40}{psnr:10.2f}{ssim_txt}{changed_txt}")

    row("CVAE (mean over samples)", results["psnr"]["mean"], results.get("ssim", {}).get("mean"),
        results["changed"]["psnr"]["mean"])
    if "best_of_n" in results:
        b = results["best_of_n"]
        for k in ("best", "worst"):
            row(f"CVAE {k} of {b['n']} (the truth picks)", b["psnr"][k], b.get("ssim", {}).get(k),
                b["changed_psnr"][k])
    row("copy last frame", results["copy_last"]["psnr"], results["copy_last"].get("ssim"),
        results["copy_last"]["changed"]["psnr"]["mean"])
    for key, name in (("shuffled_conditions", "conditions"), ("shuffled_actions_only", "actions only"),
                      ("shuffled_positions_only", "positions only")):
        if key in results:
            row(f"CVAE, shuffled {name}", results[key]["psnr"], None, None)
    if "counterfactual" in results:
        cf = results["counterfactual"]
        for name, score in (("CVAE given the new actions", cf), ("CVAE given factual ones", cf["factual_conditions"]),
                            ("copy last frame", cf["copy_last"])):
            row(f"counterfactual: {name}", score["psnr"], score.get("ssim"), score["changed_psnr"])
    return "\n".join(lines)


def read_results(results: dict[str, Any]) -> str:
    """What the table says, in sentences written from its numbers (rounded as printed)."""
    psnr, copy = results["psnr"]["mean"], results["copy_last"]["psnr"]
    gain = psnr - copy
    lines = [f"The CVAE is {abs(gain):.2f} dB {'above' if gain >= 0 else 'below'} copy-last-frame in PSNR "
             f"({psnr:.2f} against {copy:.2f} dB)"]
    if "ssim" in results and "ssim" in results["copy_last"]:
        d = results["ssim"]["mean"] - results["copy_last"]["ssim"]
        lines[0] += f" and {abs(d):.3f} {'above' if d >= 0 else 'below'} it in SSIM"
    lines[0] += (": it has learned something of how the scene moves." if gain > 0.5 else
                 ": it has learned little more than holding the last frame.")
    if "shuffled_actions" in results:
        cost = psnr - results["shuffled_actions"]["psnr"]
        lines.append(f"Giving it another sequence's conditions costs {cost:.2f} dB"
                     + (": it uses them." if cost > 0.5 else ": it hardly uses them."))
    if "shuffled_actions_only" in results:
        only = psnr - results["shuffled_actions_only"]["psnr"]
        lines.append(f"Other actions with its own end-effector positions cost {only:.2f} dB"
                     + (": the positions, the arm's true future, tell it most of what it uses."
                        if only < 0.5 else ": it uses the actions themselves."))
    changed, copy_changed = results["changed"]["psnr"]["mean"], results["copy_last"]["changed"]["psnr"]["mean"]
    lines.append(f"On the {results['changed']['fraction']:.1%} of pixels that change it scores {changed:.2f} dB "
                 f"(copy-last {copy_changed:.2f}): whole-frame PSNR is mostly the static background.")
    if "counterfactual" in results:
        lines.append(read_counterfactual(results["counterfactual"], results["protocol"]["condition"]))
    if "best_of_n" in results:
        b = results["best_of_n"]["psnr"]
        lines.append(f"The best and worst of {results['best_of_n']['n']} samples, picked by comparing each with the "
                     f"truth, differ by {b['best'] - b['worst']:.2f} dB: the uncertainty its latent z carries"
                     + (" is small." if b["best"] - b["worst"] < 0.5 else "."))
    return "\n".join(lines)


def read_counterfactual(cf: dict[str, Any], condition: str) -> str:
    """One sentence on the counterfactual: the gain of the new actions over the factual conditions, read
    against the issue's bar (>= 2 dB on changed pixels and >= 0.5 dB on whole frames) and the condition."""
    gain = cf["psnr"] - cf["factual_conditions"]["psnr"]
    changed = cf["changed_psnr"] - cf["factual_conditions"]["changed_psnr"]
    line = (f"Given another push of the same scene, it scores {gain:+.2f} dB on whole frames and {changed:+.2f} dB "
            f"on changed pixels against its own prediction from the factual conditions on that truth")
    if CONDITIONS[condition][1] == "all":
        return line + (": it is also given the positions the new actions lead to, so this does not show that it "
                       "reads the actions.")
    if changed >= 2 and gain >= 0.5:
        return line + ": it follows the actions."
    if changed >= 0.5 or gain >= 0.5:
        return line + ": it follows the actions in part (short of 2 dB on changed pixels)."
    return line + ": no clear sign that it follows the actions."


def read_latent(results: dict[str, dict[str, Any]]) -> str:
    """What ``compare_models``' table says about z, one sentence per model, from its numbers."""
    lines = []
    for name, r in results.items():
        n, mean = r["protocol"]["samples"], r["psnr"]["mean"]
        best = r["best_of_n"]["psnr"]["best"] if "best_of_n" in r else mean
        line = (f"best of {n} {best:.2f} dB (the truth picks), {max(best - mean, 0.0):.2f} dB above the mean over samples; "
                # A KL is >= 0; a collapsed one can come out as -1e-9 of float round-off, printed "-0.00".
                f"test-time KL {max(r['kl']['mean'], 0.0):.2f} nats per frame")
        line += (": z carries little." if r["kl"]["mean"] < 0.1 else ": z carries part of the future.")
        if "best_of_n" in r:
            cb = r["best_of_n"]["changed_psnr"]
            line += (f" On changed pixels the best of {n} (the truth picks) is {max(cb['best'] - cb['mean'], 0.0):.2f} dB "
                     "above the mean.")
        if "counterfactual" in r:
            line += " " + read_counterfactual(r["counterfactual"], r["protocol"]["condition"])
        lines.append(f"{name} ({r['protocol']['condition']}): {line}")
    return "\n".join(lines)


def save_json(results: dict[str, Any], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(results, indent=2) + "\n")
