"""The lab-layout reader, its validation messages, the cache and the check CLI, on real files."""

from __future__ import annotations

import os
import re
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from lab5.cli import main as lab5_main
from lab5.data.dataset import BairDataset, build_cache, load_cache
from lab5.data.layout import DatasetError, check_root, find_sequences, read_sequence

REAL_SEQ = "test/traj_0_to_255.tfrecords/175"  # the real sample (see tests/conftest.py)

REPO = Path(__file__).parents[1]


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab5", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


# --------------------------------------------------------------------------- the real sequence


def test_real_sequence_matches_pil_and_loadtxt(bair_real: Path) -> None:
    ds = BairDataset(bair_real, "test")
    assert len(ds) == 1 and not ds.using_cache
    assert (ds.seq_len, ds.image_size, ds.cond_dim) == (30, 64, 7)
    frames, cond = ds[0]
    assert frames.shape == (12, 3, 64, 64) and cond.shape == (12, 7)
    assert frames.dtype == torch.float32 and cond.dtype == torch.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0

    seq = bair_real / REAL_SEQ
    pil = np.stack([np.asarray(Image.open(seq / f"{t}.png").convert("RGB")) for t in range(12)])
    assert torch.equal(frames, torch.from_numpy(pil).permute(0, 3, 1, 2).float() / 255)
    ref = np.concatenate(
        [
            np.loadtxt(seq / "actions.csv", delimiter=","),
            np.loadtxt(seq / "endeffector_positions.csv", delimiter=","),
        ],
        axis=1,
    ).astype(np.float32)
    assert np.array_equal(cond.numpy(), ref[:12])

    full_frames, full_cond = read_sequence(seq)
    assert full_frames.shape == (30, 64, 64, 3) and full_frames.dtype == np.uint8
    assert np.array_equal(full_cond, ref)


def test_check_cli_real_data(bair_real: Path) -> None:
    r = _run_cli("data", "check", str(bair_real))
    assert r.returncode == 0, r.stderr
    assert "test: 1 sequence," in r.stdout
    assert "30 frames" in r.stdout


# --------------------------------------------------------------------------- corrupted copies


def _seq(root: Path) -> Path:
    return root / REAL_SEQ


def _rewrite_line(path: Path, lineno: int, fn: Callable[[str], str]) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[lineno - 1] = fn(lines[lineno - 1])
    path.write_text("".join(lines))


def _missing_frame(root: Path) -> tuple[Path, str]:
    (_seq(root) / "5.png").unlink()
    return _seq(root) / "5.png", "missing frame"


def _truncated_png(root: Path) -> tuple[Path, str]:
    p = _seq(root) / "3.png"
    p.write_bytes(p.read_bytes()[:3000])
    return p, "cannot decode"


def _wrong_size(root: Path) -> tuple[Path, str]:
    p = _seq(root) / "7.png"
    Image.open(p).convert("RGB").resize((32, 32)).save(p)
    return p, "32x32, expected 64x64"


def _grayscale(root: Path) -> tuple[Path, str]:
    p = _seq(root) / "2.png"
    Image.open(p).convert("L").save(p)
    return p, "mode 'L'"


def _csv_wrong_rows(root: Path) -> tuple[Path, str]:
    p = _seq(root) / "actions.csv"
    p.write_text("".join(p.read_text().splitlines(keepends=True)[:29]))
    return p, "line 29: file ends after 29 rows, expected 30"


def _csv_wrong_cols(root: Path) -> tuple[Path, str]:
    p = _seq(root) / "endeffector_positions.csv"
    _rewrite_line(p, 4, lambda s: s.rsplit(",", 1)[0] + "\n")
    return p, "line 4: 2 columns, but line 1 has 3"


def _csv_nan(root: Path) -> tuple[Path, str]:
    p = _seq(root) / "actions.csv"
    _rewrite_line(p, 10, lambda s: "nan," + s.split(",", 1)[1])
    return p, "line 10, column 1: non-finite"


