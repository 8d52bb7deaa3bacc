"""Evaluation: metrics against hand computations, the baselines, the generation protocol,
and a smoke train + evaluate through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lab5.rundir import load_model
from lab5.data.dataset import BairDataset
from lab5.evaluate import Protocol, ShuffledConditions, evaluate_model, format_table
from lab5.metrics import psnr_per_frame, ssim_per_frame


def test_psnr_by_hand() -> None:
    truth = torch.zeros(2, 3, 3, 4, 4)
    pred = truth.clone()
    pred[0, 0] += 0.1      # MSE 0.01  -> 20 dB
    pred[0, 1] += 0.5      # MSE 0.25  -> 10·log10(4) dB
    pred[1, :, :, :2] = 1  # half the pixels off by 1: MSE 0.5 -> 10·log10(2) dB
    psnr = psnr_per_frame(pred, truth)
    assert psnr.shape == (2, 3)
    assert psnr[0, 0].item() == pytest.approx(20.0, abs=1e-4)
    assert psnr[0, 1].item() == pytest.approx(10 * math.log10(4), abs=1e-4)
    assert psnr[1].tolist() == pytest.approx([10 * math.log10(2)] * 3, abs=1e-4)
    assert psnr[0, 2].item() == pytest.approx(100.0)  # identical frames: MSE clamped at 1e-10
    one_channel = truth[:1, :1].clone()
    one_channel[:, :, 0] += 0.1  # channel 0 at 20 dB, channels 1 and 2 exact: per channel, then averaged
    assert psnr_per_frame(one_channel, truth[:1, :1]).item() == pytest.approx((20 + 100 + 100) / 3, abs=1e-4)


def test_ssim_identical_and_different() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 3, 16, 16, generator=gen)
    assert ssim_per_frame(x, x) == pytest.approx(np.ones((1, 2)))
    assert (ssim_per_frame(torch.rand(1, 2, 3, 16, 16, generator=gen), x) < 0.2).all()


class _Items(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return torch.tensor([i]), torch.tensor([100 + i])


@pytest.mark.parametrize("n", [2, 3, 5, 17])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shuffled_conditions_is_a_derangement(n: int, seed: int) -> None:
    shuffled = ShuffledConditions(_Items(n), seed)
    source = shuffled.source.tolist()
    assert sorted(source) == list(range(n))           # a permutation
    assert all(s != i for i, s in enumerate(source))  # with no fixed point
    for i in range(n):
        frames, cond = shuffled[i]
        assert frames.item() == i and cond.item() == 100 + source[i]
    assert ShuffledConditions(_Items(n), seed).source.tolist() == source  # fixed by the seed
    with pytest.raises(ValueError, match="at least 2"):
        ShuffledConditions(_Items(1))


@pytest.fixture(scope="module")
def model_and_data(smoke_run: Path, tiny_root: Path):
    model, cfg, _ = load_model(smoke_run)
    data = BairDataset(tiny_root, "test", n_frames=cfg.n_frames)
    x = torch.stack([data[i][0] for i in range(len(data))])
    c = torch.stack([data[i][1] for i in range(len(data))])
    return model, cfg, data, x, c


@pytest.fixture(scope="module", params=["fixed", "learned"])
def any_prior(request, model_and_data):
    """The trained smoke model (fixed prior), and an untrained smoke model with SVG-LP's learned prior."""
    model, cfg, data, x, c = model_and_data
    if request.param == "learned":
        from lab5.models.cvae import CVAE
        torch.manual_seed(2)
        cfg = cfg.replace(prior="learned")
        model = CVAE(cfg, c.shape[-1]).eval()
    return model, cfg, data, x, c


