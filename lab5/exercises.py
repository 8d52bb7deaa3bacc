"""The assignment's exercises: each one's checks against lab5's own code, and how an answer that passes replaces
the lab5 function it re-implements. The check cells of notebooks 01, 03 and 05 call ``check(grade_id, fn)``; an
answer that passes is installed for the rest of the kernel and saved under ``answers_dir()`` for 04's
``use_answers``. The checks leave torch's global random state as they found it, so the notebooks' numbers hold.
"""

from __future__ import annotations

import ast
import inspect
import math
import os
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn

from lab5 import metrics, train
from lab5.config import get_preset
from lab5.files import home
from lab5.models import cvae, networks

Fn = Callable[..., Any]

#: lab5's own objects, kept before any answer replaces them.
LAB5: dict[str, Any] = {
    "reparameterize": networks.reparameterize, "kl_gaussian": cvae.kl_gaussian,
    "kl_beta": train.KLAnnealing.__call__, "teacher_forcing_ratio": train.TeacherForcing.__call__,
    "step": cvae.CVAE.step, "frame_loss": cvae.CVAE.frame_loss,
    "psnr_per_frame": metrics.psnr_per_frame, "predict_next": cvae.CVAE.predict_next,
}


class ExerciseFailed(AssertionError):
    """An answer that does not do what its exercise asks; the message says what is wrong."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: its notebook, title and points, the lab5 object an answer replaces, lab5's computation in the
    exercise's signature, its checks and hidden checks (each one's docstring says what it tries), its installer."""

    notebook: str
    title: str
    points: int
    replaces: str
    reference: Fn
    checks: tuple[Fn, ...]
    hidden: tuple[Fn, ...]
    install: Callable[[Fn], None]


EXERCISES: dict[str, Exercise] = {}  # grade_id -> its exercise, in the notebooks' order; each section adds its own
PATCHES: dict[str, list[tuple[Any, str, Any]]] = {}  # grade_id -> (owner, attribute, what it held)


# --- installing an answer ------------------------------------------------------------------------------
def patch(grade_id: str, owner: Any, name: str, value: Any) -> None:
    PATCHES.setdefault(grade_id, []).append((owner, name, getattr(owner, name)))
    setattr(owner, name, value)


def replace_function(grade_id: str, original: Fn, new: Fn) -> None:
    """Every attribute of a loaded lab5 module (this one aside) that holds ``original`` gets ``new``."""
    for name, module in list(sys.modules.items()):
        if module is not None and name != __name__ and (name == "lab5" or name.startswith("lab5.")):
            for attr, value in list(vars(module).items()):
                if value is original:
                    patch(grade_id, module, attr, new)


def restore(grade_id: str | None = None) -> None:
    """Undo the installs of one exercise (default: all of them): lab5's own functions again."""
    for gid in [grade_id] if grade_id else list(PATCHES):
        for owner, name, old in reversed(PATCHES.pop(gid, [])):
            setattr(owner, name, old)


def replacing(grade_id: str) -> Callable[[Fn], None]:
    return lambda fn: replace_function(grade_id, LAB5[grade_id], fn)


def install_method(grade_id: str) -> Callable[[Fn], None]:
    return lambda fn: patch(grade_id, cvae.CVAE, grade_id, fn)


# --- helpers of the checks ---------------------------------------------------------------------------
def case(doc: str, *runs: Callable[[Fn], Any]) -> Fn:
    """A check: ``runs`` on the answer in turn; ``doc`` (what it tries, quoted when the answer raises) its docstring."""
    def check_case(fn: Fn) -> None:
        for run in runs:
            run(fn)

    check_case.__doc__ = doc
    return check_case


def randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def close(a: Any, b: Any, tol: float = 1e-5) -> bool:
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=tol, atol=tol))


def num(x: Any) -> float:
    return float(torch.as_tensor(x).detach())


def gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


def shaped(value: Any, shape: tuple[int, ...], what: str, hint: str = "") -> torch.Tensor:
    """``value`` when it is a tensor of ``shape``; else ExerciseFailed naming ``what`` it should be."""
    if not isinstance(value, torch.Tensor):
        raise ExerciseFailed(f"{what} is a {type(value).__name__}, not a torch tensor{hint}.")
    if tuple(value.shape) != tuple(shape):
        raise ExerciseFailed(f"{what} has shape {tuple(value.shape)}, it should be {tuple(shape)}{hint}.")
    return value


def parts(value: Any, n: int, what: str) -> tuple[Any, ...]:
    if not isinstance(value, tuple) or len(value) != n:
        raise ExerciseFailed(f"it returns a {type(value).__name__}: return {what}.")
    return value


# --- 01: the Gaussian KL ---------------------------------------------------------------------------
SIGN = ("the KL is negative ({:.4g}): check its sign; a KL divergence is never negative "
        "(the report's eq. 1.1 makes the same sign error)")
KL_FORM = "½·Σ_z[log σ_p²/σ_q² + (σ_q² + (μ_q − μ_p)²)/σ_p² − 1] / batch"
ONE_KL = " (one number: the sum over z, divided by the batch size)"