def _csv_text(root: Path) -> tuple[Path, str]:
    p = _seq(root) / "endeffector_positions.csv"
    _rewrite_line(p, 3, lambda s: s.split(",", 1)[0] + ",abc," + s.split(",", 2)[2])
    return p, "line 3, column 2: not a number: 'abc'"


def _missing_csv(root: Path) -> tuple[Path, str]:
    (_seq(root) / "actions.csv").unlink()
    return _seq(root) / "actions.csv", "missing file"


def _empty_split(root: Path) -> tuple[Path, str]:
    shutil.rmtree(root / "test" / "traj_0_to_255.tfrecords")
    return root / "test", "empty split"


def _missing_root(root: Path) -> tuple[Path, str]:
    shutil.rmtree(root)
    return root, "does not exist"


CORRUPTIONS = [
    _missing_frame,
    _truncated_png,
    _wrong_size,
    _grayscale,
    _csv_wrong_rows,
    _csv_wrong_cols,
    _csv_nan,
    _csv_text,
    _missing_csv,
    _empty_split,
    _missing_root,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
def test_corrupted_copy_fails_check_and_dataset(
    real_root: Path, corrupt: Callable[[Path], tuple[Path, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, problem = corrupt(real_root)
    # The CLI entry point in-process (a subprocess per case would cost ~2 s of torch import
    # each); test_check_cli_subprocess_error covers the real process boundary.
    assert lab5_main(["data", "check", str(real_root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(path) in err and problem in err
    assert "Traceback" not in err

    with pytest.raises(DatasetError) as info:
        ds = BairDataset(real_root, "test", n_frames=None, use_cache=False)
        ds[0]  # image problems surface at access time
    assert str(path) in str(info.value) and problem in str(info.value)


def test_check_cli_subprocess_error(real_root: Path) -> None:
    path, _ = _truncated_png(real_root)
    r = _run_cli("data", "check", str(real_root))
    assert r.returncode == 1
    assert r.stderr.startswith(f"error: {path}: cannot decode image")
    assert "Traceback" not in r.stderr


def test_image_modes(real_root: Path) -> None:
    seq = _seq(real_root)
    original = read_sequence(seq, n_frames=2)[0]
    rgb = np.asarray(Image.open(seq / "0.png"))
    alpha = np.full((*rgb.shape[:2], 1), 255, dtype=np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA").save(seq / "0.png")
    assert np.array_equal(read_sequence(seq, n_frames=2)[0], original)  # opaque RGBA → RGB

    alpha[0, 0] = 10
    Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA").save(seq / "0.png")
    with pytest.raises(DatasetError, match="0.png: RGBA image with transparent pixels"):
        read_sequence(seq, n_frames=2)
    Image.fromarray(rgb).convert("P").save(seq / "1.png")
    Image.fromarray(rgb).save(seq / "0.png")
    with pytest.raises(DatasetError, match="1.png: image mode 'P'"):
        read_sequence(seq, n_frames=2)
    Image.fromarray(rgb[:, :48]).save(seq / "1.png")
    with pytest.raises(DatasetError, match="1.png: frame is 48x64, frames must be square"):
        read_sequence(seq, n_frames=2)


def test_wrong_column_count_everywhere_and_across_sequences(make_root: Callable[..., Path]) -> None:
    root = make_root({"train": 2})
    p = root / "train/traj_0_to_255.tfrecords/1/actions.csv"
    p.write_text("".join(line.rsplit(",", 1)[0] + "\n" for line in p.read_text().splitlines()))
    with pytest.raises(DatasetError, match=r"1: has 3 action columns, but .*/0 has 4"):
        BairDataset(root, "train")
    with pytest.raises(DatasetError, match="3 action columns"):
        check_root(root)


# --------------------------------------------------------------------------- order, windows


def test_natural_order_and_hidden_folders(make_root: Callable[..., Path]) -> None:
    root = make_root({"train": 0})
    for traj in ("traj_1024_to_1279.tfrecords", "traj_256_to_511.tfrecords"):
        for k in (10, 2):
            src = make_root({"train": 1}, name=f"src_{traj}_{k}")
            shutil.copytree(src / "train/traj_0_to_255.tfrecords/0", root / "train" / traj / str(k))
    (root / "train/traj_256_to_511.tfrecords/.ipynb_checkpoints").mkdir()
    names = [f"{p.parent.name}/{p.name}" for p in find_sequences(root, "train")]
    assert names == [
        "traj_256_to_511.tfrecords/2",
        "traj_256_to_511.tfrecords/10",
        "traj_1024_to_1279.tfrecords/2",
        "traj_1024_to_1279.tfrecords/10",
    ]


def test_n_frames_too_long(make_root: Callable[..., Path]) -> None:
    root = make_root({"train": 1}, n_frames=8)
    with pytest.raises(DatasetError, match="n_frames=9 but sequences have 8 frames"):
        BairDataset(root, "train", n_frames=9)


def test_random_window_deterministic(make_root: Callable[..., Path]) -> None:
    root = make_root({"train": 6}, n_frames=12)
    a = BairDataset(root, "train", n_frames=4, random_window=True, seed=3)
    b = BairDataset(root, "train", n_frames=4, random_window=True, seed=3)
    starts = {}
    for epoch in range(3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        starts[epoch] = [a.window_start(i) for i in range(len(a))]
        assert starts[epoch] == [b.window_start(i) for i in range(len(b))]
        # same (seed, epoch, index) → same start, whatever else was drawn before
        assert a.window_start(4) == np.random.default_rng([3, epoch, 4]).integers(0, 9)
    assert starts[0] != starts[1] and all(0 <= s <= 8 for s in sum(starts.values(), []))
    a.set_epoch(1)
    full = BairDataset(root, "train", n_frames=None)
    for i in range(len(a)):
        s = a.window_start(i)
        assert torch.equal(a[i][0], full[i][0][s : s + 4])
        assert torch.equal(a[i][1], full[i][1][s : s + 4])
    c = BairDataset(root, "train", n_frames=4, random_window=True, seed=4)
    c.set_epoch(1)
    assert [c.window_start(i) for i in range(len(c))] != starts[1]


def test_dataloader_workers_match_main_process(make_root: Callable[..., Path]) -> None:
    root = make_root({"train": 4}, n_frames=10)
    ds = BairDataset(root, "train", n_frames=3, random_window=True, seed=1)
    ds.set_epoch(2)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    batched = torch.cat([x for x, _ in loader])
    assert torch.equal(batched, torch.stack([ds[i][0] for i in range(len(ds))]))


def test_conditions_show_a_bar_only_when_asked_and_slow(make_root: Callable[..., Path],
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import lab5.data.dataset as dataset

    ds = BairDataset(make_root({"train": 3}, n_frames=5), "train", n_frames=None, use_cache=False)
    def shown() -> str:  # the bar's stream is stdout inside a kernel, else stderr
        out, err = capsys.readouterr()
        return out + err

    quiet = ds.conditions(progress=True)  # under a second: the bar's delay hides it
    assert "conditions train" not in shown()
    monkeypatch.setattr(dataset, "CONDITIONS_BAR_DELAY_S", 0.0)
    assert torch.equal(ds.conditions(progress=False), quiet)
    assert "conditions train" not in shown()
    assert torch.equal(ds.conditions(progress=True), quiet)
    assert "conditions train" in shown()


# --------------------------------------------------------------------------- cache


def test_cache_gives_identical_tensors(real_root: Path, make_root: Callable[..., Path]) -> None:
    for root, split in ((real_root, "test"), (make_root({"validate": 3}, n_frames=9), "validate")):
        plain = BairDataset(root, split, n_frames=None, use_cache=False)
        summary = build_cache(root, progress=False)
        assert summary[split]["sequences"] == len(plain)
        cached = BairDataset(root, split, n_frames=None)
        assert cached.using_cache and cached.cache_status == "used"
        assert (cached.seq_len, cached.image_size, cached.cond_dim) == (
            plain.seq_len,
            plain.image_size,
            plain.cond_dim,
        )
        for i in range(len(plain)):
            for x, y in zip(plain[i], cached[i]):
                assert x.dtype == y.dtype and torch.equal(x, y)
        conditions = cached.conditions()  # cond_norm's statistics read every sequence's whole conditions
        assert conditions.dtype == torch.float32 and torch.equal(conditions, plain.conditions())
        assert torch.equal(conditions, torch.stack([plain[i][1] for i in range(len(plain))]))
        loaded = load_cache(root, split)
        assert loaded is not None and isinstance(loaded.frames, np.memmap)
        # Pickling (DataLoader "spawn" workers) sends paths, not the memmapped content.
        blob = pickle.dumps(cached)
        assert len(blob) < 50_000
        assert torch.equal(pickle.loads(blob)[0][0], cached[0][0])


def test_cache_goes_stale(real_root: Path) -> None:
    build_cache(real_root, progress=False)
    assert BairDataset(real_root, "test").using_cache
    frame = _seq(real_root) / "3.png"
    later = time.time_ns() + 2_000_000_000  # well past any timestamp granularity
    os.utime(frame, ns=(later, later))
    assert load_cache(real_root, "test") is None
    with pytest.warns(UserWarning, match="source files changed"):
        ds = BairDataset(real_root, "test")
    assert not ds.using_cache

    build_cache(real_root, progress=False)
    assert BairDataset(real_root, "test").using_cache
    shutil.copytree(_seq(real_root), _seq(real_root).with_name("176"))  # a new sequence
    with pytest.warns(UserWarning, match="set of sequences on disk changed"):
        assert not BairDataset(real_root, "test").using_cache


def test_cache_elsewhere_and_unwritable(real_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    build_cache(real_root, out=out, progress=False)
    assert not (real_root / ".lab5_cache").exists()
    assert BairDataset(real_root, "test", cache_dir=out).using_cache
    assert not BairDataset(real_root, "test").using_cache

    (real_root / ".lab5_cache").write_text("not a folder")
    with pytest.raises(DatasetError, match=r"\.lab5_cache: cannot write the cache"):
        build_cache(real_root, progress=False)


def test_cache_read_only_root(real_root: Path) -> None:
    """A root the cache cannot be written into: read-only to this user, or (what stops root too) a
    file where the cache folder must go. The error names the root and the way out."""
    before = sorted(p.relative_to(real_root) for p in real_root.rglob("*"))
    if os.geteuid() != 0:  # root ignores file permissions
        os.chmod(real_root, 0o555)
        try:
            with pytest.raises(DatasetError, match=f"is {re.escape(str(real_root))} writable.*out="):
                build_cache(real_root, progress=False)
        finally:
            os.chmod(real_root, 0o755)
    (real_root / ".lab5_cache").write_text("a file, not the cache folder")
    with pytest.raises(DatasetError, match=f"cannot write the cache .*is {re.escape(str(real_root))} writable.*out="):
        build_cache(real_root, progress=False)
    assert sorted(p.relative_to(real_root) for p in real_root.rglob("*")) == sorted(before + [Path(".lab5_cache")])


def test_cache_cli(real_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lab5_main(["data", "cache", str(real_root), "--splits", "test"]) == 0
    assert "test: 1 sequence → " in capsys.readouterr().out
    assert BairDataset(real_root, "test").using_cache
    assert lab5_main(["data", "cache", str(real_root), "--splits", "train"]) == 1
    assert "train: split folder does not exist" in capsys.readouterr().err
