"""Reliability: atomic checkpoints, config checks on load, non-finite stops, gradient
clipping, and every user error reported as one ``error: ...`` line naming the file or field.

Data-level corruptions (missing frame, truncated/grey/wrong-size image, bad CSVs, empty
split, missing root) are covered for ``BairDataset`` and ``data check`` in test_data.py;
here only their path through ``train``. Kill-and-resume is in test_resume.py.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from lab5.rundir import (CheckpointError, RunDirError, check_compatible, load_checkpoint, load_model,
                         read_history, save_checkpoint)
from lab5.cli import main as lab5_main
from lab5.config import ConfigError, get_preset
from lab5.data.layout import DatasetError
from lab5.train import Solver, TrainingError

SMOKE = ["train", "--preset", "smoke", "--no-progress"]


def _cfg(**kw):
    return get_preset("smoke").replace(threads=1, **kw)


def _copy_run(smoke_run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(smoke_run, dst)
    return dst


def _cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    """``python -m lab5 ...`` in-process (no torch import per case); returns (status, stderr)."""
    code = lab5_main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


# --------------------------------------------------------------------------- checkpoints


def test_save_checkpoint_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"format": 1, "x": torch.ones(3)}, path)

    def torn_save(obj, f):  # a kill in the middle of writing: some bytes, then nothing
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"format": 1, "x": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(3))  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # and no temporary file left behind


def test_load_refuses_arbitrary_pickles(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "model": {}, "config": {}, "cond_dim": 7, "payload": Path("/")}, path)
    with pytest.raises(CheckpointError, match="evil.pt: cannot read checkpoint"):
        load_checkpoint(path)  # weights_only=True: a pickled object is not a tensor


@pytest.mark.parametrize("damage", ["truncated", "empty", "not_a_checkpoint", "missing"])
def test_bad_checkpoint_files_name_the_file(damage: str, smoke_run: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy_run(smoke_run, tmp_path)
    best = run / "best.pt"
    if damage == "truncated":
        best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    elif damage == "empty":
        best.write_bytes(b"")
    elif damage == "not_a_checkpoint":
        torch.save({"weights": torch.ones(2)}, best)
    else:
        best.unlink()
        (run / "last.pt").unlink()
    with pytest.raises(CheckpointError, match=str(run)):
        load_model(best)
    code, err = _cli(capsys, "evaluate", "--run-dir", run, "--data", run.parent, "--no-progress")
    assert code == 1 and err.startswith("error: ") and str(run) in err


def test_truncated_last_pt_on_resume(smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy_run(smoke_run, tmp_path)
    last = run / "last.pt"
    last.write_bytes(last.read_bytes()[:10_000])
    code, err = _cli(capsys, "train", "--resume", run, "--no-progress")
    assert code == 1 and f"{last}: cannot read checkpoint" in err


def test_checkpoint_of_another_architecture(smoke_run: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    state = load_checkpoint(smoke_run / "last.pt")
    cfg = _cfg()
    check_compatible(state, cfg, state["cond_dim"], "x.pt")  # its own config matches
    with pytest.raises(CheckpointError, match=r"x\.pt: .*arch: checkpoint 'dcgan64' != model 'vgg64'; "
                                              r"rnn_size: checkpoint 16 != model 32.*cond_dim"):
        check_compatible(state, cfg.replace(arch="vgg64", rnn_size=32), state["cond_dim"] + 1, "x.pt")

    # A last.pt from another run dropped into this run directory: resume refuses, naming the fields.
    run = _copy_run(smoke_run, tmp_path)
    state["config"] = {**state["config"], "nf": 16, "z_dim": 8}
    save_checkpoint(state, run / "last.pt")
    code, err = _cli(capsys, "train", "--resume", run, "--no-progress")
    assert code == 1 and f"{run / 'last.pt'}: checkpoint does not match" in err
    assert "nf: checkpoint 16 != model 8" in err and "z_dim: checkpoint 8 != model 4" in err
    # Weights that do not fit the config they come with.
    with pytest.raises(CheckpointError, match="weights do not fit the model"):
        load_model(run / "last.pt")


def test_checkpoints_every_n_iterations_and_at_epoch_ends(tiny_root: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    solver = Solver(_cfg(epochs=2, iters_per_epoch=5, checkpoint_every=2), tiny_root, tmp_path / "run",
                    progress=False)
    saved: list[tuple[str, int, int]] = []
    real_save = solver.save
    monkeypatch.setattr(solver, "save", lambda name="last.pt": (saved.append((name, solver.epoch, solver.iteration)),
                                                                real_save(name)))
    solver.fit()
    # Mid-epoch at iterations 2 and 4 (state: epoch index, iterations done), then each epoch end.
    lasts = [(e, i) for name, e, i in saved if name == "last.pt"]
    assert lasts == [(0, 2), (0, 4), (1, 0), (1, 2), (1, 4), (2, 0)]
    assert [name for name, *_ in saved].count("best.pt") >= 1
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "best.pt", "config.json", "data_root.txt", "history.jsonl", "last.pt"]  # no temporary files left
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (state["epoch"], state["iteration"]) == (2, 0) and len(state["history"]) == 2
    for key in ("model", "optimizer", "config", "rng", "accumulators", "schedules", "best"):
        assert key in state


# --------------------------------------------------------------------------- non-finite, clipping


def test_nonfinite_loss_stops_with_message_and_keeps_last_good_checkpoint(tiny_root: Path, tmp_path: Path,
                                                                          lab5_cli) -> None:
    run = tmp_path / "run"
    # lr=1e12: one Adam step puts every weight near ±1e12; the posterior's logvar then
    # overflows exp() and the next loss is NaN.
    r = lab5_cli(*SMOKE, "--data", tiny_root, "--run-dir", run,
                 "--set", "lr=1e12", "epochs=2", "iters_per_epoch=4", "checkpoint_every=1", "threads=1")
    assert r.returncode == 1
    assert r.stderr.startswith("error: non-finite loss at epoch 1, iteration 2; training stopped")
    assert f"last good checkpoint is {run / 'last.pt'} (saved after 0 epoch(s) + 1 iteration(s))" in r.stderr
    assert f"--resume {run} --set lr=" in r.stderr and "Traceback" not in r.stderr
    state = load_checkpoint(run / "last.pt")
    assert (state["epoch"], state["iteration"]) == (0, 1)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    model, _, _ = load_model(run / "last.pt")  # loads into a model
    assert read_history(run) == [{"event": "nonfinite", "what": "loss", "epoch": 1, "iteration": 2,
                                  "last_checkpoint": {"epoch": 0, "iteration": 1}}]


def test_nonfinite_before_any_checkpoint(tiny_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    solver = Solver(_cfg(lr=1e12, epochs=1, iters_per_epoch=4), tiny_root, run, progress=False)
    with pytest.raises(TrainingError, match="before any checkpoint was written; .* start again with --force"):
        solver.fit()
    assert not (run / "last.pt").exists()
    assert read_history(run) == [{"event": "nonfinite", "what": "loss", "epoch": 1, "iteration": 2,
                                  "last_checkpoint": None}]


FULL_DISK = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")


def _full_disk_at(folder: Path, name: str) -> None:
    """A real ENOSPC for this process's next write of ``folder/name``: write_atomic's temporary sibling
    (``.<name>.tmp-<pid>``) made a symlink to /dev/full, where every write fails with it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f".{name}.tmp-{os.getpid()}").symlink_to("/dev/full")


