"""The Solver: batch order, history, determinism, learning on one batch, checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lab5.rundir import load_model, read_history, save_checkpoint
from lab5.config import get_preset
from lab5.data.dataset import BairDataset
from lab5.models.cvae import CVAE
from lab5.train import KLAnnealing, TeacherForcing
from lab5.train import Solver, epoch_batches


def _cfg(**kw):
    return get_preset("smoke").replace(threads=1, **kw)


def test_epoch_batches_is_a_pure_function_of_seed_and_epoch() -> None:
    a = epoch_batches(10, 4, 7, seed=42, epoch=3)
    assert a == epoch_batches(10, 4, 7, seed=42, epoch=3)
    assert a != epoch_batches(10, 4, 7, seed=42, epoch=4) and a != epoch_batches(10, 4, 7, seed=1, epoch=3)
    assert len(a) == 7 and all(len(b) == 4 for b in a)
    flat = sum(a, [])
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))  # chained permutations


def test_epoch_batches_one_pass() -> None:
    batches = epoch_batches(10, 4, 0, seed=0, epoch=0)
    assert [len(b) for b in batches] == [4, 4, 2] and sorted(sum(batches, [])) == list(range(10))
    # A last batch of one sequence is dropped: BatchNorm cannot normalise a single sample.
    assert [len(b) for b in epoch_batches(9, 4, 0, seed=0, epoch=0)] == [4, 4]


def test_history_rows(smoke_run: Path) -> None:
    cfg = get_preset("smoke")
    rows = read_history(smoke_run)
    assert [r["epoch"] for r in rows] == [1, 2]
    kl, tf = KLAnnealing.from_config(cfg), TeacherForcing.from_config(cfg)
    for e, row in enumerate(rows):
        assert set(row) == {"epoch", "loss", "mse", "kl", "beta", "tf_ratio", "tf_used", "val_psnr"}
        assert row["beta"] == kl(e) and row["tf_ratio"] == tf(e)
        assert row["loss"] == pytest.approx(row["mse"] + row["beta"] * row["kl"], rel=1e-5)
        assert 5 < row["val_psnr"] < 60 and 0 <= row["tf_used"] <= 1


def test_one_pass_epochs_and_validation_every(tiny_root: Path, tmp_path: Path) -> None:
    solver = Solver(_cfg(epochs=3, iters_per_epoch=0, val_every=2), tiny_root, tmp_path / "run", progress=False)
    seen: list[int] = []
    step = solver.optimizer.step
    solver.optimizer.step = lambda *a, **k: (seen.append(solver.iteration), step(*a, **k))[1]
    history = solver.fit()
    assert seen == [0, 1] * 3  # 8 training sequences / batch 4 = 2 iterations an epoch
    assert [r["val_psnr"] is not None for r in history] == [False, True, True]  # every 2nd and the last
    assert solver.best == max(r["val_psnr"] for r in history if r["val_psnr"] is not None)


def test_training_is_deterministic_and_validation_leaves_the_rng_alone(tiny_root: Path, tmp_path: Path) -> None:
    def train(name: str, seed: int) -> Solver:
        solver = Solver(_cfg(epochs=1, iters_per_epoch=2, seed=seed), tiny_root, tmp_path / name, progress=False)
        solver.fit()
        return solver

    a, b, c = train("a", 42), train("b", 42), train("c", 7)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    assert a.history == b.history
    assert not torch.equal(a.model.decoder.upc5[0].weight, c.model.decoder.upc5[0].weight)

    state = torch.get_rng_state()
    a.validate()
    assert torch.equal(state, torch.get_rng_state())


def test_loss_falls_when_overfitting_one_batch(tiny_root: Path) -> None:
    cfg = _cfg()
    data = BairDataset(tiny_root, "train", n_frames=cfg.n_frames)
    x = torch.stack([data[i][0] for i in range(4)])
    c = torch.stack([data[i][1] for i in range(4)])
    torch.manual_seed(0)
    model = CVAE(cfg, data.cond_dim)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        out = model(x, c, beta=1e-4, teacher_forcing=True)
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.2 * losses[0], losses[::10]
    assert sum(losses[-5:]) < sum(losses[20:25])  # still going down


def test_checkpoint_round_trip_gives_identical_predictions(tiny_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    solver = Solver(_cfg(epochs=1, iters_per_epoch=2, prior="learned"), tiny_root, run, progress=False)
    solver.fit()
    data = BairDataset(tiny_root, "test", n_frames=solver.cfg.n_frames)
    x = torch.stack([data[i][0] for i in range(3)])
    c = torch.stack([data[i][1] for i in range(3)])

    def predict(model: torch.nn.Module) -> torch.Tensor:
        return model.eval().generate(x, c, solver.cfg.n_past, solver.cfg.n_future,
                        torch.Generator().manual_seed(5))

    expected = predict(solver.model)
    for path in (run / "last.pt", run):  # a file, and a run directory (best.pt)
        model, cfg, state = load_model(path)
        assert cfg == solver.cfg and not model.training
        assert torch.equal(predict(model), expected)

    # save_checkpoint / load_model directly, with a fresh model.
    torch.manual_seed(1)
    fresh = CVAE(solver.cfg, data.cond_dim)
    save_checkpoint({"format": 1, "model": fresh.state_dict(), "config": solver.cfg.to_dict(),
                     "cond_dim": data.cond_dim}, tmp_path / "fresh.pt")
    loaded, _, _ = load_model(tmp_path / "fresh.pt")
    assert torch.equal(predict(loaded), predict(fresh))


def test_cond_norm_run_stores_the_training_statistics_and_resumes_exactly(tiny_root: Path, tmp_path: Path) -> None:
    cfg = _cfg(cond_norm=True, epochs=2, iters_per_epoch=2)
    straight = Solver(cfg, tiny_root, tmp_path / "straight", progress=False)
    straight.fit()
    train = BairDataset(tiny_root, "train").conditions().reshape(-1, straight.model.cond_dim).double()
    torch.testing.assert_close(straight.model.cond_mean, train.mean(0).float())
    torch.testing.assert_close(straight.model.cond_std, train.std(0).float())
    first = Solver(cfg.replace(epochs=1), tiny_root, tmp_path / "resumed", progress=False)
    first.fit()
    resumed = Solver(cfg, tiny_root, tmp_path / "resumed", resume=True, progress=False)
    resumed.fit()
    for (k, va), vb in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(va, vb), k
    model, _, _ = load_model(tmp_path / "resumed" / "last.pt")
    assert torch.equal(model.cond_std, straight.model.cond_std)


@pytest.mark.slow
def test_the_demo_preset_learns_to_beat_copy_last(tmp_path: Path) -> None:
    """The workbook's promise: 04's demo run (6 epochs x 40 iterations on the embedded training set)
    ends with a validation PSNR above copy-last-frame on the same validation sequences."""
    from lab5.evaluate import stack_frames
    from lab5.metrics import copy_last_psnr
    from lab5.sim import embedded_root

    cfg = get_preset("demo")
    solver = Solver(cfg, embedded_root(), tmp_path / "run", progress=False)
    history = solver.fit()
    copy = float(copy_last_psnr(stack_frames(solver.val_set, cfg.n_frames, cfg.val_sequences), cfg.n_past, cfg.n_future).mean())
    assert max(r["val_psnr"] for r in history) > copy, ([r["val_psnr"] for r in history], copy)
