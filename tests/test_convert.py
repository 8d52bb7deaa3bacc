"""The TFRecord → lab layout converter, on TFRecord files written here with the `tfrecord` package."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tfrecord.writer import TFRecordWriter

from lab5.cli import main as lab5_main
from lab5.data.convert import STATE_NAME, convert_bair, n_val_files, plan_splits
from lab5.data.dataset import BairDataset
from lab5.data.layout import DatasetError, check_root

Record = tuple[np.ndarray, np.ndarray, np.ndarray]  # aux1 frames, actions, positions


def _write_tfrecord(path: Path, n: int, seed: int, drop: str | None = None, short: bool = False) -> list[Record]:
    """``n`` BAIR-like examples of 30 frames; ``drop`` removes a key from the last record,
    ``short`` gives its frame 0 a 100-byte image."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = TFRecordWriter(str(path))
    records = []
    for r in range(n):
        aux = rng.integers(0, 256, (30, 64, 64, 3), dtype=np.uint8)
        actions = rng.normal(scale=0.05, size=(30, 4)).astype(np.float32)
        positions = rng.uniform(0.2, 0.5, size=(30, 3)).astype(np.float32)
        datum = {}
        for t in range(30):
            datum[f"{t}/image_aux1/encoded"] = (aux[t].tobytes(), "byte")
            datum[f"{t}/image_main/encoded"] = (rng.bytes(64 * 64 * 3), "byte")
            datum[f"{t}/action"] = (actions[t].tolist(), "float")
            datum[f"{t}/endeffector_pos"] = (positions[t].tolist(), "float")
        if r == n - 1 and drop:
            del datum[drop]
        if r == n - 1 and short:
            datum["0/image_aux1/encoded"] = (b"\0" * 100, "byte")
        writer.write(datum)
        records.append((aux, actions, positions))
    writer.close()
    return records


def _assert_converted(seq: Path, rec: Record) -> None:
    aux, actions, positions = rec
    for t in range(30):
        img = Image.open(seq / f"{t}.png")
        assert img.mode == "RGB" and np.array_equal(np.asarray(img), aux[t])
    assert np.array_equal(np.loadtxt(seq / "actions.csv", delimiter=",").astype(np.float32), actions)
    assert np.array_equal(
        np.loadtxt(seq / "endeffector_positions.csv", delimiter=",").astype(np.float32), positions
    )


@pytest.fixture
def bair_src(tmp_path: Path) -> tuple[Path, dict[str, list[Record]]]:
    """softmotion30_44k-like source: 3 train files (natural order ≠ lexicographic), 1 test file."""
    src = tmp_path / "softmotion30_44k"
    recs = {}
    for i, name in enumerate(("traj_256_to_511", "traj_512_to_767", "traj_1024_to_1279")):
        recs[f"train/{name}.tfrecords"] = _write_tfrecord(src / "train" / f"{name}.tfrecords", 2, i)
    recs["test/traj_0_to_255.tfrecords"] = _write_tfrecord(src / "test/traj_0_to_255.tfrecords", 2, 9)
    return src, recs


def test_convert_roundtrip_and_val_carving(bair_src: tuple[Path, dict[str, list[Record]]], tmp_path: Path) -> None:
    src, recs = bair_src
    dst = tmp_path / "lab"
    summary = convert_bair(src, dst, progress=False)
    # No SRC/val: the FIRST train file in natural order (traj_256, not the lexicographically
    # first traj_1024) becomes validate, as SAVP moved the first train files to val.
    assert summary["sequences"] == {"train": 4, "validate": 2, "test": 2}
    assert summary["written"] == 8 and summary["skipped"] == 0
    where = {
        "validate/traj_256_to_511.tfrecords": "train/traj_256_to_511.tfrecords",
        "train/traj_512_to_767.tfrecords": "train/traj_512_to_767.tfrecords",
        "train/traj_1024_to_1279.tfrecords": "train/traj_1024_to_1279.tfrecords",
        "test/traj_0_to_255.tfrecords": "test/traj_0_to_255.tfrecords",
    }
    for out, key in where.items():
        for k, rec in enumerate(recs[key]):
            _assert_converted(dst / out / str(k), rec)
    report = check_root(dst)
    assert {s: r.sequences for s, r in report.splits.items()} == {"train": 4, "validate": 2, "test": 2}
    ds = BairDataset(dst, "train")
    assert (len(ds), ds.seq_len, ds.image_size, ds.cond_dim) == (4, 30, 64, 7)
    assert json.loads((dst / STATE_NAME).read_text())["status"] == "complete"

    again = convert_bair(src, dst, progress=False)  # a finished conversion reruns as a no-op
    assert again["written"] == 0 and again["sequences"] == summary["sequences"]


