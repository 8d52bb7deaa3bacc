"""The assignment's exercises (lab5.exercises): lab5's own code and the notebooks' solutions pass every check,
each planted mistake fails with the message that names it, a passing answer replaces lab5's function and
restores cleanly, and 04's use_answers puts saved answers back."""

from __future__ import annotations

import json
import linecache
import math
from pathlib import Path

import pytest
import torch

import lab5.derivation
import lab5.evaluate
import lab5.metrics
import lab5.models.cvae
import lab5.models.networks
import lab5.train
import lab5.viz
from lab5 import exercises as ex
from lab5.models.cvae import CVAE
from lab5.train import KLAnnealing, TeacherForcing

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(autouse=True)
def answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh answers folder; lab5's own functions back after each test."""
    monkeypatch.setenv("LAB5_ANSWERS", str(tmp_path / "answers"))
    yield tmp_path / "answers"
    ex.restore()


def solutions() -> dict[str, tuple[str, dict, dict]]:
    """grade_id -> (notebook, answer cell, check cell) of the committed notebooks."""
    out = {}
    for path in sorted(NOTEBOOKS.glob("0*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for answer, check in zip(cells, cells[1:]):
            meta = answer["metadata"].get("nbgrader", {})
            if meta.get("solution"):
                out[check["metadata"]["nbgrader"]["grade_id"]] = (path.stem, answer, check)
    return out


def answer_function(cell: dict):
    """The function an answer cell defines, its source findable by inspect as in a kernel."""
    source, filename = "".join(cell["source"]), f"<cell {cell['id']}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"torch": torch, "math": math}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[source.split("def ", 1)[1].split("(", 1)[0]]


# --- what passes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("grade_id", list(ex.EXERCISES))
def test_lab5_itself_passes_every_check(grade_id: str, capsys: pytest.CaptureFixture, answers: Path) -> None:
    reference = ex.EXERCISES[grade_id].reference
    ex.check(grade_id, reference)
    ex.check(grade_id, reference, hidden=True)
    out = capsys.readouterr().out.splitlines()
    n = len(ex.EXERCISES[grade_id].checks)
    assert out[0] == f"{grade_id}: {n} checks passed; lab5 uses your function from here on"
    assert out[1].startswith(f"{grade_id}: ") and "hidden check" in out[1]
    assert (answers / f"{grade_id}.py").is_file()


def test_every_exercise_has_its_cells_with_nbgrader_metadata() -> None:
    found = solutions()
    assert set(found) == set(ex.EXERCISES)
    for grade_id, (notebook, answer, check) in found.items():
        exercise = ex.EXERCISES[grade_id]
        assert notebook == exercise.notebook
        assert answer["metadata"]["nbgrader"] == {"grade": False, "solution": True, "locked": False,
                                                  "grade_id": f"{grade_id}_answer", "schema_version": 3}
        assert check["metadata"]["nbgrader"] == {"grade": True, "solution": False, "locked": True,
                                                 "grade_id": grade_id, "points": exercise.points, "schema_version": 3}
        body = "".join(answer["source"])
        assert "    ### BEGIN SOLUTION\n" in body and body.endswith("    ### END SOLUTION")
        assert "".join(check["source"]).endswith(
            f'ex.check("{grade_id}", {grade_id})\n### BEGIN HIDDEN TESTS\n'
            f'ex.check("{grade_id}", {grade_id}, hidden=True)\n### END HIDDEN TESTS')


@pytest.mark.parametrize("grade_id", list(ex.EXERCISES))
def test_the_notebooks_solutions_pass(grade_id: str) -> None:
    fn = answer_function(solutions()[grade_id][1])
    ex.check(grade_id, fn)
    ex.check(grade_id, fn, hidden=True)


def test_the_solutions_compute_lab5s_numbers_exactly() -> None:
    """The solution workbook trains and generates the same numbers as lab5: generation bit for bit."""
    from lab5.config import get_preset

    x, c = torch.rand(3, 5, 3, 64, 64), torch.randn(3, 5, 7)
    for grade_id in ("step", "frame_loss", "predict_next", "kl_gaussian", "reparameterize"):
        ex.check(grade_id, answer_function(solutions()[grade_id][1]))
    torch.manual_seed(0)
    model = CVAE(get_preset("smoke").replace(prior="learned"), cond_dim=7)
    model.train()
    mine = [model(x, c, 0.3, tf, step=s) for tf, s in ((True, "reference"), (False, "exact"))]
    model.eval()
    generated = model.generate(x, c, 2, 3, torch.Generator().manual_seed(1))
    ex.restore()
    torch.manual_seed(0)
    model = CVAE(get_preset("smoke").replace(prior="learned"), cond_dim=7)
    model.train()
    theirs = [model(x, c, 0.3, tf, step=s) for tf, s in ((True, "reference"), (False, "exact"))]
    model.eval()
    assert torch.equal(generated, model.generate(x, c, 2, 3, torch.Generator().manual_seed(1)))
    assert all(torch.equal(a, b) for m, t in zip(mine, theirs) for a, b in zip(m, t))


# --- planted mistakes ------------------------------------------------------------------------------------
def kl_with_the_reports_sign(mu_q, logvar_q, mu_p=None, logvar_p=None):
    mu_p = torch.zeros_like(mu_q) if mu_p is None else mu_p
    logvar_p = torch.zeros_like(logvar_q) if logvar_p is None else logvar_p
    kld = 0.5 * (logvar_q - logvar_p - (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() + 1)
    return kld.sum() / mu_q.shape[0]


def reparameterize_with_the_variance(mu, logvar, eps):
    return mu + eps * torch.exp(logvar)


def step_with_the_prior_fed_x_t(model, h, c_prev, hidden, h_target=None, generator=None):
    posterior = model.posterior(h_target, hidden, generator) if h_target is not None else None
    seen = h_target if h_target is not None else h
    prior = model.prior(seen, hidden, generator) if posterior is None or model.prior_net is not None else None
    z, kld = (prior[0], h.new_zeros(())) if posterior is None else (posterior[0], model.kl(posterior, prior))
    g, hidden["predictor"] = model.predictor(torch.cat([h, z, c_prev[:, model.cond_columns]], 1), hidden["predictor"])
    return g, kld


def psnr_pooled_over_channels(pred, truth):
    mse = ((pred.double() - truth.double()) ** 2).flatten(2).mean(2)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).float()


def ratio_that_never_decays(epoch, ratio, decay_start, decay_step, floor):
    return ratio


def unanswered(*args, **kwargs):
    # YOUR CODE HERE
    raise NotImplementedError()


PLANTED = {
    "kl_gaussian": (kl_with_the_reports_sign, ("sign", "never negative")),
    "reparameterize": (reparameterize_with_the_variance, ("standard deviation",)),
    "step": (step_with_the_prior_fed_x_t, ("prior", "x_{t-1}")),
    "psnr_per_frame": (psnr_pooled_over_channels, ("per channel",)),
    "teacher_forcing_ratio": (ratio_that_never_decays, ("never decays",)),
}


@pytest.mark.parametrize("grade_id", list(PLANTED))
def test_a_planted_mistake_fails_with_the_message_that_names_it(grade_id: str, answers: Path) -> None:
    fn, phrases = PLANTED[grade_id]
    with pytest.raises(ex.ExerciseFailed) as failed:
        ex.check(grade_id, fn)
    message = str(failed.value)
    assert message.startswith(f"{grade_id}: ") and all(p in message for p in phrases), message
    assert isinstance(failed.value, AssertionError) and len(message) < 400
    assert not (answers / f"{grade_id}.py").exists()


@pytest.mark.parametrize("grade_id", list(ex.EXERCISES))
def test_an_unanswered_exercise_says_so(grade_id: str) -> None:
    with pytest.raises(ex.ExerciseFailed, match="not answered yet") as failed:
        ex.check(grade_id, unanswered)
    title = ex.EXERCISES[grade_id].title
    assert str(failed.value) == f"{title}: not answered yet (the function raises NotImplementedError)"


def loss_without_the_kl(model, g, skip, x_t, kld, beta):
    x_hat = model.decoder(g, skip)
    mse = torch.nn.functional.mse_loss(x_hat, x_t)
    return x_hat, mse, mse


def test_other_mistakes_are_named() -> None:
    cases = {
        "kl_gaussian": (lambda mu_q, lv_q, mu_p=None, lv_p=None: ex.LAB5["kl_gaussian"](mu_q, lv_q, mu_p, lv_p)
                        * mu_q.shape[0], "divide the sum by the batch size"),
        "frame_loss": (loss_without_the_kl, "lacks its β·KL term"),
        "kl_beta": (lambda epoch, mode, epochs, cycles, ratio, beta_min=0.0, beta_max=1.0:
                    min(beta_min + epoch / (epochs // cycles * ratio), 1.0) * beta_max, "epoch 25"),
        "predict_next": (lambda model, h, c_prev, hidden, skip, generator=None:
                         model.decoder(model.step(h, c_prev, hidden, None, None)[0], skip), "prior"),
    }
    for grade_id, (fn, phrase) in cases.items():
        with pytest.raises(ex.ExerciseFailed, match=phrase):
            ex.check(grade_id, fn)


# --- installing ------------------------------------------------------------------------------------------
def test_a_passing_function_replaces_lab5s_everywhere_and_restore_undoes_it() -> None:
    def kl_gaussian(mu_q, logvar_q, mu_p=None, logvar_p=None):
        return ex.LAB5["kl_gaussian"](mu_q, logvar_q, mu_p, logvar_p)

    def psnr(pred, truth):
        return ex.LAB5["psnr_per_frame"](pred, truth)

    ex.check("kl_gaussian", kl_gaussian)
    ex.check("psnr_per_frame", psnr)
    ex.check("step", ex.LAB5["step"])
    assert lab5.models.cvae.kl_gaussian is kl_gaussian and lab5.derivation.kl_gaussian is kl_gaussian
    assert all(m.psnr_per_frame is psnr for m in (lab5.metrics, lab5.train, lab5.evaluate, lab5.viz))
    assert CVAE.step is ex.LAB5["step"]
    ex.restore("psnr_per_frame")
    assert lab5.metrics.psnr_per_frame is ex.LAB5["psnr_per_frame"] and lab5.models.cvae.kl_gaussian is kl_gaussian
    ex.restore()
    assert lab5.models.cvae.kl_gaussian is lab5.derivation.kl_gaussian is ex.LAB5["kl_gaussian"]
    assert not ex.PATCHES


def test_a_failing_check_installs_nothing_and_takes_back_an_earlier_answer(answers: Path) -> None:
    ex.check("psnr_per_frame", ex.LAB5["psnr_per_frame"])
    assert (answers / "psnr_per_frame.py").is_file()
    with pytest.raises(ex.ExerciseFailed):
        ex.check("psnr_per_frame", psnr_pooled_over_channels)
    assert lab5.train.psnr_per_frame is ex.LAB5["psnr_per_frame"] and not ex.PATCHES
    assert not (answers / "psnr_per_frame.py").exists()


def test_the_reparameterisation_adapter_keeps_lab5s_random_stream() -> None:
    mu, logvar = torch.randn(3, 4), torch.randn(3, 4)
    want = lab5.models.networks.reparameterize(mu, logvar, torch.Generator().manual_seed(5))
    ex.check("reparameterize", answer_function(solutions()["reparameterize"][1]))
    assert lab5.models.networks.reparameterize is not ex.LAB5["reparameterize"]
    assert torch.equal(lab5.models.networks.reparameterize(mu, logvar, torch.Generator().manual_seed(5)), want)


def test_the_schedule_adapters_give_lab5s_schedules() -> None:
    schedules = [KLAnnealing("cyclical", 20, 3, 0.5, 0.1, 0.4), KLAnnealing("off", beta_max=0.2),
                 TeacherForcing(0.9, 3, 0.1, 0.2), TeacherForcing(0.9, 3, 0.1, 0.2, "conditioned")]
    want = [[s(e) for e in range(20)] for s in schedules]
    for grade_id in ("kl_beta", "teacher_forcing_ratio"):
        ex.check(grade_id, answer_function(solutions()[grade_id][1]))
    assert KLAnnealing.__call__ is not ex.LAB5["kl_beta"]
    assert [[s(e) for e in range(20)] for s in schedules] == want


def test_checks_leave_the_global_random_state_alone() -> None:
    state = torch.get_rng_state()
    ex.check("step", ex.LAB5["step"])
    assert torch.equal(torch.get_rng_state(), state)


def test_use_answers_installs_the_saved_answers(answers: Path, capsys: pytest.CaptureFixture) -> None:
    assert ex.use_answers() == [] and capsys.readouterr().out == "no saved answers: lab5's own functions\n"
    for grade_id in ("kl_gaussian", "step"):
        ex.check(grade_id, answer_function(solutions()[grade_id][1]))
    (answers / "psnr_per_frame.py").write_text("def broken(:\n")
    ex.restore()
    capsys.readouterr()
    assert ex.use_answers() == ["kl_gaussian", "step"]
    out = capsys.readouterr().out
    assert out.endswith("training with your kl_gaussian, step (from 01 and 03)\n") and "psnr_per_frame:" in out
    assert lab5.models.cvae.kl_gaussian.__code__.co_filename == str(answers / "kl_gaussian.py")
    assert CVAE.step is not ex.LAB5["step"] and CVAE.step.__name__ == "step"