def expect_kl(fn: Fn, what: str, mu_q: torch.Tensor, logvar_q: torch.Tensor,
              mu_p: torch.Tensor | None = None, logvar_p: torch.Tensor | None = None, tol: float = 1e-4) -> None:
    args = (mu_q, logvar_q) if mu_p is None else (mu_q, logvar_q, mu_p, logvar_p)
    got = shaped(fn(*args), (), f"{what}: the KL", ONE_KL)
    want = LAB5["kl_gaussian"](*args)
    if close(got, want, tol):
        return
    if num(got) < 0:
        raise ExerciseFailed(f"{what}: " + SIGN.format(num(got)) + ".")
    batch, z_dim = mu_q.shape[0], mu_q[0].numel()
    if close(got, want * batch, tol):
        raise ExerciseFailed(f"{what}: the KL is summed over the batch too: divide the sum by the batch size.")
    if close(got, want / z_dim, tol):
        raise ExerciseFailed(f"{what}: the KL is averaged over z: sum over z, then divide by the batch size.")
    raise ExerciseFailed(f"{what}: the KL is {num(got):.5g} where it should be {num(want):.5g}: "
                         f"check each term of {KL_FORM}.")


def kl_same(fn: Fn) -> None:
    """KL(q ‖ q) = 0"""
    mu, logvar = randn(4, 8, seed=9), randn(4, 8, seed=10)
    got = shaped(fn(mu, logvar, mu.clone(), logvar.clone()), (), "the KL")
    if not close(got, 0.0):
        raise ExerciseFailed(f"KL(q ‖ q) is {num(got):.4g}, it must be 0: a term of {KL_FORM} is missing or wrong.")


def kl_hidden_gradient(fn: Fn) -> None:
    """its gradients with respect to mu_q, logvar_q, mu_p and logvar_p"""
    grads = []
    for f in (fn, LAB5["kl_gaussian"]):
        inputs = [randn(4, 6, seed=s, scale=0.5).requires_grad_() for s in (17, 18, 19, 20)]
        f(*inputs).backward()
        grads.append([torch.zeros(4, 6) if x.grad is None else x.grad for x in inputs])
    for name, got, want in zip(("mu_q", "logvar_q", "mu_p", "logvar_p"), *grads):
        if not close(got, want, 1e-4):
            raise ExerciseFailed(f"the KL's gradient with respect to {name} is wrong: build it from the inputs "
                                 "with torch operations (no .detach(), no .item()).")


EXERCISES["kl_gaussian"] = Exercise(
    "01_derivation", "The KL between two diagonal Gaussians", 2, "lab5.models.cvae.kl_gaussian", LAB5["kl_gaussian"],
    checks=(
        case("one number (a 0-dim tensor) for a batch of 4 latents of 8 dimensions",
             lambda fn: shaped(fn(randn(4, 8, seed=1), randn(4, 8, seed=2)), (), "the KL", ONE_KL)),
        case("against the fixed prior N(0, I) when mu_p and logvar_p are left out",
             lambda fn: expect_kl(fn, "against N(0, I)", randn(4, 8, seed=3), randn(4, 8, seed=4, scale=0.5))),
        case("against a learned prior: random diagonal Gaussians q and p",
             lambda fn: expect_kl(fn, "against a learned prior", randn(4, 8, seed=5), randn(4, 8, seed=6, scale=0.5),
                                  randn(4, 8, seed=7), randn(4, 8, seed=8, scale=0.3))),
        kl_same,
        case("per sequence: a batch of 5 copies of one latent has that latent's KL (sum over z, divide by the batch)",
             lambda fn: expect_kl(fn, "a batch of 5 copies", randn(1, 8, seed=11).expand(5, 8),
                                  randn(1, 8, seed=12).expand(5, 8)))),
    hidden=(
        case("one latent of one dimension; log-variances of ±6 and means of 10",
             lambda fn: expect_kl(fn, "batch 1, z_dim 1", torch.tensor([[1.0]]), torch.tensor([[0.0]])),
             lambda fn: expect_kl(fn, "extreme variances", randn(3, 5, seed=13, scale=10.0),
                                  randn(3, 5, seed=14, scale=6.0), randn(3, 5, seed=15),
                                  randn(3, 5, seed=16, scale=6.0), tol=1e-3)),
        kl_hidden_gradient),
    install=replacing("kl_gaussian"))


# --- 01: reparameterisation --------------------------------------------------------------------------
STD = "it needs the standard deviation σ = exp(logvar / 2)"


def lab5_reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return mu + eps * torch.exp(0.5 * logvar)