def test_val_rule() -> None:
    assert n_val_files(169, 0.05) == 9  # BAIR: exactly SAVP's traj_256_to_511 … traj_2304_to_2559
    assert [n_val_files(n, 0.05) for n in (1, 2, 3, 20, 21)] == [0, 1, 1, 1, 2]
    assert n_val_files(10, 0.0) == 0 and n_val_files(4, 0.99) == 3


def test_src_val_folder_is_used(bair_src: tuple[Path, dict[str, list[Record]]]) -> None:
    src, _ = bair_src
    _write_tfrecord(src / "val/traj_x.tfrecords", 1, 5)
    plan = [(split, p.name) for split, p in plan_splits(src.parent)]  # parent of softmotion30_44k
    assert plan == [
        ("train", "traj_256_to_511.tfrecords"),
        ("train", "traj_512_to_767.tfrecords"),
        ("train", "traj_1024_to_1279.tfrecords"),
        ("validate", "traj_x.tfrecords"),
        ("test", "traj_0_to_255.tfrecords"),
    ]


def test_interrupted_conversion_resumes_and_skips_finished(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "lab"
    bad = src / "train/traj_256_to_511.tfrecords"
    _write_tfrecord(bad, 3, 0, drop="5/action")
    with pytest.raises(DatasetError, match=re.escape(f"{bad}: record 2: missing key '5/action'")):
        convert_bair(src, dst, progress=False)
    out = dst / "train/traj_256_to_511.tfrecords"
    assert sorted(p.name for p in out.iterdir()) == ["0", "1"]  # no half-written record 2
    before = {k: (out / k / "0.png").stat() for k in ("0", "1")}
    assert json.loads((dst / STATE_NAME).read_text())["status"] == "in_progress"

    recs = _write_tfrecord(bad, 3, 0)  # fixed file: same first records
    summary = convert_bair(src, dst, progress=False)  # no force needed to resume
    assert (summary["written"], summary["skipped"]) == (1, 2)
    for k in ("0", "1"):
        after = (out / k / "0.png").stat()
        assert (after.st_ino, after.st_mtime_ns) == (before[k].st_ino, before[k].st_mtime_ns)
    for k, rec in enumerate(recs):
        _assert_converted(out / str(k), rec)


def test_refuses_non_empty_destination(bair_src: tuple[Path, dict[str, list[Record]]], tmp_path: Path) -> None:
    src, recs = bair_src
    dst = tmp_path / "lab"
    dst.mkdir()
    (dst / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match=re.escape(f"{dst}: destination is not empty; pass force=True")):
        convert_bair(src, dst, progress=False)
    summary = convert_bair(src, dst, force=True, progress=False)
    assert summary["written"] == 8 and (dst / "notes.txt").read_text() == "mine"
    # A conversion of another source is refused too.
    other = tmp_path / "other"
    _write_tfrecord(other / "test/traj_0_to_255.tfrecords", 1, 3)
    with pytest.raises(DatasetError, match="holds a conversion of"):
        convert_bair(other, dst, progress=False)


def test_record_errors_name_file_and_record(tmp_path: Path) -> None:
    src = tmp_path / "src"
    f = src / "test/traj_0_to_255.tfrecords"
    _write_tfrecord(f, 2, 0, short=True)
    msg = re.escape(f"{f}: record 1: key '0/image_aux1/encoded' holds 100 bytes, expected 12288")
    with pytest.raises(DatasetError, match=msg):
        convert_bair(src, tmp_path / "a", progress=False)
    _write_tfrecord(f, 1, 0)
    f.write_bytes(f.read_bytes()[:-5000])
    with pytest.raises(DatasetError, match=re.escape(f"{f}: record 0: truncated")):
        convert_bair(src, tmp_path / "b", progress=False)


def test_convert_cli(
    bair_src: tuple[Path, dict[str, list[Record]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, _ = bair_src
    dst = tmp_path / "lab"
    assert lab5_main(["data", "convert-bair", str(src), "--out", str(dst)]) == 0
    assert "validate: 2 sequences from 1 files" in capsys.readouterr().out
    (dst / ".lab5_convert.json").unlink()  # now just a non-empty folder
    assert lab5_main(["data", "convert-bair", str(src), "--out", str(dst)]) == 1
    assert capsys.readouterr().err.startswith(f"error: {dst}: destination is not empty")
    assert lab5_main(["data", "convert-bair", str(src), "--out", str(dst), "--force"]) == 0