@FULL_DISK
def test_a_full_disk_before_training_stops_in_one_line(tiny_root: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    _full_disk_at(run, "config.json")
    assert lab5_main([*SMOKE, "--data", str(tiny_root), "--run-dir", str(run), "--set", "threads=1"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: cannot write {run / 'config.json'}: No space left on device; nothing was trained\n"
    assert not (run / "config.json").exists() and not (run / "last.pt").exists()


@FULL_DISK
def test_a_nonfinite_stop_on_a_full_disk_still_says_how_to_go_on(tiny_root: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    solver = Solver(_cfg(lr=1e12, epochs=1, iters_per_epoch=4), tiny_root, run, progress=False)
    _full_disk_at(run, "history.jsonl")
    with pytest.raises(TrainingError, match="non-finite loss at epoch 1, iteration 2; .*before any checkpoint"):
        solver.fit()
    err = capsys.readouterr().err
    assert err == f"could not record the stop in {run / 'history.jsonl'}: No space left on device\n"
    assert not (run / "history.jsonl").exists()


def test_nonfinite_gradient_and_event_kept_on_resume(tiny_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    solver = Solver(_cfg(epochs=2, iters_per_epoch=3), tiny_root, run, progress=False)
    solver.fit(until=1)  # one good epoch: last.pt at (1, 0)
    weight = solver.model.decoder.upc5[0].weight
    handle = weight.register_hook(lambda g: g * math.inf)
    with pytest.raises(TrainingError, match="non-finite gradient norm at epoch 2, iteration 1"):
        solver.fit()
    handle.remove()
    rows = read_history(run)
    assert len(rows) == 2 and rows[1]["event"] == "nonfinite" and rows[1]["what"] == "gradient norm"
    assert rows[1]["last_checkpoint"] == {"epoch": 1, "iteration": 0}
    # The optimizer never stepped on the bad gradient: last.pt holds the epoch-1 weights.
    assert torch.equal(load_checkpoint(run / "last.pt")["model"]["decoder.upc5.0.weight"],
                       solver.model.decoder.upc5[0].weight.detach())

    resumed = Solver(_cfg(epochs=2, iters_per_epoch=3, lr=1e-3, grad_clip=1.0), tiny_root, run,
                     resume=True, progress=False)
    assert resumed.optimizer.param_groups[0]["lr"] == 1e-3 and resumed.cfg.grad_clip == 1.0
    resumed.fit()
    rows = read_history(run)
    assert [r.get("epoch") for r in rows if "event" not in r] == [1, 2]
    assert [r["event"] for r in rows if "event" in r] == ["nonfinite"]  # what happened is still there
    assert json.loads((run / "config.json").read_text())["lr"] == 1e-3  # config.json follows the resume


def _train_and_record_grad_norms(tiny_root: Path, run: Path, grad_clip: float) -> tuple[Solver, list[float]]:
    solver = Solver(_cfg(epochs=1, iters_per_epoch=2, grad_clip=grad_clip, val_every=5), tiny_root, run,
                    progress=False)
    norms: list[float] = []
    step = solver.optimizer.step

    def recording_step(*args, **kwargs):
        grads = [p.grad for p in solver.model.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return step(*args, **kwargs)

    solver.optimizer.step = recording_step
    solver.fit()
    return solver, norms


def test_grad_clip_bounds_the_gradient_and_is_a_no_op_when_large(tiny_root: Path, tmp_path: Path) -> None:
    plain, plain_norms = _train_and_record_grad_norms(tiny_root, tmp_path / "plain", 0.0)
    large, large_norms = _train_and_record_grad_norms(tiny_root, tmp_path / "large", 1e6)
    small, small_norms = _train_and_record_grad_norms(tiny_root, tmp_path / "small", 1e-3)
    assert min(plain_norms) > 1e-2  # so that a 1e-3 clip has something to do
    assert plain_norms == large_norms
    for a, b in zip(plain.model.state_dict().values(), large.model.state_dict().values()):
        assert torch.equal(a, b)
    assert max(small_norms) <= 1e-3 * (1 + 1e-4)
    assert not all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(),
                                                     small.model.state_dict().values()))


# --------------------------------------------------------------------------- bad input through train


def test_train_on_missing_data_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(capsys, *SMOKE, "--data", tmp_path / "nowhere", "--run-dir", tmp_path / "run")
    assert code == 1 and err == f"error: data root {tmp_path / 'nowhere'} does not exist\n"
    assert not (tmp_path / "run").exists()


def test_train_on_root_with_missing_frame(tiny_root: Path, tmp_path: Path, lab5_cli) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    frame = root / "train" / "traj_0_to_255.tfrecords" / "3" / "17.png"
    frame.unlink()
    r = lab5_cli(*SMOKE, "--data", root, "--run-dir", tmp_path / "run")
    assert r.returncode == 1
    assert r.stderr.startswith("error: ") and str(frame) in r.stderr and "missing frame" in r.stderr
    assert "Traceback" not in r.stderr


def test_truncated_image_found_in_a_loader_worker(tiny_root: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    for seq in (root / "train" / "traj_0_to_255.tfrecords").iterdir():  # every sequence: the first batch hits one
        frame = seq / "1.png"
        frame.write_bytes(frame.read_bytes()[:200])
    code, err = _cli(capsys, *SMOKE, "--data", root, "--run-dir", tmp_path / "run", "--set", "num_workers=1")
    # The worker's traceback is stripped: one line naming the file.
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: {root / 'train'}") and "1.png: cannot decode image" in err


@pytest.mark.parametrize("override, field", [
    ("colour=red", "unknown config key 'colour'"),
    ("lr=fast", "config key 'lr' expects float"),
    ("epochs=2.5", "config key 'epochs' expects int"),
    ("n_past=0", "config field 'n_past' must be >= 1"),
    ("lr=0", "config field 'lr' must be > 0"),
    ("batch_size=9", "config field 'batch_size': 9 x 1 process(es) is larger than the training split (8"),
])
def test_train_config_errors(override: str, field: str, tiny_root: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(capsys, *SMOKE, "--data", tiny_root, "--run-dir", tmp_path / "run", "--set", override)
    assert code == 1 and err.startswith("error: ") and field in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_unwritable_run_dir_is_refused_before_training(tiny_root: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file.txt").write_text("not a directory\n")  # root ignores chmod; a file does not
    run = tmp_path / "file.txt" / "run"
    with pytest.raises(RunDirError, match="run directory cannot be written"):
        Solver(_cfg(), tiny_root, run, progress=False)
    code, err = _cli(capsys, *SMOKE, "--data", tiny_root, "--run-dir", run)
    assert code == 1 and err.startswith(f"error: {run}: run directory cannot be written")


def test_run_dir_holding_another_run(smoke_run: Path, tiny_root: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy_run(smoke_run, tmp_path)
    before = (run / "last.pt").read_bytes()
    code, err = _cli(capsys, *SMOKE, "--data", tiny_root, "--run-dir", run)
    assert code == 1 and f"{run}: already holds a run" in err and "--resume" in err and "--force" in err
    assert (run / "last.pt").read_bytes() == before

    code, _ = _cli(capsys, *SMOKE, "--data", tiny_root, "--run-dir", run, "--force",
                   "--set", "epochs=1", "iters_per_epoch=1", "seed=3")
    assert code == 0
    assert load_checkpoint(run / "last.pt")["config"]["seed"] == 3 and len(read_history(run)) == 1


def test_resume_refuses_changes_to_the_run(smoke_run: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy_run(smoke_run, tmp_path)
    code, err = _cli(capsys, "train", "--resume", run, "--no-progress", "--set", "z_dim=8", "epochs=3")
    assert code == 1 and "config field(s) z_dim (4 -> 8) cannot change on resume" in err
    with pytest.raises(ConfigError, match="n_future"):
        Solver(get_preset("smoke").replace(n_future=4), run.parent, run, resume=True, progress=False)


def test_resume_can_extend_a_run(smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy_run(smoke_run, tmp_path)
    code, _ = _cli(capsys, "train", "--resume", run, "--no-progress", "--set", "epochs=3")
    assert code == 0
    assert [r["epoch"] for r in read_history(run)] == [1, 2, 3]
    assert json.loads((run / "config.json").read_text())["epochs"] == 3
    with pytest.raises(DatasetError):  # the data root is remembered, but it can be overridden
        Solver(None, run / "elsewhere", run, resume=True, progress=False)
