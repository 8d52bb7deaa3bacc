"""The benchmark scripts run end to end at the smoke size and keep their JSON contract
(keys ``reference``/``exact``/``fast`` with ``seq_per_s`` and ``peak_rss_mib``). Their
figures are measurements, quoted in the README, not asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.mark.slow
def test_train_throughput_json_contract(tmp_path):
    out = tmp_path / "bench.json"
    proc = _run("train_throughput.py", "--preset", "smoke", "--batch-size", "2", "--iters", "1",
                "--threads", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    for path in ("reference", "exact", "fast"):
        r = result[path]
        assert r["seq_per_s"] > 0 and r["peak_rss_mib"] > 0 and r["gflop_per_seq"] > 0
    # The exact path does the reference's maths with each frame encoded once: fewer FLOPs.
    assert result["exact"]["gflop_per_seq"] < result["reference"]["gflop_per_seq"]
    assert result["reference"]["ratio_to_reference"] == 1.0
    assert set(result["meta"]["conv3x3_gflop_per_s"]) == {"fp32", "bf16"}
    assert "x ref" in proc.stdout and "exact" in proc.stdout


def test_train_throughput_rejects_unknown_path():
    proc = _run("train_throughput.py", "--paths", "reference,turbo")
    assert proc.returncode != 0 and "turbo" in proc.stderr
