"""What z and the actions do: the latent preset, the outdated embedded set, driving a scene with
other actions, the comparison table and the widgets of 05's latent section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lab5.config import make_config
from lab5.data.dataset import BairDataset
from lab5.rundir import load_model


def test_latent_preset_keeps_the_kl_alive_by_its_beta() -> None:
    cfg = make_config("latent")
    assert (cfg.prior, cfg.kl_mode, cfg.kl_beta_max, cfg.condition) == ("learned", "off", 1e-5, "actions+positions")
    free = make_config("latent", {"condition": "none", "z_dim": 0, "prior": "none"})
    assert free.condition == "none" and free.z_dim == 0
    assert json.loads(free.to_json())["condition"] == "none"


def test_an_outdated_embedded_set_is_generated_again(tmp_path: Path) -> None:
    from lab5.sim.generate import FORMAT_VERSION, MANIFEST, drop_outdated, make_synthetic

    root = tmp_path / "set"
    make_synthetic(root, train=1, validate=1, test=1, seed=3, workers=1, progress=False)
    assert not drop_outdated(root) and root.is_dir()              # current: kept
    manifest = json.loads((root / MANIFEST).read_text())
    (root / MANIFEST).write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION - 1}))
    assert drop_outdated(root) and not root.exists()              # older: removed, to be generated again
    other = tmp_path / "user"
    other.mkdir()
    (other / MANIFEST).write_text(json.dumps({"generator": "someone else", "format_version": 0}))
    assert not drop_outdated(other) and other.is_dir()            # not lab5's: never deleted


def test_hidden_properties_change_outcomes_only_after_the_first_contact() -> None:
    """Identical actions, every object at the lightest and most slippery, then the heaviest and roughest:
    the same end-effector positions in every frame, the same frames until an object is first pushed,
    and different frames after it."""
    from dataclasses import replace

    import numpy as np

    from lab5.sim.render import render_states
    from lab5.sim.world import DENSITY, FRICTION, make_scene, simulate_states

    pushed = 0
    for seed in range(12):
        actions = simulate_states(seed)["actions"]
        runs = []
        for density, friction in ((DENSITY[0], FRICTION[0]), (DENSITY[1], FRICTION[1])):
            scene = make_scene(seed)
            scene = replace(scene, objects=tuple(replace(o, density=density, friction=friction)
                                                 for o in scene.objects))
            st = simulate_states(seed, actions=actions, scene=scene)
            runs.append((st, render_states(st)))
        (light, light_frames), (heavy, heavy_frames) = runs
        assert np.array_equal(light["endeffector"], heavy["endeffector"]), seed
        contact = np.flatnonzero(light["touched"].any(1) | heavy["touched"].any(1))
        first = int(contact[0]) if len(contact) else len(actions)
        assert np.array_equal(light_frames[:first], heavy_frames[:first]), seed
        if first < len(actions) - 5:
            pushed += 1
            assert not np.array_equal(light_frames[first:], heavy_frames[first:]), seed
    assert pushed >= 6  # most of these scenes are pushed early enough to tell


def test_hidden_properties_are_seeded_within_their_ranges() -> None:
    from lab5.sim.world import DENSITY, FRICTION, make_scene

    scenes = [make_scene(s) for s in range(20)]
    frictions = [o.friction for sc in scenes for o in sc.objects]
    densities = [o.density for sc in scenes for o in sc.objects]
    assert FRICTION[0] <= min(frictions) < max(frictions) <= FRICTION[1]
    assert DENSITY[0] <= min(densities) < max(densities) <= DENSITY[1]
    assert [o.friction for o in make_scene(7).objects] == [o.friction for o in scenes[7].objects]  # seeded


@pytest.fixture(scope="module")
def smoke(smoke_run: Path, tiny_root: Path):
    model, cfg, _ = load_model(smoke_run)
    return model, cfg, BairDataset(tiny_root, "test", n_frames=cfg.n_frames)


def test_drive_replays_the_scene_with_the_chosen_actions(smoke, tiny_root: Path) -> None:
    from lab5.viz import drive
    from lab5.sim.replay import DIRECTIONS, direction_actions, drive_choices

    model, cfg, data = smoke
    choices = drive_choices(data, 0, cfg.n_frames, others=2)
    assert list(choices)[:3] == ["its own actions", "actions of test sequence 1", "actions of test sequence 2"]
    assert all(f"drive {d}" in choices for d in DIRECTIONS)
    truth, pred = drive(model, tiny_root, "test", 0, choices["its own actions"], cfg.n_past)
    assert torch.equal(truth, data[0][0][:cfg.n_frames])          # its own actions: the stored frames
    assert pred.shape == truth.shape and torch.equal(pred[:cfg.n_past], truth[:cfg.n_past])
    down, _ = drive(model, tiny_root, "test", 0, direction_actions("down", cfg.n_frames), cfg.n_past)
    up, _ = drive(model, tiny_root, "test", 0, direction_actions("up", cfg.n_frames), cfg.n_past)
    assert torch.equal(down[0], up[0]) and not torch.equal(down[-1], up[-1])
    with pytest.raises(ValueError, match="unknown direction 'sideways'"):
        direction_actions("sideways", 5)


def test_shuffles_skip_columns_the_model_never_reads(smoke) -> None:
    from lab5.evaluate import Protocol, shuffles

    model, cfg, data = smoke
    run = dict(protocol=Protocol("t", cfg.n_past, cfg.n_future, 1), seed=0, device="cpu", batch_size=4,
               progress=False)
    assert set(shuffles(model, data, run)) == {"shuffled_conditions", "shuffled_actions_only",
                                               "shuffled_positions_only", "shuffled_actions"}
    model.cfg = cfg.replace(condition="none")
    try:
        assert shuffles(model, data, run) == {}
    finally:
        model.cfg = cfg


def test_compare_models_lines_up_the_results(smoke) -> None:
    from lab5.evaluate import Protocol, compare_models, evaluate_model

    model, cfg, data = smoke
    r = evaluate_model(model, data, Protocol("t", cfg.n_past, cfg.n_future, 1), samples=3, progress=False,
                       with_shuffled=False)
    one = evaluate_model(model, data, Protocol("t", cfg.n_past, cfg.n_future, 1), samples=1, progress=False,
                         with_shuffled=False)
    table = compare_models({"a": r, "b": one})
    assert table["PSNR mean of 3"]["a"] == r["psnr"]["mean"]
    assert table["PSNR best of 3"]["a"] == r["best_of_n"]["psnr"]["best"] >= r["best_of_n"]["psnr"]["worst"]
    assert table["PSNR best of 1"]["b"] == one["psnr"]["mean"]   # one sample: its best is its mean
    assert table["test KL (nats/frame)"]["b"] == one["kl"]["mean"] and "counterfactual PSNR" not in table
    assert table["sequences"] == {"a": len(data), "b": len(data)}   # what each row was scored on


def test_the_widgets_build_and_respond(smoke, tiny_root: Path) -> None:
    pytest.importorskip("ipywidgets")
    from lab5 import viz
    from lab5.sim.replay import drive_choices

    model, cfg, data = smoke
    x, c = (t[None, :cfg.n_frames] for t in data[0])
    draws = viz.predict_samples(model, x, c, cfg, samples=4, seed=0)[:, 0]
    box = viz.sample_player(x[0], draws, cfg.n_past)
    controls, caption, image = box.children
    slider, pick = controls.children[1], controls.children[2]
    first = image.value
    slider.value, pick.value = cfg.n_frames - 1, 3
    assert image.value != first and "sample 4" in caption.value and f"t = {cfg.n_frames - 1}" in caption.value
    spread = viz.spread_frames(draws)
    assert spread.shape == (cfg.n_frames, 64, 64, 3) and spread[:cfg.n_past].max() == 0  # given frames agree
    choices = drive_choices(data, 0, cfg.n_frames, others=1)
    box = viz.drive_player(model, tiny_root, "test", 0, choices, cfg.n_past)
    controls, caption, image = box.children
    menu, before = controls.children[2], image.value
    controls.children[1].value = cfg.n_frames - 1
    menu.value = "drive down"
    assert image.value != before and "drive down" in caption.value and "dB" in caption.value


def test_latent_figures() -> None:
    from lab5 import viz

    curve = {"n": [1, 2, 5], "psnr": [20.0, 21.0, 22.0], "ssim": [0.8, 0.82, 0.85]}
    fig = viz.plot_best_of_n({"a": curve, "b": curve}, copy_last=19.0)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 3
    hist = [{"epoch": e, "kl": k, "beta": b} for e, k, b in [(1, 5.0, 1e-4), (2, 0.0, 1e-4)]]
    fig = viz.plot_kl_runs({"alive": hist, "collapsed": hist})
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2
