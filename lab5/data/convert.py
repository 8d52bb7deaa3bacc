"""Convert the original BAIR release (``softmotion30_44k/{train,test}/*.tfrecords``, frames ``{t}/image_aux1/encoded``,
``{t}/action``, ``{t}/endeffector_pos``) to the lab layout ``DST/<split>/<file name>/<k>/``, without TensorFlow.
Validation: ``SRC/val``, else the first train files as SAVP's preprocessing takes them. Restartable:
``DST/.lab5_convert.json`` records the source, the split plan and the finished files."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from tfrecord import example_pb2
from tfrecord.reader import tfrecord_iterator
from tqdm.auto import tqdm

from lab5.data.layout import DatasetError, PathLike, natural_key, visible_dirs, write_sequence
from lab5.files import progress_bar, write_atomic

STATE_NAME, STATE_FORMAT = ".lab5_convert.json", "lab5-convert"
_AUX_RE = re.compile(r"^([0-9]+)/image_aux1/encoded$")


def _tfrecords(folder: Path) -> list[Path]:
    return sorted((p for p in folder.glob("*.tfrecords") if p.is_file()), key=lambda p: natural_key(p.name))


def _resolve_src(src: Path) -> Path:
    if not src.is_dir():
        raise DatasetError(f"{src}: BAIR source folder does not exist")
    if not (src / "train").is_dir() and not (src / "test").is_dir():
        if (src / "softmotion30_44k").is_dir():  # the folder the release tarball unpacks to
            return src / "softmotion30_44k"
        raise DatasetError(f"{src}: no train/ or test/ folder of *.tfrecords (expected the BAIR release, "
                           f"softmotion30_44k/)")
    return src


def n_val_files(n_train: int, val_fraction: float) -> int:
    """How many leading train files become ``validate`` when SRC has no ``val`` folder: ``ceil(val_fraction * n)``,
    at most n - 1 (SAVP's 9 of BAIR's 169 at 0.05)."""
    if val_fraction <= 0 or n_train < 2:
        return 0
    # 1e-9 absorbs float fuzz (0.05 * 20 must give 1, not 2)
    return min(n_train - 1, max(1, math.ceil(val_fraction * n_train - 1e-9)))


def plan_splits(src: PathLike, val_fraction: float = 0.05) -> list[tuple[str, Path]]:
    """``(lab split, tfrecords file)`` pairs in conversion order; see the module docstring."""
    src = _resolve_src(Path(src))
    train, val, test = (_tfrecords(src / d) for d in ("train", "val", "test"))
    if not train and not test and not val:
        raise DatasetError(f"{src}: no *.tfrecords files in train/, val/ or test/")
    if not (src / "val").is_dir():
        k = n_val_files(len(train), val_fraction)
        val, train = train[:k], train[k:]
    return [("train", p) for p in train] + [("validate", p) for p in val] + [("test", p) for p in test]


def _feature(feats: Any, key: str, kind: str, where: str) -> Any:
    if key not in feats:  # test membership first: indexing a protobuf map inserts the key
        raise DatasetError(f"{where}: missing key '{key}'")
    f = feats[key]
    got = f.WhichOneof("kind")
    if got != kind:
        raise DatasetError(f"{where}: key '{key}' holds {got}, expected {kind}")
    return getattr(f, kind).value


def decode_example(record: bytes | memoryview, where: str,
                   image_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A serialized BAIR example → frames uint8 [T, S, S, 3], actions, positions float32 (errors: ``where: …``)."""
    ex = example_pb2.Example()
    try:
        ex.ParseFromString(record)
    except DecodeError as e:
        raise DatasetError(f"{where}: not a tf.train.Example ({e})") from e
    feats = ex.features.feature
    ts = [int(m.group(1)) for key in feats if (m := _AUX_RE.match(key))]
    if not ts:
        raise DatasetError(f"{where}: missing key '0/image_aux1/encoded' (no frames)")
    n = max(ts) + 1  # a gap raises "missing key" below
    nbytes = image_size * image_size * 3
    frames = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    actions: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    for t in range(n):
        key = f"{t}/image_aux1/encoded"
        values = _feature(feats, key, "bytes_list", where)
        if len(values) != 1:
            raise DatasetError(f"{where}: key '{key}' holds {len(values)} byte strings, expected 1")
        raw = values[0]
        if len(raw) != nbytes:
            hint = " (looks like JPEG/PNG; expected raw pixels)" if raw[:2] in (b"\xff\xd8", b"\x89P") else ""
            raise DatasetError(f"{where}: key '{key}' holds {len(raw)} bytes, expected {nbytes} "
                               f"(raw uint8 {image_size}x{image_size}x3){hint}")
        frames[t] = np.frombuffer(raw, dtype=np.uint8).reshape(image_size, image_size, 3)
        for name, out in (("action", actions), ("endeffector_pos", positions)):
            key = f"{t}/{name}"
            v = np.asarray(_feature(feats, key, "float_list", where), dtype=np.float32)
            if v.size == 0 or (out and v.size != out[0].size):
                raise DatasetError(f"{where}: key '{key}' holds {v.size} floats, expected "
                                   f"{out[0].size if out else 'at least 1'} (as at frame 0)")
            if not np.isfinite(v).all():
                raise DatasetError(f"{where}: key '{key}' holds a non-finite value")
            out.append(v)
    return frames, np.stack(actions), np.stack(positions)