def expect_z(fn: Fn, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> None:
    z = shaped(fn(mu, logvar, eps), tuple(mu.shape), "z", " (the shape of mu)")
    if z.dtype != mu.dtype:
        raise ExerciseFailed(f"z is {z.dtype} for {mu.dtype} inputs: keep mu's dtype.")
    if close(z, lab5_reparameterize(mu, logvar, eps)):
        return
    if close(z, mu + eps * logvar.exp()):
        raise ExerciseFailed(f"z scales eps by exp(logvar), the variance: {STD}.")
    if close(z, mu + eps * logvar):
        raise ExerciseFailed(f"z scales eps by logvar, a log-variance: {STD}.")
    if close(z, eps * torch.exp(0.5 * logvar)):
        raise ExerciseFailed("z lacks the mean: z = mu + σ·eps.")
    want = lab5_reparameterize(mu, logvar, eps)
    raise ExerciseFailed(f"z differs from mu + exp(logvar / 2)·eps by up to {gap(z, want):.3g}.")


def reparam_no_noise(fn: Fn) -> None:
    """eps = 0 gives z = mu"""
    mu, logvar = randn(4, 8, seed=1), randn(4, 8, seed=2)
    if not close(shaped(fn(mu, logvar, torch.zeros(4, 8)), (4, 8), "z"), mu):
        raise ExerciseFailed("with eps = 0, z must be mu: z = mu + σ·eps.")


def reparam_gradient(fn: Fn) -> None:
    """gradients reach mu (∂z/∂mu = 1) and logvar (∂z/∂logvar = σ·eps / 2)"""
    mu, logvar, eps = randn(4, 8, seed=7).requires_grad_(), randn(4, 8, seed=8).requires_grad_(), randn(4, 8, seed=9)
    z = fn(mu, logvar, eps)
    if not isinstance(z, torch.Tensor) or not z.requires_grad:
        raise ExerciseFailed("no gradient reaches mu and logvar: compute z from them with torch operations "
                             "(no .detach(), no torch.no_grad()); that is the point of the trick.")
    z.sum().backward()
    want = 0.5 * eps * torch.exp(0.5 * logvar.detach())
    if mu.grad is None or logvar.grad is None or not close(mu.grad, torch.ones(4, 8)) or not close(logvar.grad, want):
        raise ExerciseFailed("the gradient of z is wrong: ∂z/∂mu = 1 and ∂z/∂logvar = σ·eps / 2.")


def reparam_hidden_shapes(fn: Fn) -> None:
    """[T, B, z] inputs in float64, and a zero logvar (σ = 1)"""
    mu, eps = randn(3, 2, 5, seed=10).double(), randn(3, 2, 5, seed=11).double()
    expect_z(fn, mu, randn(3, 2, 5, seed=12).double(), eps)
    expect_z(fn, mu, torch.zeros_like(mu), eps)


def install_reparameterize(fn: Fn) -> None:
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)  # as lab5 draws it
        return fn(mu, logvar, eps)

    replace_function("reparameterize", LAB5["reparameterize"], reparameterize)


EXERCISES["reparameterize"] = Exercise(
    "01_derivation", "The reparameterisation trick", 1, "lab5.models.networks.reparameterize", lab5_reparameterize,
    checks=(
        case("z has the shape of mu ([batch, z_dim] = [4, 8])", lambda fn: shaped(
            fn(randn(4, 8, seed=1), randn(4, 8, seed=2), randn(4, 8, seed=3)), (4, 8), "z", " (the shape of mu)")),
        reparam_no_noise,
        case("random mu, logvar and eps: z = mu + exp(logvar / 2)·eps",
             lambda fn: expect_z(fn, randn(4, 8, seed=4), randn(4, 8, seed=5), randn(4, 8, seed=6))),
        reparam_gradient),
    hidden=(
        reparam_hidden_shapes,
        case("log-variances from about −12 to 12",
             lambda fn: expect_z(fn, randn(6, 4, seed=13), randn(6, 4, seed=14, scale=4.0), randn(6, 4, seed=15)))),
    install=install_reparameterize)


# --- 01: the schedules ------------------------------------------------------------------------------
BETA_FORM = {"monotonic": "monotonic: β = min(β_min + epoch·step, 1)·β_max, with "
                          "cycle_len = max(1, epochs // cycles) and step = 1 / (cycle_len·ratio)",
             "cyclical": "cyclical: the same with epoch mod cycle_len, so β starts again at β_min every cycle",
             "off": "mode 'off': β = β_max every epoch"}


def lab5_kl_beta(epoch: int, mode: str, epochs: int, cycles: int, ratio: float,
                 beta_min: float = 0.0, beta_max: float = 1.0) -> float:
    return LAB5["kl_beta"](train.KLAnnealing(mode, epochs, cycles, ratio, beta_min, beta_max), epoch)


def expect_betas(fn: Fn, mode: str, epochs: int, cycles: int, ratio: float, beta_min: float = 0.0,
                 beta_max: float = 1.0) -> None:
    args = (mode, epochs, cycles, ratio, beta_min, beta_max)
    for epoch in range(epochs):
        got, want = float(fn(epoch, *args)), lab5_kl_beta(epoch, *args)
        if not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12):
            raise ExerciseFailed(f"{mode}, {epochs} epochs, {cycles} cycles, ratio {ratio}, β_min {beta_min}, "
                                 f"β_max {beta_max}: epoch {epoch} gives β = {got:.4g}, it should be {want:.4g} "
                                 f"({BETA_FORM[mode]}).")


def install_kl_beta(fn: Fn) -> None:
    def __call__(self: train.KLAnnealing, epoch: int) -> float:
        return fn(epoch, self.mode, self.epochs, self.cycles, self.ratio, self.beta_min, self.beta_max)

    patch("kl_beta", train.KLAnnealing, "__call__", __call__)


EXERCISES["kl_beta"] = Exercise(
    "01_derivation", "The KL-annealing schedule", 2, "lab5.train.KLAnnealing.__call__", lab5_kl_beta,
    checks=(
        case("monotonic, the report's 100 epochs, 4 cycles, ratio 0.5",
             lambda fn: expect_betas(fn, "monotonic", 100, 4, 0.5)),
        case("cyclical, the report's 100 epochs, 4 cycles, ratio 0.5",
             lambda fn: expect_betas(fn, "cyclical", 100, 4, 0.5)),
        case("mode 'off': β_max every epoch", lambda fn: expect_betas(fn, "off", 10, 4, 0.5, 0.0, 0.3)),
        case("cyclical between β_min 0.1 and β_max 0.5: 10 epochs, 2 cycles, ratio 0.25",
             lambda fn: expect_betas(fn, "cyclical", 10, 2, 0.25, 0.1, 0.5))),
    hidden=(
        case("more cycles than epochs (3 epochs, 5 cycles: cycles of 1 epoch)",
             lambda fn: expect_betas(fn, "cyclical", 3, 5, 1.0), lambda fn: expect_betas(fn, "monotonic", 3, 5, 1.0)),
        case("monotonic at ratios 1 and 2, and the demo's (12 epochs, 1 cycle, ratio 0.25, β_max 0.01)",
             lambda fn: expect_betas(fn, "monotonic", 20, 2, 1.0), lambda fn: expect_betas(fn, "cyclical", 20, 2, 2.0),
             lambda fn: expect_betas(fn, "monotonic", 12, 1, 0.25, 0.0, 0.01))),
    install=install_kl_beta)