def test_generate_protocol(any_prior, monkeypatch: pytest.MonkeyPatch) -> None:
    """Posterior z on conditioning frames (fed the encoding of the frame), prior z on predicted
    frames, predictions fed back: the ground truth after the conditioning frames is never seen."""
    model, cfg, _, x, c = any_prior
    n_past, n_future = cfg.n_past, cfg.n_future

    def run(x_, c_, seed=0):
        return model.generate(x_, c_, n_past, n_future, torch.Generator().manual_seed(seed))

    pred = run(x, c)
    assert pred.shape == (len(x), n_future, 3, 64, 64) and 0 <= pred.min() and pred.max() <= 1
    assert torch.equal(pred, run(x, c))                # same generator seed, same predictions
    assert not torch.equal(pred, run(x, c, seed=1))    # the prior's z matters

    future = x.clone()
    future[:, n_past:] = torch.rand_like(future[:, n_past:])
    assert torch.equal(pred, run(future, c))           # future frames are not looked at
    cond = x.clone()
    cond[:, n_past - 1] = 0
    assert not torch.equal(pred, run(cond, c))         # conditioning frames are
    actions = c.clone()
    actions[:, 0] += 1
    assert not torch.equal(pred, run(x, actions))      # so are the conditions

    calls: list[tuple[str, torch.Tensor]] = []
    posterior, prior = model.posterior, model.prior
    monkeypatch.setattr(model, "posterior", lambda h, *a: (calls.append(("posterior", h)), posterior(h, *a))[1])
    monkeypatch.setattr(model, "prior", lambda h, *a: (calls.append(("prior", h)), prior(h, *a))[1])
    run(x, c)
    if cfg.prior == "fixed":
        # The posterior for steps 1..n_past-1, then the prior for each predicted frame.
        assert [name for name, _ in calls] == ["posterior"] * (n_past - 1) + ["prior"] * n_future
    else:
        # The learned prior steps along on the conditioning frames too (its LSTM state must follow
        # the true frames), after the posterior, and is fed the previous frame's encoding.
        assert [name for name, _ in calls] == ["posterior", "prior"] * (n_past - 1) + ["prior"] * n_future
        assert torch.allclose(calls[1][1], model.encoder(x[:, 0])[0])  # p(z_1 | x_0)
    assert torch.allclose(calls[0][1], model.encoder(x[:, 1])[0])  # q(z_1 | x_1) sees frame 1


def test_test_time_kl_against_direct_computation(any_prior) -> None:
    """KL(q(z_t | x_<=t) ‖ p(z_t | x_<t)) per frame along the true frames, by hand, for both priors."""
    from lab5.evaluate import test_kl

    model, cfg, data, x, _ = any_prior
    results = test_kl(model, data, Protocol("test", cfg.n_past, cfg.n_future, 1), "cpu")
    xt, q_state, p_state = x.transpose(0, 1), None, None
    kl = []
    with torch.no_grad():
        for i in range(1, cfg.n_frames):
            _, mu, logvar, q_state = model.posterior_net(model.encoder(xt[i])[0],
                                                         q_state or model.posterior_net.init_hidden(len(x), "cpu"))
            if cfg.prior == "learned":
                _, mp, lp, p_state = model.prior_net(model.encoder(xt[i - 1])[0],
                                                     p_state or model.prior_net.init_hidden(len(x), "cpu"))
            else:
                mp, lp = torch.zeros_like(mu), torch.zeros_like(logvar)
            # KL of two diagonal Gaussians, summed over z's dimensions, averaged over sequences.
            term = 0.5 * (lp - logvar + (logvar.exp() + (mu - mp) ** 2) / lp.exp() - 1)
            kl.append(float(term.sum(1).mean()))
    assert results["per_frame"] == pytest.approx(kl, rel=1e-3, abs=1e-7) and results["mean"] > 0


def test_actions_start_hides_the_arms_future(model_and_data) -> None:
    """``condition=actions+start``: the predictor reads every action and the conditioning frames'
    end-effector positions, never a later position, in generation and in the training loss."""
    from lab5.models.cvae import CVAE

    _, cfg, _, x, c = model_and_data
    torch.manual_seed(4)
    cfg = cfg.replace(condition="actions+start", prior="learned")
    model = CVAE(cfg, c.shape[-1]).eval()
    n_past, a = cfg.n_past, model.action_dim

    def run(c_):
        return model.generate(x, c_, n_past, cfg.n_future, torch.Generator().manual_seed(0))

    later = c.clone()
    later[:, n_past:, a:] = torch.rand_like(later[:, n_past:, a:])
    start = c.clone()
    start[:, n_past - 1, a:] += 0.5
    acts = c.clone()
    acts[:, n_past + 1, :a] += 0.5
    pred = run(c)
    assert torch.equal(pred, run(later)) and not torch.equal(pred, run(start))  # later positions unseen,
    assert not torch.equal(pred, run(acts))                                     # the start and actions read
    # The training loss: the gradient of no later position is anything but exactly 0.
    grad_c = c.clone().requires_grad_()
    torch.manual_seed(0)
    model.train()(x, grad_c, 0.5, True).loss.backward()
    g = grad_c.grad
    assert (g[:, n_past:, a:] == 0).all() and (g[:, n_past - 1, a:] != 0).any()
    assert (g[:, n_past:-1, :a] != 0).any()  # step t reads the actions of frame t-1


