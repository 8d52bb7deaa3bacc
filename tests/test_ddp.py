"""Multi-process training: ``torchrun --nproc_per_node=2 -m lab5 train`` with DDP over gloo.

Both ranks must end with identical weights (DDP averages the gradients, so the replicas
take the same optimizer steps) and only rank 0 may write the run directory. The launched
script runs the CLI's ``train`` and then saves each rank's final state_dict.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


@pytest.mark.parametrize("step", ["exact", "fast"])
def test_two_ranks_train_identical_weights(make_root, tmp_path: Path, step: str):
    # 64x64 frames (the encoders need them), 8 frames per sequence for smoke's 2 + 3.
    data = make_root({"train": 8, "validate": 2}, n_frames=8, size=64)
    run_dir, dump_dir = tmp_path / "run", tmp_path / "weights"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # the launcher sets its own
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(_script(tmp_path, dump_dir)), "train", "--preset", "smoke", "--data", str(data), "--run-dir", str(run_dir),
           "--no-progress", "--set", "epochs=1", "iters_per_epoch=3", "device=cpu", "threads=1", f"step={step}"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    rank0 = torch.load(dump_dir / "rank0.pt", map_location="cpu")
    rank1 = torch.load(dump_dir / "rank1.pt", map_location="cpu")
    assert rank0.keys() == rank1.keys()
    # Parameters: bit-identical. BatchNorm running statistics are buffers: DDP broadcasts
    # rank 0's at the start of every forward, then each rank updates them with its own
    # half of the batch, so after the last step they differ (rank 0's are the ones saved).
    params0 = dict(_parameter_names(rank0))
    for name in params0:
        assert torch.equal(rank0[name], rank1[name]), name

    # Only rank 0 writes: one run directory, one config, one history line per epoch.
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["config.json", "data_root.txt", "last.pt", "best.pt", "history.jsonl"])
    assert len((run_dir / "history.jsonl").read_text().splitlines()) == 1
    assert proc.stdout.count("trained 1 epochs") == 1  # rank 0 alone prints the summary
    assert not any(p.name not in ("run", "weights", "root", "train_ranks.py") for p in tmp_path.iterdir())


def _script(folder: Path, dump_dir: Path) -> Path:
    """``python -m lab5`` that also saves every rank's final weights as ``dump_dir/rank<r>.pt``."""
    script = folder / "train_ranks.py"
    script.write_text(
        "import sys\nfrom pathlib import Path\nimport torch\nfrom lab5 import cli, train\n"
        "fit = train.Solver.fit\n"
        "def fit_and_dump(self, *args, **kwargs):\n"
        "    history = fit(self, *args, **kwargs)\n"
        f"    out = Path({str(dump_dir)!r})\n"
        "    out.mkdir(parents=True, exist_ok=True)\n"
        "    torch.save(self.model.state_dict(), out / f'rank{self.dist.rank}.pt')\n"
        "    return history\n"
        "train.Solver.fit = fit_and_dump\n"
        "sys.exit(cli.main(sys.argv[1:]))\n")
    return script


def _parameter_names(state: dict[str, torch.Tensor]):
    """The state_dict entries that are parameters (not BatchNorm buffers)."""
    for name, value in state.items():
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            yield name, value