TF_FORM = "ratio through epoch decay_start, then max(1 − decay_step·(epoch − 1 − decay_start), floor)"
NEVER_DECAYS = ("the ratio never decays: from epoch decay_start + 2 on it must fall by decay_step per epoch, "
                "down to the floor (Listing 2.7)")


def lab5_teacher_forcing_ratio(epoch: int, ratio: float, decay_start: int, decay_step: float,
                               floor: float) -> float:
    return LAB5["teacher_forcing_ratio"](train.TeacherForcing(ratio, decay_start, decay_step, floor), epoch)


def expect_ratios(fn: Fn, ratio: float, decay_start: int, decay_step: float, floor: float, epochs: int = 40) -> None:
    for epoch in range(epochs):
        got = float(fn(epoch, ratio, decay_start, decay_step, floor))
        want = lab5_teacher_forcing_ratio(epoch, ratio, decay_start, decay_step, floor)
        if not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12):
            raise ExerciseFailed(f"ratio {ratio}, decay_start {decay_start}, decay_step {decay_step}, floor {floor}: "
                                 f"epoch {epoch} gives {got:.4g}, it should be {want:.4g} ({TF_FORM}).")


def tf_held(fn: Fn) -> None:
    """the ratio (0.8) is held through epoch decay_start (5)"""
    for epoch in range(6):
        got = float(fn(epoch, 0.8, 5, 0.1, 0.2))
        if got != 0.8:
            raise ExerciseFailed(f"epoch {epoch} gives {got:.4g}: the ratio stays at `ratio` (0.8) through epoch "
                                 "decay_start (5).")


def tf_decays(fn: Fn) -> None:
    """it decays after decay_start (ratio 1, decay_start 2, decay_step 0.1, floor 0.2)"""
    values = [float(fn(epoch, 1.0, 2, 0.1, 0.2)) for epoch in range(3, 12)]
    if len(set(values)) == 1:
        raise ExerciseFailed(NEVER_DECAYS + f"; epochs 3 to 11 all give {values[0]:.4g}.")
    expect_ratios(fn, 1.0, 2, 0.1, 0.2, epochs=12)


def tf_floor(fn: Fn) -> None:
    """never below the floor (decay_step 0.5, floor 0.25)"""
    low = min(float(fn(epoch, 1.0, 1, 0.5, 0.25)) for epoch in range(12))
    if low < 0.25:
        raise ExerciseFailed(f"the ratio falls to {low:.4g}, below the floor 0.25: max(…, floor).")
    expect_ratios(fn, 1.0, 1, 0.5, 0.25, epochs=12)


def install_teacher_forcing_ratio(fn: Fn) -> None:
    def __call__(self: train.TeacherForcing, epoch: int) -> float:
        if self.style != "listing":
            return LAB5["teacher_forcing_ratio"](self, epoch)
        return fn(epoch, self.ratio, self.decay_start, self.decay_step, self.floor)

    patch("teacher_forcing_ratio", train.TeacherForcing, "__call__", __call__)


EXERCISES["teacher_forcing_ratio"] = Exercise(
    "01_derivation", "The teacher-forcing ratio", 1, "lab5.train.TeacherForcing.__call__ (style 'listing')",
    lab5_teacher_forcing_ratio,
    checks=(tf_held, tf_decays,
            case("Listing 2.7 over 40 epochs: ratio 1, decay_start 10, decay_step 0.05, floor 0.3",
                 lambda fn: expect_ratios(fn, 1.0, 10, 0.05, 0.3)),
            tf_floor),
    hidden=(case("ratio 0.5 from epoch 0 (then from 1, one epoch late), and no decay at all (decay_step 0)",
                 lambda fn: expect_ratios(fn, 0.5, 0, 0.05, 0.0), lambda fn: expect_ratios(fn, 1.0, 3, 0.0, 0.0)),),
    install=install_teacher_forcing_ratio)


# --- 03 and 05: a small CVAE and one frame's inputs -------------------------------------------------
def smoke_model(prior: str = "fixed", condition: str = "actions+positions", train: bool = True) -> cvae.CVAE:
    """The ``smoke`` preset's CVAE (a few thousand weights per network) with PyTorch's larger initial weights,
    in train mode by default: BatchNorm on the batch's statistics makes every output feel a wrong input."""
    extra: dict[str, Any] = {"z_dim": 0} if prior == "none" else {}
    torch.manual_seed(0)
    cfg = get_preset("smoke").replace(prior=prior, condition=condition, init="torch", **extra)
    return cvae.CVAE(cfg, cond_dim=7).train(train)


