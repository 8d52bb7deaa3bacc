"""Kill-and-resume: a seeded run SIGKILLed at any moment and resumed with ``--resume``
ends with the same weights, optimizer state and history as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from lab5.cli import main as lab5_main

EPOCHS = 3
OVERRIDES = [f"epochs={EPOCHS}", "iters_per_epoch=4", "checkpoint_every=1", "step=exact", "threads=1"]


def _train_cmd(data: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "lab5", "train", "--preset", "smoke", "--data", str(data),
            "--run-dir", str(run_dir), "--no-progress", "--set", *OVERRIDES]


def _history_rows(run_dir: Path) -> int:
    try:
        return sum(1 for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip())
    except OSError:
        return 0


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_tensors_close(a: Any, b: Any, where: str) -> None:
    """Nested dicts/lists of tensors and numbers are equal (tensors within float tolerance)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape, where
        if a.is_floating_point():
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), f"{where}: max diff {(a - b).abs().max()}"
        else:
            assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_tensors_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_tensors_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-7), where
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def uninterrupted(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory, cli_popen_kwargs) -> Path:
    run_dir = tmp_path_factory.mktemp("resume") / "A"
    r = subprocess.run(_train_cmd(tiny_root, run_dir), **cli_popen_kwargs, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    return run_dir


# Kill moments: right after the first mid-epoch checkpoint (epoch 1, iteration 1); at the end
# of epoch 1 once best.pt is written (so best.pt is ahead of last.pt); right after the end of
# epoch 1 is saved (early in epoch 2).
KILL_POINTS: dict[str, Callable[[Path], bool]] = {
    "after_first_mid_epoch_checkpoint": lambda d: (d / "last.pt").exists(),
    "after_first_best_pt": lambda d: (d / "best.pt").exists(),
    "after_first_epoch_end": lambda d: _history_rows(d) >= 1,
}


@pytest.mark.parametrize("kill_point", list(KILL_POINTS))
def test_sigkill_then_resume_matches_uninterrupted(kill_point: str, uninterrupted: Path, tiny_root: Path,
                                                   tmp_path: Path, lab5_cli, cli_popen_kwargs) -> None:
    run_dir = tmp_path / "B"
    proc = subprocess.Popen(_train_cmd(tiny_root, run_dir), **cli_popen_kwargs,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not KILL_POINTS[kill_point](run_dir):
            assert proc.poll() is None, f"run ended before the kill point: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "kill point never reached"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed = _load(run_dir / "last.pt")
    assert (killed["epoch"], killed["iteration"]) < (EPOCHS, 0), "the kill came after the run finished"
    print(f"killed with last.pt at epoch {killed['epoch']}, iteration {killed['iteration']}")

    r = lab5_cli("train", "--resume", run_dir, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert f"trained {EPOCHS} epochs" in r.stdout

    a, b = _load(uninterrupted / "last.pt"), _load(run_dir / "last.pt")
    assert (b["epoch"], b["iteration"]) == (EPOCHS, 0)
    for key in ("model", "optimizer", "history", "best", "accumulators", "schedules"):
        _assert_tensors_close(a[key], b[key], key)
    _assert_tensors_close(_load(uninterrupted / "best.pt")["model"], _load(run_dir / "best.pt")["model"], "best")
    rows_a = [json.loads(s) for s in (uninterrupted / "history.jsonl").read_text().splitlines()]
    rows_b = [json.loads(s) for s in (run_dir / "history.jsonl").read_text().splitlines()]
    assert len(rows_a) == EPOCHS
    _assert_tensors_close(rows_a, rows_b, "history.jsonl")


def test_resume_a_finished_run_is_a_no_op(uninterrupted: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "done"
    shutil.copytree(uninterrupted, run_dir)
    before = (run_dir / "last.pt").read_bytes()
    assert lab5_main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    assert (run_dir / "last.pt").read_bytes() == before


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Killed before its first checkpoint: config.json is there, last.pt is not.
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "config.json").write_text("{}")
    assert lab5_main(["train", "--resume", str(tmp_path / "early"), "--no-progress"]) == 1
    assert capsys.readouterr().err == (f"error: {tmp_path / 'early'}: nothing to resume (no last.pt); "
                                       "start it again with --force\n")


@pytest.mark.parametrize("mode", ["cyclical", "monotonic"])
def test_extending_a_run_keeps_its_kl_schedule(mode: str, tiny_root: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """``--resume --set epochs=N`` continues the β schedule the run was planned with (the report's
    KlAnnealing fixes its cycle length at construction); it is not re-planned for N epochs."""
    from lab5.config import get_preset
    from lab5.rundir import read_history
    from lab5.train import KLAnnealing

    run = tmp_path / "run"
    sets = [f"kl_mode={mode}", "kl_cycles=1", "kl_ratio=0.5", "iters_per_epoch=2", "threads=1"]
    assert lab5_main(["train", "--preset", "smoke", "--data", str(tiny_root), "--run-dir", str(run),
                      "--no-progress", "--set", "epochs=2", *sets]) == 0
    assert lab5_main(["train", "--resume", str(run), "--no-progress", "--set", "epochs=4"]) == 0
    assert "the KL schedule keeps its plan for 2 epochs" in capsys.readouterr().out
    planned = get_preset("smoke").replace(**dict(s.split("=") for s in sets), epochs=2)
    betas = [row["beta"] for row in read_history(run)]
    assert betas == [KLAnnealing.from_config(planned)(e) for e in range(4)]
    replanned = [KLAnnealing.from_config(planned.replace(epochs=4))(e) for e in range(4)]
    assert betas != replanned  # the two plans differ here, so the test can tell them apart
    # The example: monotonic over 100 epochs, extended to 200, keeps beta(12) = 0.96.
    lab = get_preset("lab")
    assert KLAnnealing.from_config(lab.replace(epochs=200), epochs=100)(12) == pytest.approx(0.96)
    assert KLAnnealing.from_config(lab.replace(epochs=200))(12) == pytest.approx(0.48)


def test_a_run_saved_before_a_config_field_existed_resumes(smoke_run: Path, tmp_path: Path) -> None:
    """A checkpoint without ``cond_norm`` (saved before the field existed) resumes with the field's default,
    the behaviour it was trained with, instead of failing the architecture check."""
    import shutil

    from lab5.rundir import read_history

    run = tmp_path / "old"
    shutil.copytree(smoke_run, run)
    for name in ("last.pt", "best.pt"):
        state = _load(run / name)
        del state["config"]["cond_norm"]
        torch.save(state, run / name)
    config = json.loads((run / "config.json").read_text())
    del config["cond_norm"]
    (run / "config.json").write_text(json.dumps(config))
    epochs = len(read_history(run))
    assert lab5_main(["train", "--resume", str(run), "--no-progress", "--set", f"epochs={epochs + 1}"]) == 0
    assert len(read_history(run)) == epochs + 1 and _load(run / "last.pt")["config"]["cond_norm"] is False
