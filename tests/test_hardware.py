"""bf16 and channels_last chosen by capability: ``auto`` resolves per device, an explicit
bf16=true where bf16 is emulated warns once, and a run records what it resolved to.

The AVX2 cases run in a subprocess with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``,
which makes PyTorch and oneDNN dispatch AVX2 kernels only (bf16 emulated) on any x86 host."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from lab5.config import AUTO, ConfigError, get_preset, make_config
from lab5.hardware import native_bf16, resolve_precision

REPO = Path(__file__).parents[1]
x86_only = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                              reason="the AVX2 dispatch settings exist on x86 only")
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_auto_is_a_value_of_the_switches() -> None:
    cfg = make_config("smoke", assignments=["bf16=auto", "channels_last=AUTO"])
    assert cfg.bf16 == AUTO and cfg.channels_last == AUTO
    assert make_config("smoke", assignments=["bf16=true"]).bf16 is True
    assert get_preset("demo").bf16 == AUTO
    with pytest.raises(ConfigError, match="config key 'bf16' expects bool or 'auto'"):
        make_config("smoke", assignments=["bf16=sometimes"])
    with pytest.raises(ConfigError, match="channels_last"):
        get_preset("smoke").replace(channels_last="maybe")


def test_resolution_rules() -> None:
    native = native_bf16("cpu")
    auto = resolve_precision(AUTO, AUTO, "cpu")
    assert auto.bf16 is native and auto.channels_last is native  # channels_last follows bf16
    assert resolve_precision(False, AUTO, "cpu").channels_last is False
    assert resolve_precision(AUTO, False, "cpu").channels_last is False
    forced = resolve_precision(True, AUTO, "cpu")
    assert forced.bf16 is True
    assert (forced.warning() is None) is native
    assert "bf16 auto -> " in auto.describe() and auto.as_dict()["native_bf16"] is native
    with pytest.raises(ConfigError, match="bf16"):
        resolve_precision("false", AUTO, "cpu")  # a string other than auto is not a switch


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


@x86_only
def test_avx2_kernels_resolve_bf16_off() -> None:
    proc = _python("from lab5.config import get_preset; from lab5.hardware import resolve_precision as r\n"
                   "p = r(get_preset('demo').bf16, get_preset('demo').channels_last, 'cpu')\n"
                   "print(p.bf16, p.channels_last, p.native_bf16); print(p.describe())", AVX2_ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second = proc.stdout.splitlines()[:2]
    assert first == "False False False"
    assert second.startswith("bf16 auto -> off (bf16 emulated on this CPU: AVX2")


@x86_only
@pytest.mark.parametrize("bf16", ["true", "auto"])
def test_train_records_resolution_and_warns_once_when_forced(bf16: str, tiny_root: Path,
                                                              tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "lab5", "train", "--preset", "smoke", "--data", str(tiny_root), "--run-dir",
         str(run_dir), "--set", f"bf16={bf16}", "epochs=1", "iters_per_epoch=1", "threads=1", "device=cpu"],
        cwd=REPO, env={**os.environ, **AVX2_ENV}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: bf16=true")]
    assert len(warnings) == (1 if bf16 == "true" else 0), proc.stderr[-2000:]
    if warnings:
        assert "slower than in float32" in warnings[0] and "AVX2" in warnings[0]
    summary = [line for line in proc.stdout.splitlines() if line.startswith("training smoke preset")]
    assert len(summary) == 1 and "step exact" in summary[0]
    assert ("bf16 on" if bf16 == "true" else "bf16 auto -> off") in summary[0]
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["bf16"] == (True if bf16 == "true" else "auto")
    assert saved["resolved"]["bf16"] is (bf16 == "true")
    assert saved["resolved"]["native_bf16"] is False and saved["resolved"]["cpu_capability"] == "AVX2"