def smoke_frame(prior: str = "fixed", seed: int = 0, condition: str = "actions+positions", batch: int = 3,
                train: bool = True) -> tuple[cvae.CVAE, dict[str, Any]]:
    """A smoke model and one frame's inputs: h (x_{t-1}'s code), c_prev, h_target (x_t's code), skip, x_t, hidden."""
    model = smoke_model(prior, condition, train)
    g, dim = torch.Generator().manual_seed(seed), model.cfg.g_dim
    h, h_target = (torch.tanh(torch.randn(batch, dim, generator=g)) for _ in range(2))
    hidden = {name: [(torch.randn(a.shape, generator=g), torch.randn(b.shape, generator=g)) for a, b in states]
              for name, states in model.init_hidden(batch, "cpu").items()}
    with torch.no_grad():
        skip = model.eval().encoder(torch.rand(batch, 3, 64, 64, generator=g))[1]
    model.train(train)
    return model, {"h": h, "c_prev": torch.randn(batch, 7, generator=g), "h_target": h_target, "hidden": hidden,
                   "skip": skip, "x_t": torch.rand(batch, 3, 64, 64, generator=g)}


PRIOR_FED_XT = ("the prior was fed x_t's code (h_target): p(z_t | x_{<t}) may only see the past, so feed it "
                "x_{t-1}'s code h")


def diagnose_lstms(model: cvae.CVAE, seen: dict[str, list[Any]], inputs: dict[str, Any], known: bool,
                   finished: bool = True) -> str | None:
    """What the recorded LSTM inputs say is wrong, if anything (a network that did not run counts only when
    the answer ``finished``)."""
    h, h_target = inputs["h"], inputs["h_target"]
    if model.posterior_net is not None and known:
        if not seen["posterior"] and finished:
            return "when x_t is known (h_target given), z_t comes from the posterior q(z_t | x_≤t)"
        if seen["posterior"] and not torch.equal(seen["posterior"][0], h_target):
            return "the posterior q(z_t | x_≤t) must be fed x_t's code h_target, not x_{t-1}'s"
    if model.posterior_net is not None and not known and seen["posterior"]:
        return "with x_t unknown (h_target None) the posterior cannot run: z_t comes from the prior"
    if model.prior_net is not None:
        if not seen["prior"] and finished:
            return "with a learned prior, its LSTM must step on every frame, fed x_{t-1}'s code h"
        if seen["prior"] and torch.equal(seen["prior"][0], h_target) and not torch.equal(h, h_target):
            return PRIOR_FED_XT
        if seen["prior"] and not torch.equal(seen["prior"][0], h):
            return "the prior must be fed x_{t-1}'s code h"
    return diagnose_predictor(model, seen, inputs, known, finished)


def diagnose_predictor(model: cvae.CVAE, seen: dict[str, list[Any]], inputs: dict[str, Any],
                       known: bool, finished: bool) -> str | None:
    if not seen["predictor"]:
        return "the predictor never ran: its code g_t comes from model.predictor([h_{t-1}, z_t, c_{t-1}])" \
            if finished else None
    x, g, z = seen["predictor"][0], model.cfg.g_dim, model.z_dim
    cond = inputs["c_prev"][:, model.cond_columns]
    if x.shape[1] != g + z + cond.shape[1]:
        return (f"the predictor's input has {x.shape[1]} columns; [h_{{t-1}}, z_t, c_{{t-1}}] has {g} + {z} + "
                f"{cond.shape[1]} (the condition's visible columns, c_prev[:, model.cond_columns])")
    if not torch.equal(x[:, :g], inputs["h"]):
        return "the predictor's input must start with x_{t-1}'s code h, then z_t and c_{t-1}"
    if not torch.equal(x[:, g + z:], cond.to(x.dtype)):
        return "the predictor's input must end with c_{t-1}'s visible columns, c_prev[:, model.cond_columns]"
    source = "posterior" if known and model.posterior_net is not None else "prior"
    drawn = seen.get(f"{source} out")
    if drawn and not torch.equal(x[:, g:g + z], drawn[0][0]):
        return f"z_t in the predictor's input must be the {source}'s sample"
    return None


def run_recorded(fn: Fn, model: cvae.CVAE, inputs: dict[str, Any], known: bool, args: tuple[Any, ...]) -> Any:
    """``fn(*args)``, recording what the model's LSTMs are fed (``seen[name]``) and give (``seen[name + " out"]``);
    a diagnosis of what they were fed beats an exception."""
    seen: dict[str, list[Any]] = {}
    handles = []
    for name, net in (("posterior", model.posterior_net), ("prior", model.prior_net), ("predictor", model.predictor)):
        if net is not None:
            seen[name], seen[f"{name} out"] = [], []
            handles.append(net.register_forward_pre_hook(lambda m, fed, name=name: seen[name].append(fed[0])))
            handles.append(net.register_forward_hook(lambda m, fed, gave, name=name: seen[f"{name} out"].append(gave)))
    try:
        out = fn(*args)
    except (NotImplementedError, ExerciseFailed):
        raise
    except Exception:
        if problem := diagnose_lstms(model, seen, inputs, known, finished=False):
            raise ExerciseFailed(problem + ".") from None
        raise
    finally:
        for handle in handles:
            handle.remove()
    if problem := diagnose_lstms(model, seen, inputs, known):
        raise ExerciseFailed(problem + ".")
    return out


def expect_states(got: dict[str, Any], want: dict[str, Any]) -> None:
    for name, states in want.items():
        if not all(close(a, b) and close(c, d) for (a, c), (b, d) in zip(got.get(name, []), states)):
            raise ExerciseFailed(f"hidden['{name}'] does not hold that LSTM's new state after the frame: store what "
                                 "the LSTM returns back into hidden.")