def test_evaluate_model_against_direct_computation(model_and_data) -> None:
    model, cfg, data, x, c = model_and_data
    n_past, n_future = cfg.n_past, cfg.n_future
    results = evaluate_model(model, data, Protocol("test", n_past, n_future, 1), samples=2, seed=3, progress=False)
    truth = x[:, n_past:]

    gen = torch.Generator().manual_seed(3)
    preds = [model.generate(x, c, n_past, n_future, gen) for _ in range(2)]
    psnr = torch.stack([psnr_per_frame(p, truth) for p in preds], 1)  # [sequences, samples, frames]
    ssim = np.stack([ssim_per_frame(p, truth) for p in preds], 1)
    assert results["psnr"]["mean"] == pytest.approx(psnr.mean().item(), rel=1e-6)
    assert results["psnr"]["per_frame"] == pytest.approx(psnr.mean((0, 1)).tolist(), rel=1e-6)
    # SVG's choice: per sequence, the sample of highest mean SSIM is the best, the lowest the worst.
    best, worst = ssim.mean(2).argmax(1), ssim.mean(2).argmin(1)
    rows = np.arange(len(x))
    b = results["best_of_n"]
    assert b["psnr"]["best"] == pytest.approx(psnr.numpy()[rows, best].mean(), rel=1e-6)
    assert b["psnr"]["worst"] == pytest.approx(psnr.numpy()[rows, worst].mean(), rel=1e-6)
    assert b["ssim"]["best"] == pytest.approx(ssim[rows, best].mean(), rel=1e-6)
    assert b["ssim"]["worst"] <= b["ssim"]["mean"] <= b["ssim"]["best"]
    assert b["per_frame"]["psnr"] == pytest.approx(psnr.numpy()[rows, best].mean(0).tolist(), rel=1e-6)
    assert "highest SSIM" in b["chosen_by"] and "the truth picks" in b["chosen_by"]

    # Changed pixels: an independent numpy computation of the JSON's changed block.
    xs, ts = x.numpy().astype(np.float64), truth.numpy().astype(np.float64)
    mask = np.abs(ts - xs[:, n_past - 1:n_past]).max(2) > 0.1                     # [B,T,H,W]
    changed = np.full((len(x), 2, n_future), np.nan)
    for k, p in enumerate(preds):
        err = (p.numpy().astype(np.float64) - ts) ** 2
        for i in range(len(x)):
            for t in range(n_future):
                if mask[i, t].any():
                    changed[i, k, t] = 10 * np.log10(1 / err[i, t][:, mask[i, t]].mean())
    ch = results["changed"]
    assert ch["threshold"] == 0.1 and ch["fraction"] == pytest.approx(mask.mean())
    assert ch["psnr"]["mean"] == pytest.approx(np.nanmean(changed.mean(1)), rel=1e-5)
    per_seq = np.nanmean(changed, 2)
    keep = ~np.isnan(per_seq).all(1)
    assert b["changed_psnr"]["best"] == pytest.approx(per_seq[keep].max(1).mean(), rel=1e-5)
    assert b["changed_psnr"]["worst"] <= b["changed_psnr"]["mean"] <= b["changed_psnr"]["best"]
    copy = np.broadcast_to(xs[:, n_past - 1:n_past], ts.shape)
    copy_changed = [10 * np.log10(1 / ((copy[i, t] - ts[i, t]) ** 2)[:, mask[i, t]].mean())
                    for i in range(len(x)) for t in range(n_future) if mask[i, t].any()]
    assert results["copy_last"]["changed"]["psnr"]["mean"] == pytest.approx(np.mean(copy_changed), rel=1e-5)

    copy_last = psnr_per_frame(x[:, n_past - 1:n_past].expand_as(truth), truth)
    assert results["copy_last"]["psnr"] == pytest.approx(copy_last.mean().item(), rel=1e-6)
    assert results["copy_last"]["psnr_per_frame"] == pytest.approx(copy_last.mean(0).tolist(), rel=1e-6)

    shuffled = ShuffledConditions(data, 3)
    c_shuffled = torch.stack([shuffled[i][1] for i in range(len(data))])
    expected = psnr_per_frame(model.generate(x, c_shuffled, n_past, n_future, torch.Generator().manual_seed(3)),
                              truth).mean()
    assert results["shuffled_actions"]["psnr"] == pytest.approx(expected.item(), rel=1e-6)
    assert results["protocol"]["sequences"] == 4 and results["protocol"]["samples"] == 2
    assert 0 < results["ssim"]["mean"] <= 1

    table = format_table(results)
    assert table.startswith(f"protocol 'test': {n_past} conditioning + {n_future} predicted frames; "
                            "posterior z on conditioning frames, prior z on predicted frames")
    assert "copy last frame" in table and "CVAE best of 2" in table


