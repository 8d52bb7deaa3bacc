"""The benchmark scripts run end to end at the smoke size and keep their JSON contract
(keys ``reference``/``exact``/``fast`` with ``seq_per_s`` and ``peak_rss_mib``). Their
figures are measurements, quoted in the README, not asserted here."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lab5.config import RESUMABLE_FIELDS, Config, make_config, parse_assignments
from lab5.rundir import read_history

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
    meta = result["meta"]
    assert meta["cpu_model"] and meta["cpu_capability"] and isinstance(meta["native_bf16"], bool)
    # The fast path's bf16 is auto: on exactly where the CPU has native bf16.
    assert meta["resolved_bf16"] == {"reference": False, "exact": False, "fast": meta["native_bf16"]}


@pytest.mark.slow
def test_train_throughput_measures_the_avx2_path_on_any_host(tmp_path):
    out = tmp_path / "bench.json"
    proc = _run("train_throughput.py", "--preset", "smoke", "--batch-size", "2", "--iters", "1",
                "--threads", "1", "--paths", "fast", "--isa", "avx2", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads(out.read_text())["meta"]
    assert meta["cpu_capability"] == "AVX2" and meta["onednn_max_cpu_isa"] == "AVX2"
    assert meta["native_bf16"] is False and meta["resolved_bf16"] == {"fast": False}


def test_train_throughput_rejects_unknown_path():
    proc = _run("train_throughput.py", "--paths", "reference,turbo")
    assert proc.returncode != 0 and "turbo" in proc.stderr


@pytest.mark.slow
def test_fast_quality_json_contract(tmp_path, tiny_root):
    out = tmp_path / "quality.json"
    # 30 iterations take the smoke model from 11.8 dB (untrained) to about 21 dB; seeds then spread
    # by about 1 dB (sd 0.6-1.2 measured), so 2 dB passes two paths that learn alike and fails one
    # that does not learn (9 dB below).
    proc = _run("fast_quality.py", "--data", str(tiny_root), "--preset", "smoke", "--epochs", "1",
                "--iters-per-epoch", "30", "--seeds", "1,2", "--paths", "reference,fast",
                "--val-sequences", "4", "--tolerance", "2", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"reference", "fast"} and result["seeds"] == [1, 2]
    for path in ("reference", "fast"):
        psnrs = [r["val_psnr"] for r in result["runs"][path].values()]
        assert len(psnrs) == 2 and result["mean_val_psnr"][path] == pytest.approx(sum(psnrs) / 2)
    assert result["difference_db"] == pytest.approx(result["mean_val_psnr"]["fast"]
                                                    - result["mean_val_psnr"]["reference"])
    assert result["within_tolerance"] is True and abs(result["difference_db"]) <= 2
    assert min(result["mean_val_psnr"].values()) > 16  # both paths learned (untrained: 11.8 dB)


def test_fast_quality_rejects_bad_seeds():
    proc = _run("fast_quality.py", "--seeds", "1,x")
    assert proc.returncode != 0 and "--seeds" in proc.stderr


def test_step_variants_runs_each_variant_in_its_own_process():
    proc = _run("step_variants.py", "--preset", "smoke", "--iters", "1", "--batch-size", "2",
                "--variants", "batched,batched-noalloc,batched-cl-bf16")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == ["batched", "batched-noalloc", "batched-cl-bf16"]
    assert all(float(r[1]) > 0 and r[2] == "seq/s" for r in rows)
    bad = _run("step_variants.py", "--preset", "smoke", "--step", "fast", "--variants", "per-frame")
    assert bad.returncode != 0 and "per-frame" in bad.stderr


def test_changed_regions_split_the_changed_pixels_and_agree_with_evaluate(tmp_path, tiny_root):
    from lab5.data.dataset import BairDataset
    from lab5.evaluate import evaluate_model
    from lab5.rundir import load_model

    out = tmp_path / "regions.json"
    proc = _run("changed_regions.py", "--checkpoint", "checkpoints/demo", "--data", str(tiny_root),
                "--sequences", "4", "--threads", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    # The same model, sampling seed and sequences through evaluate: the same changed-pixel scores.
    model, _, _ = load_model(ROOT / "checkpoints" / "demo")
    ev = evaluate_model(model, BairDataset(tiny_root, "test", n_frames=12), samples=1, seed=0,
                        with_ssim=False, with_shuffled=False, progress=False)
    assert r["model"]["score"] == pytest.approx(ev["changed"]["psnr"]["mean"], abs=1e-4)
    assert r["copy_last"]["score"] == pytest.approx(ev["copy_last"]["changed"]["psnr"]["mean"], abs=1e-4)
    assert r["changed_fraction"] == pytest.approx(ev["changed"]["fraction"])
    for who in ("model", "copy_last"):
        regions = r[who]["regions"]
        assert sum(g["pixel_share"] for g in regions.values()) == pytest.approx(1.0)
        assert sum(g["error_share"] for g in regions.values()) == pytest.approx(1.0)
        assert regions["other"]["pixel_share"] == 0.0  # every changed pixel has a cause the masks know
        assert regions["arm"]["pixel_share"] > 0.3  # in these 4 scenes the arm moves in every frame
        for g in regions.values():  # the truth pasted into a region can only raise each frame's PSNR
            assert g["score_with_truth_here"] is None or g["score_with_truth_here"] >= r[who]["score"] - 1e-9
    assert "| arm |" in proc.stdout and "| objects |" in proc.stdout


def test_changed_regions_refuses_data_the_simulator_does_not_reproduce(tmp_path, tiny_root):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    manifest = root / "SYNTHETIC.json"
    manifest.write_text(manifest.read_text().replace('"seed": 0', '"seed": 5'))
    proc = _run("changed_regions.py", "--data", str(root), "--sequences", "2", "--threads", "1")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "does not reproduce" in proc.stderr and str(root) in proc.stderr


@pytest.mark.parametrize("checkpoint", ["demo", "latent-start"])  # standardised conditions, raw ones
def test_condition_weights_reads_each_column_of_a_checkpoint(tmp_path, checkpoint):
    from lab5.rundir import load_model

    proc = _run("condition_weights.py", f"checkpoints/{checkpoint}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "column" not in line]
    assert [r.split(" | ")[0][2:] for r in rows] == ["dx", "dy", "closure", "height", "x", "y", "z"]
    cells = {name: (top, moved) for name, top, moved in
             ((cell.strip() for cell in r.strip("|").split("|")) for r in rows)}
    assert all((moved == "–") == (name in ("closure", "height", "z")) for name, (_, moved) in cells.items())
    model, cfg, _ = load_model(ROOT / "checkpoints" / checkpoint)
    assert f"cond_norm {cfg.cond_norm}" in proc.stdout
    w = model.predictor.embed.weight.detach()[:, cfg.g_dim + cfg.z_dim:].abs().amax(0)
    std = model.cond_std if cfg.cond_norm else torch.ones(7)
    # A pixel of arm motion: 0.0125 m of position, an action of 0.025 m (half of it each frame).
    for j, name, step in ((0, "dx", 0.025), (1, "dy", 0.025), (4, "x", 0.0125), (5, "y", 0.0125)):
        assert float(cells[name][0]) == pytest.approx(float(w[j]), abs=0.006)
        assert float(cells[name][1]) == pytest.approx(float(w[j] * step / std[j]), abs=6e-4)


def test_condition_weights_names_a_missing_checkpoint(tmp_path):
    proc = _run("condition_weights.py", str(tmp_path / "missing.pt"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "missing.pt" in proc.stderr


def _per_epoch(commands: list[str], lr: float) -> list[tuple[float, str]]:
    """(learning rate, data root) of each epoch that a list of ``python -m lab5 train`` commands runs, in order."""
    plan: list[tuple[float, str]] = []
    data = ""
    for command in commands:
        args = shlex.split(command, comments=True)
        sets = parse_assignments(args[args.index("--set") + 1:])
        data = args[args.index("--data") + 1] if "--data" in args else data
        lr = float(sets.get("lr", lr))
        plan += [(lr, data)] * (int(sets["epochs"]) - len(plan))
    return plan


def test_train_demo_script_repeats_the_documented_stages_and_ends_in_the_shipped_config():
    """benchmarks/train_demo.sh, dry: epoch for epoch, the learning rate and data of docs/results.md's
    commands; applied as lab5 applies them (a preset with --set, then resumes that may change only the
    resumable fields), its commands end in checkpoints/demo's config."""
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "train_demo.sh")], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "DRY_RUN": "1", "RUN": "runs/x"})
    assert proc.returncode == 0, proc.stderr
    script = [line[2:] for line in proc.stdout.splitlines() if " -m lab5 train " in line]
    docs = (ROOT / "docs" / "results.md").read_text().replace("\\\n", " ")  # join continued lines
    start = docs.rindex("```bash", 0, docs.index("--run-dir runs/demo-cn"))
    block = docs[start:docs.index("```\n", start + len("```bash"))]
    documented = [line for line in block.splitlines() if " -m lab5 train " in line]
    preset_lr = make_config("demo").lr
    assert len(_per_epoch(documented, preset_lr)) == 95
    assert _per_epoch(script, preset_lr) == _per_epoch(documented, preset_lr)
    first = shlex.split(script[0])[4:]
    assert first[:4] == ["--preset", "demo", "--data", "data/embedded-seed0"]
    cfg = make_config("demo", assignments=first[first.index("--set") + 1:])
    for command in script[1:]:
        args = shlex.split(command)[4:]
        assert args[:2] == ["--resume", "runs/x"]
        new = cfg.replace(**parse_assignments(args[args.index("--set") + 1:]))
        assert set(cfg.diff(new)) <= set(RESUMABLE_FIELDS), args
        cfg = new
    shipped = Config.from_json(ROOT / "checkpoints" / "demo" / "config.json")
    assert cfg.diff(shipped) == {}
    assert len(read_history(ROOT / "checkpoints" / "demo")) == cfg.epochs == 95
    assert "export --run-dir runs/x" in proc.stdout and "--checkpoint best" in proc.stdout