# --- 03: one frame of the training step, and its loss --------------------------------------------------
def expect_step(fn: Fn, model: cvae.CVAE, inputs: dict[str, Any], known: bool, what: str) -> dict[str, Any]:
    """``fn`` against lab5's step on one frame; returns lab5's new LSTM states."""
    target = inputs["h_target"] if known else None
    mine, ref = dict(inputs["hidden"]), dict(inputs["hidden"])
    args = (inputs["h"], inputs["c_prev"])
    want = LAB5["step"](model, *args, ref, target, torch.Generator().manual_seed(7))
    got = run_recorded(fn, model, inputs, known, (model, *args, mine, target, torch.Generator().manual_seed(7)))
    got = parts(got, 2, "(g, kld): the predictor's code and the frame's KL")
    g = shaped(got[0], tuple(want[0].shape), f"{what}: g", " ([batch, g_dim])")
    kld = shaped(got[1], (), f"{what}: the KL", " (one number)")
    if not close(kld, want[1], 1e-4):
        zero = "" if known else "; with x_t unknown there is no posterior and the KL is 0"
        raise ExerciseFailed(f"{what}: the frame's KL is {num(kld):.5g}, it should be {num(want[1]):.5g}{zero} "
                             "(KL(q ‖ p) of the posterior against the prior, model.kl(posterior, prior)).")
    if not close(g, want[0], 1e-4):
        raise ExerciseFailed(f"{what}: g differs from lab5's by up to {gap(g, want[0]):.3g}: draw the posterior's z, "
                             "then the prior's, from the generator passed in.")
    expect_states(mine, ref)
    return ref


def step_hidden_sequence(fn: Fn) -> None:
    """three frames in a row, learned prior, reading the actions only (condition 'actions')"""
    model, inputs = smoke_frame("learned", 4, "actions")
    for t in range(3):
        inputs["hidden"] = expect_step(fn, model, inputs, t != 1, f"frame {t + 1} of 3, actions only")


EXERCISES["step"] = Exercise(
    "03_model_build", "One frame of the training step", 3, "lab5.models.cvae.CVAE.step", LAB5["step"],
    checks=(
        case("the fixed prior, x_t known: (g, kld), g [batch, g_dim] and the KL one number, as lab5's",
             lambda fn: expect_step(fn, *smoke_frame(), True, "fixed prior, x_t known")),
        case("a learned prior, x_t known: posterior on x_t's code, prior on x_{t-1}'s, predictor, KL, states",
             lambda fn: expect_step(fn, *smoke_frame("learned", 1), True, "learned prior, x_t known")),
        case("the fixed prior, x_t unknown (h_target None): z from N(0, I), KL 0",
             lambda fn: expect_step(fn, *smoke_frame("fixed", 2), False, "fixed prior, x_t unknown")),
        case("a learned prior, x_t unknown: z from the prior's LSTM, KL 0",
             lambda fn: expect_step(fn, *smoke_frame("learned", 3), False, "learned prior, x_t unknown"))),
    hidden=(
        step_hidden_sequence,
        case("a deterministic model (z_dim 0, prior 'none')",
             lambda fn: expect_step(fn, *smoke_frame("none", 5), True, "deterministic model"))),
    install=install_method("step"))


def expect_frame_loss(fn: Fn, seed: int, kld: float, beta: float, what: str, batch: int = 3,
                      train: bool = True) -> None:
    model, inputs = smoke_frame(seed=seed, batch=batch, train=train)
    g = randn(batch, model.cfg.g_dim, seed=3).tanh()
    kl = torch.tensor(kld)
    want = LAB5["frame_loss"](model, g, inputs["skip"], inputs["x_t"], kl, beta)
    got = parts(fn(model, g, inputs["skip"], inputs["x_t"], kl, beta), 3, "(x_hat, loss, mse)")
    x_hat = shaped(got[0], tuple(want[0].shape), f"{what}: x_hat", " (a batch of frames)")
    loss, mse = (shaped(v, (), f"{what}: the {n}", " (one number)") for v, n in zip(got[1:], ("loss", "MSE")))
    if not close(x_hat, want[0], 1e-4):
        raise ExerciseFailed(f"{what}: x_hat is not the decoder's frame from g with the skips: model.decoder(g, skip).")
    if not close(mse, want[2], 1e-4):
        how = (": take the mean over the pixels, not the sum" if close(mse, want[2] * want[0].numel(), 1e-4)
               else " (the mean of (x_hat − x_t)²)")
        raise ExerciseFailed(f"{what}: the MSE is {num(mse):.5g}, it should be {num(want[2]):.5g}{how}.")
    for wrong, message in ((mse, "the loss lacks its β·KL term"), (mse + kl, "the KL is not weighted by β"),
                           (mse - beta * kl, "the KL enters with the wrong sign: loss = MSE + β·KL")):
        if not close(loss, want[1], 1e-4) and close(loss, wrong, 1e-4):
            raise ExerciseFailed(f"{what}: {message}.")
    if not close(loss, want[1], 1e-4):
        raise ExerciseFailed(f"{what}: the loss is {num(loss):.5g}, it should be MSE + β·KL = "
                             f"{num(want[1]):.5g}.")