def test_cli_smoke_train_then_evaluate(tiny_root: Path, tmp_path: Path, lab5_cli) -> None:
    run = tmp_path / "run"
    r = lab5_cli("train", "--preset", "smoke", "--data", tiny_root, "--run-dir", run, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert f"trained 2 epochs into {run}" in r.stdout
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.json", "data_root.txt",
                                                     "history.jsonl", "last.pt"]

    out = tmp_path / "out.json"
    r = lab5_cli("evaluate", "--run-dir", run, "--data", tiny_root, "--json", out, "--samples", "2",
                 "--counterfactual", "--no-progress")
    assert r.returncode == 0, r.stderr
    results = json.loads(out.read_text())
    assert {"protocol", "psnr", "ssim", "copy_last", "shuffled_actions", "best_of_n"} <= results.keys()
    # Issue "Evidence that holds": the changed-pixel and counterfactual keys, as named there.
    assert {"threshold", "fraction", "psnr"} <= results["changed"].keys()
    assert {"mean", "per_frame"} <= results["changed"]["psnr"].keys()
    assert "psnr" in results["copy_last"]["changed"]
    assert {"best", "mean", "worst"} <= results["best_of_n"]["changed_psnr"].keys()
    cf = results["counterfactual"]
    assert {"psnr", "changed_psnr", "copy_last", "factual_conditions", "contact_fraction"} <= cf.keys()
    assert {"psnr", "changed_psnr"} <= cf["factual_conditions"].keys()
    assert {"real", "counterfactual"} == cf["contact_fraction"].keys()
    # The lab protocol predicts 10 frames whatever the model was trained with (smoke: 3).
    assert {"mean", "per_frame"} <= results["psnr"].keys() and len(results["psnr"]["per_frame"]) == 10
    assert {"psnr", "ssim"} <= results["copy_last"].keys() and "psnr" in results["shuffled_actions"]
    assert results["best_of_n"]["n"] == 2
    p = results["protocol"]
    assert (p["name"], p["n_past"], p["n_future"], p["split"], p["sequences"]) == ("lab", 2, 10, "test", 4)
    assert p["run_dir"] == str(run) and p["data_root"] == str(tiny_root)
    assert r.stdout.startswith("protocol 'lab': 2 conditioning + 10 predicted frames; posterior z on conditioning "
                               "frames, prior z on predicted frames; predictions fed back")
    assert "CVAE (mean over samples)" in r.stdout and f"wrote {out}" in r.stdout


def test_export_drops_the_optimizer_and_evaluates_like_its_source(smoke_run: Path, tiny_root: Path,
                                                                    tmp_path: Path, lab5_cli) -> None:
    out = tmp_path / "shipped"
    r = lab5_cli("export", "--run-dir", smoke_run, "--out", out)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out / 'best.pt'}" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "history.jsonl"]
    from lab5.rundir import load_checkpoint

    exported, source = load_checkpoint(out / "best.pt"), load_checkpoint(smoke_run / "best.pt")
    assert exported["optimizer"] is None and exported["rng"] is None and source["optimizer"] is not None
    assert (out / "best.pt").stat().st_size < (smoke_run / "best.pt").stat().st_size
    data = BairDataset(tiny_root, "test", n_frames=12)
    results = [evaluate_model(load_model(d)[0], data, "lab", samples=2, seed=1, progress=False)
               for d in (smoke_run, out)]
    assert results[0] == results[1]  # the same weights, the same numbers, to the last bit
    last = tmp_path / "last"
    r = lab5_cli("export", "--run-dir", smoke_run, "--out", last, "--checkpoint", "last")
    assert r.returncode == 0, r.stderr
    state = load_checkpoint(last / "best.pt")
    assert state["optimizer"] is None and state["iteration"] == load_checkpoint(smoke_run / "last.pt")["iteration"]


