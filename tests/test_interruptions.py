"""Interrupted and failing writes in real processes: a first generation of a synthetic set killed with
SIGKILL, a folder lab5 did not write, and a full disk (a real ENOSPC) at a checkpoint. The in-process
cases (a torn checkpoint, a non-finite loss) are in test_reliability.py, kill-and-resume in test_resume.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lab5.cli import main as lab5_main
from lab5.rundir import load_checkpoint, read_history
from lab5.sim.generate import EVAL_SEED, FORMAT_VERSION, GENERATOR, MANIFEST, PARTIAL, drop_outdated, make_synthetic

SIZES = {"train": 64, "validate": 8, "test": 8, "seed": 1}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _sequences(root: Path) -> int:
    return sum(p.name.isdigit() for p in root.glob("*/traj_*/*"))


def test_a_killed_generation_is_completed_by_the_next_run(tmp_path: Path, cli_popen_kwargs: dict[str, Any],
                                                          lab5_cli) -> None:
    """``data make-synthetic`` (the embedded sets' make_synthetic) and its two forked writers killed at once
    with SIGKILL, as a kernel restart kills a notebook's process group, once some sequences are on disk;
    the same command again completes the set, saying so in one line, into files byte-identical to an
    uninterrupted run's (the PSNRs of SYNTHETIC.json included)."""
    out = tmp_path / "set"
    args = ["data", "make-synthetic", "--out", str(out), "--workers", "2", *(f"--{k}={v}" for k, v in SIZES.items())]
    proc = subprocess.Popen([sys.executable, "-m", "lab5", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, **cli_popen_kwargs)
    try:
        while _sequences(out) < 8:
            assert proc.poll() is None, "the generation ended before it could be killed: raise SIZES"
            time.sleep(0.01)
        time.sleep(0.02)  # a moment later the writers are mostly amid a sequence, in a hidden folder to remove
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    written = _sequences(out)
    assert (out / PARTIAL).is_file() and not (out / MANIFEST).exists() and written < sum(SIZES.values()) - 1

    r = lab5_cli(*args)
    assert r.returncode == 0, r.stderr
    said = [line for line in r.stdout.splitlines() if "interrupted" in line]
    assert said == [f"{out}: completing this set, whose generation was interrupted ({written} of 80 sequences "
                    "written)"]
    make_synthetic(reference := tmp_path / "reference", workers=1, progress=False, **SIZES)
    assert _files(out) == _files(reference)


def test_ctrl_c_during_generation_stops_in_one_line_and_the_next_run_completes(
        tmp_path: Path, cli_popen_kwargs: dict[str, Any], lab5_cli) -> None:
    """SIGINT (Ctrl-C in a terminal) to the generating process group: one line, exit 130, no traceback;
    the same command again completes the set."""
    out = tmp_path / "set"
    args = ["data", "make-synthetic", "--out", str(out), "--workers", "2", *(f"--{k}={v}" for k, v in SIZES.items())]
    proc = subprocess.Popen([sys.executable, "-m", "lab5", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **cli_popen_kwargs)
    while _sequences(out) < 8:
        assert proc.poll() is None, "the generation ended before it could be interrupted: raise SIZES"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err   # above the line: the progress bar
    assert err.splitlines()[-1] == "interrupted: python -m lab5 data stopped", err
    r = lab5_cli(*args)
    assert r.returncode == 0 and (out / MANIFEST).is_file() and _sequences(out) == sum(SIZES.values()) - 1, r.stderr


def test_a_folder_lab5_did_not_write_is_refused_in_one_line_and_kept(smoke_run: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LAB5_HOME", str(tmp_path))
    foreign = tmp_path / "data" / f"embedded-eval-seed{EVAL_SEED}"  # where evaluate's default set goes
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine\n")
    for args in (["evaluate", "--run-dir", smoke_run, "--no-progress"],
                 ["data", "make-synthetic", "--out", foreign, "--train", "1"]):
        assert lab5_main([str(a) for a in args]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {foreign} is not empty and is not a synthetic set "
                                                       "that lab5 wrote")
    assert _files(foreign) == {"notes.txt": b"mine\n"}


def test_an_unfinished_set_of_an_older_format_is_dropped(tmp_path: Path) -> None:
    root = tmp_path / "set"
    root.mkdir()
    (root / PARTIAL).write_text(json.dumps({"generator": GENERATOR, "format_version": FORMAT_VERSION - 1}))
    assert drop_outdated(root) and not root.exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_at_a_checkpoint_stops_in_one_line_and_resume_works(
        smoke_run: Path, tmp_path: Path, cli_popen_kwargs: dict[str, Any], lab5_cli) -> None:
    """A real ENOSPC without privileges: every write to /dev/full fails with it. A checkpoint is first
    written to write_atomic's temporary sibling ``.last.pt.tmp-<pid>``; that name, made a symlink to
    /dev/full as soon as the training process's pid is known (it imports torch and loads the run for
    seconds before its first checkpoint), sends torch.save's writes there. A tmpfs of a few MB would
    need root to mount, and RLIMIT_FSIZE gives EFBIG, not ENOSPC."""
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)  # 2 epochs: last.pt after epoch 2
    last = run / "last.pt"
    before = last.read_bytes()
    resume = ["train", "--resume", str(run), "--no-progress", "--set", "epochs=3"]
    proc = subprocess.Popen([sys.executable, "-m", "lab5", *resume], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **cli_popen_kwargs)
    (tmp := run / f".last.pt.tmp-{proc.pid}").symlink_to("/dev/full")
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: cannot write {last}: No space left on device; training stopped, the last good "
                          f"checkpoint is {last} (saved after 2 epoch(s) + 0 iteration(s)); free some space, then "
                          f"`python -m lab5 train --resume "), err
    assert last.read_bytes() == before and load_checkpoint(last)["epoch"] == 2
    assert not tmp.is_symlink()  # write_atomic removed its temporary name

    r = lab5_cli(*resume)
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(last)["epoch"] == 3 and [row["epoch"] for row in read_history(run)] == [1, 2, 3]