EXERCISES["frame_loss"] = Exercise(
    "03_model_build", "One frame's loss", 2, "lab5.models.cvae.CVAE.frame_loss", LAB5["frame_loss"],
    checks=(case("returns (x_hat, loss, mse): a batch of frames and two numbers",
                 lambda fn: expect_frame_loss(fn, 6, 0.7, 0.3, "β 0.3, KL 0.7")),
            case("loss = MSE + β·KL against lab5's reference loop, for two β",
                 lambda fn: expect_frame_loss(fn, 7, 1.3, 0.5, "β 0.5, KL 1.3"),
                 lambda fn: expect_frame_loss(fn, 7, 1.3, 2.0, "β 2.0, KL 1.3"))),
    hidden=(case("β = 0 (loss = MSE), a batch of one frame, and a KL of 0",
                 lambda fn: expect_frame_loss(fn, 8, 0.9, 0.0, "β 0"),
                 lambda fn: expect_frame_loss(fn, 9, 0.0, 1.0, "one frame, KL 0", batch=1, train=False)),),
    install=install_method("frame_loss"))


# --- 05: PSNR, and one generation step ---------------------------------------------------------------
PER_CHANNEL = ("the MSE was pooled over the colour channels before the log: the grader's PSNR is computed per "
               "channel, 10·log10(1 / MSE) of each colour channel, then averaged over the channels")
PER_FRAME = " ([B, T]: one number per frame)"


def pooled_psnr(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    mse = ((pred.double() - truth.double()) ** 2).flatten(2).mean(2)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def frames(shape: tuple[int, ...], seed: int,
           noise: tuple[float, float, float] = (0.3, 0.02, 0.1)) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, truth) in [0, 1], each colour channel with its own error level."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.rand(shape, generator=g)
    sigma = torch.tensor(noise).view(3, 1, 1)
    return (truth + sigma * torch.randn(shape, generator=g)).clamp(0, 1), truth


def expect_psnr(fn: Fn, pred: torch.Tensor, truth: torch.Tensor, what: str) -> None:
    got = shaped(fn(pred, truth), tuple(pred.shape[:2]), f"{what}: the PSNR", PER_FRAME)
    want = LAB5["psnr_per_frame"](pred, truth)
    if close(got, want, 1e-5):
        return
    if close(got, pooled_psnr(pred, truth), 1e-5):
        raise ExerciseFailed(f"{what}: {PER_CHANNEL}.")
    if not torch.isfinite(got).all():
        raise ExerciseFailed(f"{what}: an exact channel (MSE 0) gives {got[~torch.isfinite(got)][0]}: count it as "
                             "100 dB (clamp the MSE at 1e-10).")
    raise ExerciseFailed(f"{what}: the PSNR differs from the grader's by up to {gap(got, want):.3g} dB "
                         "(10·log10(1 / MSE) per colour channel, pixels in [0, 1], then the mean over the channels).")


def psnr_exact(fn: Fn) -> None:
    """an exact channel counts as 100 dB, an exact frame scores 100 dB"""
    pred, truth = frames((2, 3, 3, 16, 16), seed=4)
    pred[:, 0, 1] = truth[:, 0, 1]
    pred[:, 1] = truth[:, 1]
    expect_psnr(fn, pred, truth, "exact channels")


EXERCISES["psnr_per_frame"] = Exercise(
    "05_evaluation", "The grader's PSNR", 2, "lab5.metrics.psnr_per_frame", LAB5["psnr_per_frame"],
    checks=(
        case("[B, T, 3, H, W] -> [B, T]",
             lambda fn: shaped(fn(*frames((2, 4, 3, 16, 16), seed=1)), (2, 4), "the PSNR", PER_FRAME)),
        case("per colour channel: frames whose three channels have very different errors",
             lambda fn: expect_psnr(fn, *frames((2, 4, 3, 16, 16), seed=2, noise=(0.4, 0.005, 0.05)),
                                    "channels of unequal error")),
        case("random frames", lambda fn: expect_psnr(fn, *frames((3, 5, 3, 32, 32), seed=3), "random frames")),
        psnr_exact),
    hidden=(case("one sequence of one 8×12 frame; 16 sequences of 10 frames of 64×64 pixels",
                 lambda fn: expect_psnr(fn, *frames((1, 1, 3, 8, 12), seed=5), "one frame of 8×12 pixels"),
                 lambda fn: expect_psnr(fn, *frames((16, 10, 3, 64, 64), seed=6, noise=(0.05, 0.2, 0.01)),
                                        "16 sequences of 10 frames")),),
    install=replacing("psnr_per_frame"))


def expect_prediction(fn: Fn, model: cvae.CVAE, inputs: dict[str, Any], what: str) -> None:
    mine, ref = dict(inputs["hidden"]), dict(inputs["hidden"])
    args = (inputs["h"], inputs["c_prev"])
    with torch.no_grad():
        want = LAB5["predict_next"](model, *args, ref, inputs["skip"], torch.Generator().manual_seed(8))
        got = run_recorded(fn, model, inputs, False,
                           (model, *args, mine, inputs["skip"], torch.Generator().manual_seed(8)))
        x_hat = shaped(got, tuple(want.shape), f"{what}: the frame", " (a batch of decoded frames)")
        again = fn(model, *args, dict(inputs["hidden"]), inputs["skip"], torch.Generator().manual_seed(9))
    if not close(x_hat, want, 1e-4):
        mean = model.z_dim > 0 and close(again, x_hat, 1e-6)
        raise ExerciseFailed(f"{what}: the frame differs from lab5's by up to {gap(x_hat, want):.3g}" + (
            ": z_t must be a draw from the prior (with the generator passed in), not its mean." if mean else
            ": z_t from the prior (N(0, I), or the learned prior's LSTM on h), the predictor, "
            "then model.decoder(g, skip)."))
    expect_states(mine, ref)