def test_generate_writes_a_gif_of_truth_and_samples(smoke_run: Path, tiny_root: Path, tmp_path: Path,
                                                     lab5_cli) -> None:
    from PIL import Image

    gif = tmp_path / "pred.gif"
    r = lab5_cli("generate", "--run-dir", smoke_run, "--data", tiny_root, "--out", gif, "--sequences", "2",
                 "--samples", "2")
    assert r.returncode == 0, r.stderr
    n_past, n_frames = 2, 5  # the smoke preset: 2 + 3
    with Image.open(gif) as im:
        assert im.n_frames == n_frames
        # 2 rows of 64x64 frames and 3 columns (truth, 2 samples), shown at 2x, under a header and over a footer
        assert im.size == (3 * 128, 2 * 128 + 32)
        corners = []
        for t in range(n_frames):
            im.seek(t)
            rgb = np.asarray(im.convert("RGB"))
            corners.append(rgb[16 + 1, 128 + 1])  # top-left pixel of sample 1, first row
        red = [bool(p[0] > 180 and p[1] < 80 and p[2] < 80) for p in corners]
        assert red == [False] * n_past + [True] * (n_frames - n_past)  # predicted frames are framed in red


def test_svg_protocol_scores_28_frames_best_of_100(smoke_run: Path, tiny_root: Path, tmp_path: Path,
                                                    lab5_cli) -> None:
    out = tmp_path / "svg.json"
    r = lab5_cli("evaluate", "--run-dir", smoke_run, "--data", tiny_root, "--protocol", "svg", "--max-sequences", "2",
                 "--json", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    results = json.loads(out.read_text())
    p = results["protocol"]
    assert (p["name"], p["n_past"], p["n_future"], p["samples"]) == ("svg", 2, 28, 100)
    assert len(results["psnr"]["per_frame"]) == 28 and len(results["copy_last"]["psnr_per_frame"]) == 28
    b = results["best_of_n"]
    assert b["n"] == 100 and len(b["per_frame"]["psnr"]) == 28 and len(b["per_frame"]["ssim"]) == 28
    assert b["ssim"]["worst"] <= b["ssim"]["mean"] <= b["ssim"]["best"]  # ranked by SSIM
    assert {"mean", "best", "worst"} <= b["psnr"].keys()
    assert r.stdout.startswith("protocol 'svg': 2 conditioning + 28 predicted frames")
    assert "CVAE best of 100" in r.stdout


def test_what_z_carries_keys_against_direct_computation(model_and_data) -> None:
    """best_of_n_curve, diversity, the test-time KL and the three shuffles, in the JSON shapes the
    project reads (issue "A latent that carries the future")."""
    model, cfg, data, x, c = model_and_data
    p = Protocol("test", cfg.n_past, cfg.n_future, 1)
    results = evaluate_model(model, data, p, samples=5, seed=3, progress=False)
    curve = results["best_of_n_curve"]
    assert curve["n"] == [1, 2, 5] and len(curve["psnr"]) == len(curve["ssim"]) == 3
    assert curve["psnr"][-1] == pytest.approx(results["best_of_n"]["psnr"]["best"])
    assert curve["ssim"] == sorted(curve["ssim"])  # the best of more samples is never worse (ranked by SSIM)

    gen = torch.Generator().manual_seed(3)
    preds = torch.stack([model.generate(x, c, cfg.n_past, cfg.n_future, gen) for _ in range(5)])
    assert results["diversity"]["pixel_std"] == pytest.approx(float(preds.std(0, unbiased=False).mean()), rel=1e-5)

    # Fixed prior: KL(q ‖ N(0, I)) of each frame along the true frames, by hand.
    xt = x.transpose(0, 1)
    hidden, kl = model.init_hidden(len(x), "cpu"), []
    for i in range(1, cfg.n_frames):
        with torch.no_grad():
            _, mu, logvar = model.posterior(model.encoder(xt[i])[0], hidden)
        kl.append(float((0.5 * (mu**2 + logvar.exp() - 1 - logvar)).sum(1).mean()))
    assert results["kl"]["per_frame"] == pytest.approx(kl, rel=1e-3, abs=1e-7) and results["kl"]["mean"] > 0

    for key in ("shuffled_conditions", "shuffled_actions_only", "shuffled_positions_only"):
        assert set(results[key]) == {"psnr", "what"}
    assert results["shuffled_actions"] == results["shuffled_conditions"]
    both = ShuffledConditions(data, 3)
    only = ShuffledConditions(data, 3, slice(0, 4))
    assert torch.equal(only[0][1][:, 4:], data[0][1][:, 4:]) and torch.equal(only[0][1][:, :4], both[0][1][:, :4])


def test_counterfactual_against_an_independent_computation(model_and_data, tiny_root: Path) -> None:
    from lab5.evaluate import counterfactual
    from lab5.sim.replay import counterfactual_data
    from lab5.sim import sequence_seed
    from lab5.sim.render import render_states
    from lab5.sim.world import simulate_states

    model, cfg, data, x, c = model_and_data
    n_past = cfg.n_past
    p = Protocol("test", n_past, cfg.n_future, 1)
    cf = counterfactual_data(data, tiny_root, "test", p.n_past, p.n_frames)
    x_cf, c_cf = cf["x"], cf["c"]
    for i in range(len(x)):
        own = simulate_states(sequence_seed(0, "test", i), cfg.n_frames)
        assert torch.equal(c_cf[i, :n_past - 1, :4], torch.from_numpy(own["actions"][:n_past - 1]))
        assert torch.equal(x_cf[i, :n_past], x[i, :n_past])       # the same conditioning frames
    assert not torch.equal(c_cf[:, n_past - 1:, :4], c[:, n_past - 1:, :4])  # then other actions
    # The truth is the simulator's, with the positions the new actions lead to.
    st = simulate_states(sequence_seed(0, "test", 1), cfg.n_frames, actions=c_cf[1, :, :4].numpy())
    assert np.array_equal(render_states(st), (x_cf[1] * 255).round().byte().permute(0, 2, 3, 1).numpy())
    assert np.array_equal(st["endeffector"], c_cf[1, :, 4:].numpy())
    assert torch.equal(cf["factual_c"], c)
    assert set(cf["contact_fraction"]) == {"real", "counterfactual"}

    results = counterfactual(model, data, tiny_root, "test", p, seed=0)
    truth = x_cf[:, n_past:].numpy().astype(np.float64)

    def psnr(pred: torch.Tensor) -> float:  # the grader's: per channel, then the channels' mean
        mse = ((pred.numpy().astype(np.float64) - truth) ** 2).mean((3, 4))
        return float((10 * np.log10(1 / mse)).mean())

    new = model.generate(x_cf, c_cf, n_past, cfg.n_future, torch.Generator().manual_seed(0))
    old = model.generate(x_cf, c, n_past, cfg.n_future, torch.Generator().manual_seed(0))
    assert results["psnr"] == pytest.approx(psnr(new), abs=1e-4)
    assert results["factual_conditions"]["psnr"] == pytest.approx(psnr(old), abs=1e-4)
    assert results["copy_last"]["psnr"] == pytest.approx(psnr(x_cf[:, n_past - 1:n_past].expand(-1, cfg.n_future,
                                                                                              -1, -1, -1)), abs=1e-4)
    assert {"changed_psnr", "ssim"} <= results.keys() and "changed_psnr" in results["factual_conditions"]
    assert results["contact_fraction"] == cf["contact_fraction"]


def test_counterfactual_needs_the_embedded_data(model_and_data, tmp_path: Path, real_root: Path) -> None:
    from lab5.evaluate import counterfactual
    from lab5.data.layout import DatasetError

    model, cfg, *_ = model_and_data
    data = BairDataset(real_root, "test", n_frames=cfg.n_frames)
    with pytest.raises(DatasetError, match="SYNTHETIC.json: counterfactual actions need the embedded"):
        counterfactual(model, data, real_root, "test", Protocol("test", 2, 3, 1))