def _start_state(src: Path, dst: Path, plan_json: list[list[str]], force: bool) -> dict[str, Any]:
    """The conversion state to continue: the one in ``dst`` if it resumes ``src``, else a new one."""
    state_path, state, src_id = dst / STATE_NAME, None, str(src.resolve())
    if dst.exists() and not dst.is_dir():
        raise DatasetError(f"{dst}: destination exists and is not a folder")
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError) as e:
            raise DatasetError(f"{state_path}: unreadable conversion state ({e}); use force to start over") from e
        state = state if isinstance(state, dict) and state.get("format") == STATE_FORMAT else None
    if force or state is None or state.get("src") != src_id:
        if dst.is_dir() and any(dst.iterdir()) and not force:
            what = f"holds a conversion of {state.get('src')}" if state is not None else "is not empty"
            raise DatasetError(f"{dst}: destination {what}; pass force=True (CLI: --force) to write into it "
                               f"anyway")
        return {"format": STATE_FORMAT, "version": 1, "src": src_id, "plan": plan_json,
                "replace_existing": bool(force), "done": [], "status": "in_progress"}
    if state.get("plan") != plan_json:
        raise DatasetError(f"{state_path}: the conversion being resumed assigned files to splits differently "
                           f"(other val_fraction or source files changed); pass force=True to start over")
    return state


def convert_bair(src: PathLike, dst: PathLike, force: bool = False, val_fraction: float = 0.05,
                 image_size: int = 64, progress: bool = True) -> dict[str, Any]:
    """Convert the BAIR TFRecords under ``src`` to the lab layout under ``dst``; return a summary. A non-empty
    ``dst`` must hold a conversion of ``src`` (resumed), unless ``force=True`` (its sequence folders replaced)."""
    t0 = time.perf_counter()
    src, dst = _resolve_src(Path(src)), Path(dst)
    plan = [(split, p, p.relative_to(src).as_posix()) for split, p in plan_splits(src, val_fraction)]
    state = _start_state(src, dst, [[split, rel] for split, _, rel in plan], force)
    state_path = dst / STATE_NAME
    dst.mkdir(parents=True, exist_ok=True)
    write_atomic(state_path, json.dumps(state, indent=1))
    todo = [(split, p, rel) for split, p, rel in plan if rel not in state["done"]]
    written = skipped = 0
    with progress_bar(total=sum(p.stat().st_size for _, p, _ in todo), desc="convert-bair", unit="B",
                      unit_scale=True, disable=not progress) as bar:
        for split, path, rel in todo:
            w, s = _convert_file(path, dst / split / path.name, image_size, state["replace_existing"], bar)
            written, skipped = written + w, skipped + s
            state["done"].append(rel)
            write_atomic(state_path, json.dumps(state, indent=1))  # this file is never read again on resume
    state["status"] = "complete"
    write_atomic(state_path, json.dumps(state, indent=1))
    counts: dict[str, int] = {}
    for split, path, _ in plan:
        if (dst / split / path.name).is_dir():
            counts[split] = counts.get(split, 0) + len(visible_dirs(dst / split / path.name))
    files = {s: sum(1 for sp, _, _ in plan if sp == s) for s in counts}
    return {"dst": str(dst), "sequences": counts, "files": files, "written": written, "skipped": skipped,
            "seconds": round(time.perf_counter() - t0, 3)}


def _convert_file(path: Path, out_dir: Path, image_size: int, replace: bool, bar: tqdm) -> tuple[int, int]:
    """Stream one TFRecord file into ``out_dir/<k>/``; returns (written, skipped)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for e in os.scandir(out_dir):  # leftovers of an interrupted run (only one converter per DST)
        if e.is_dir() and e.name.startswith((".tmp-", ".old-")):
            shutil.rmtree(e.path)
    written = skipped = k = 0
    records = tfrecord_iterator(str(path))
    while True:
        try:
            record = next(records, None)
        except (RuntimeError, OSError) as e:
            raise DatasetError(f"{path}: record {k}: truncated or corrupt TFRecord file ({e})") from e
        if record is None:
            break
        seq_dir = out_dir / str(k)
        if seq_dir.is_dir() and not replace:
            skipped += 1  # renamed into place only when complete, so it is finished
        else:
            # The iterator reuses its buffer: decode before asking for the next record.
            frames, actions, positions = decode_example(record, f"{path}: record {k}", image_size)
            write_sequence(seq_dir, frames, actions, positions, overwrite=True)
            written += 1
        bar.update(len(record) + 16)  # 16 = length, its CRC and the data CRC
        k += 1
    if k == 0:
        raise DatasetError(f"{path}: no records (empty TFRecord file)")
    return written, skipped