def predict_generation(fn: Fn) -> None:
    """CVAE.generate with your predict_next: 2 conditioning frames, 3 predicted, learned prior"""
    model, g = smoke_model("learned"), torch.Generator().manual_seed(12)
    x, c = torch.rand(2, 5, 3, 64, 64, generator=g), torch.randn(2, 5, 7, generator=g)
    want = model.generate(x, c, 2, 3, torch.Generator().manual_seed(13))
    with mock.patch.object(cvae.CVAE, "predict_next", fn):
        got = model.generate(x, c, 2, 3, torch.Generator().manual_seed(13))
    if not close(got, want, 1e-4):
        raise ExerciseFailed(f"CVAE.generate with your predict_next predicts other frames than lab5's (up to "
                             f"{gap(got, want):.3g} apart).")


EXERCISES["predict_next"] = Exercise(
    "05_evaluation", "One generation step with the prior", 2, "lab5.models.cvae.CVAE.predict_next",
    LAB5["predict_next"],
    checks=(
        case("one frame with the fixed prior N(0, I): the frame, the predictor's new state",
             lambda fn: expect_prediction(fn, *smoke_frame("fixed", 10), "fixed prior")),
        case("one frame with a learned prior: z from its LSTM on x_{t-1}'s code",
             lambda fn: expect_prediction(fn, *smoke_frame("learned", 11), "learned prior")),
        predict_generation),
    hidden=(case("a deterministic model (z_dim 0), one sequence, and a model reading the actions only",
                 lambda fn: expect_prediction(fn, *smoke_frame("none", 14, batch=2), "none prior, batch 2"),
                 lambda fn: expect_prediction(fn, *smoke_frame(seed=14, batch=1, train=False), "fixed prior, batch 1"),
                 lambda fn: expect_prediction(fn, *smoke_frame("learned", 14, "actions", 2),
                                              "learned prior, batch 2")),),
    install=install_method("predict_next"))


# --- checking, and the saved answers -------------------------------------------------------------------
def run_check(grade_id: str, case: Fn, fn: Fn) -> None:
    """One check, its failure turned into ExerciseFailed with a message that names the exercise."""
    __tracebackhide__ = True
    try:
        case(fn)
    except ExerciseFailed as failed:
        raise ExerciseFailed(f"{grade_id}: {failed}") from None
    except NotImplementedError:
        title = EXERCISES[grade_id].title
        raise ExerciseFailed(f"{title}: not answered yet (the function raises NotImplementedError)") from None
    except Exception as error:  # the answer's own error, shown with the check that met it
        raise ExerciseFailed(f"{grade_id}: it raised {type(error).__name__}: {error} "
                             f"(checking: {case.__doc__}).") from None


def check(grade_id: str, fn: Fn, hidden: bool = False) -> None:
    """Run exercise ``grade_id``'s checks (``hidden``: its hidden ones) on ``fn``: if they pass, ``fn`` replaces lab5's
    function and its source is saved for 04; if not, ExerciseFailed says what is wrong and lab5 keeps its own."""
    __tracebackhide__ = True
    exercise = EXERCISES[grade_id]
    cases = exercise.hidden if hidden else exercise.checks
    restore(grade_id)  # the checks compare with lab5's own function, not an earlier answer
    try:
        with torch.random.fork_rng(devices=[]):
            for case in cases:
                run_check(grade_id, case, fn)
    except ExerciseFailed:
        (answers_dir() / f"{grade_id}.py").unlink(missing_ok=True)
        raise
    exercise.install(fn)
    saved = "" if save_answer(grade_id, fn) else " (its source could not be saved, so 04 will not use it)"
    n = len(cases)
    done = f"{grade_id}: {n} {'hidden ' if hidden else ''}check{'s' * (n != 1)} passed"
    print(done if hidden else f"{done}; lab5 uses your function from here on{saved}")


def answers_dir() -> Path:
    """Where answers that passed their checks are kept for 04: ``$LAB5_ANSWERS``, else answers/ in the lab5 home."""
    return Path(os.environ["LAB5_ANSWERS"]) if os.environ.get("LAB5_ANSWERS") else home() / "answers"


def save_answer(grade_id: str, fn: Fn) -> bool:
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return False
    path = answers_dir() / f"{grade_id}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return True


def load_answer(path: Path) -> Fn:
    """The function a saved answer defines, run in a namespace of its own with torch and math imported."""
    source = path.read_text()
    names = [node.name for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]
    if not names:
        raise ValueError("it defines no function")
    namespace: dict[str, Any] = {"torch": torch, "math": math, "nn": nn, "F": nn.functional}
    exec(compile(source, str(path), "exec"), namespace)
    return namespace[names[0]]


def use_answers() -> list[str]:
    """Install every answer saved by 01, 03 and 05 (in 04: the student's code trains); their grade_ids."""
    restore()
    used = []
    for grade_id, exercise in EXERCISES.items():
        path = answers_dir() / f"{grade_id}.py"
        if path.is_file():
            try:
                exercise.install(load_answer(path))
                used.append(grade_id)
            except Exception as error:  # a broken file leaves lab5's own function in place
                print(f"{grade_id}: the saved answer does not load ({type(error).__name__}: {error}); "
                      "lab5's own is used")
    books = sorted({EXERCISES[g].notebook[:2] for g in used})
    where = books[0] if len(books) == 1 else ", ".join(books[:-1]) + " and " + books[-1] if books else ""
    print(f"training with your {', '.join(used)} (from {where})" if used else "no saved answers: lab5's own functions")
    return used
