"""Schedules over epochs: KL annealing (β) and teacher forcing (scheduled sampling). Both are pure
functions of the epoch index, so a run resumed from a checkpoint's epoch gets the same values again."""

from __future__ import annotations

from lab5.config import Config


class KLAnnealing:
    """β per epoch, with the report's semantics (Listing 2.6).

    ``cycle_len = epochs // cycles`` and ``step = 1 / (cycle_len * ratio)``.
    monotonic: ``min(β_min + epoch·step, 1)``; cyclical: ``min(β_min + (epoch mod cycle_len)·step, 1)``;
    off: 1. The result is then scaled by ``beta_max`` (1 in the report).
    """

    def __init__(self, mode: str = "monotonic", epochs: int = 100, cycles: int = 4,
                 ratio: float = 0.5, beta_min: float = 0.0, beta_max: float = 1.0) -> None:
        if mode not in ("monotonic", "cyclical", "off"):
            raise ValueError(f"unknown KL annealing mode {mode!r}")
        self.mode = mode
        self.cycle_len = max(1, epochs // cycles)
        self.step = 1.0 / (self.cycle_len * ratio)
        self.beta_min, self.beta_max = beta_min, beta_max

    @classmethod
    def from_config(cls, cfg: Config, epochs: int | None = None) -> "KLAnnealing":
        """``cfg``'s schedule, planned for ``epochs`` (default ``cfg.epochs``): a resumed run keeps the
        plan it started with, as the report's KlAnnealing fixes its cycle length at construction."""
        return cls(cfg.kl_mode, epochs or cfg.epochs, cfg.kl_cycles, cfg.kl_ratio, cfg.kl_beta_min, cfg.kl_beta_max)

    def __call__(self, epoch: int) -> float:
        if self.mode == "off":
            return self.beta_max
        position = epoch if self.mode == "monotonic" else epoch % self.cycle_len
        return self.beta_max * min(self.beta_min + position * self.step, 1.0)


class TeacherForcing:
    """Teacher-forcing ratio of each (0-based) epoch; the solver draws once per batch whether that
    batch is teacher-forced.

    ``listing``, the report's Listing 2.7, which sets ``tf_ratio = max(1 − step·(epoch − start), floor)``
    at the end of every epoch from ``start`` on: ``ratio`` through epoch ``decay_start``, then
    ``max(1 − decay_step·(epoch − 1 − decay_start), floor)``. ``conditioned`` (lab5 before
    ``tf_style``): ``ratio`` until ``decay_start``, then ``max(ratio − decay_step·(epoch − decay_start),
    floor)``, a ``floor`` above ``ratio`` counting as ``ratio``.
    """

    def __init__(self, ratio: float = 1.0, decay_start: int = 0, decay_step: float = 0.0, floor: float = 0.0,
                 style: str = "listing") -> None:
        if style not in ("listing", "conditioned"):
            raise ValueError(f"unknown teacher-forcing style {style!r}")
        self.ratio, self.decay_start, self.decay_step, self.floor = ratio, decay_start, decay_step, floor
        self.style = style

    @classmethod
    def from_config(cls, cfg: Config) -> "TeacherForcing":
        return cls(cfg.tf_ratio, cfg.tf_decay_start, cfg.tf_decay_step, cfg.tf_min, cfg.tf_style)

    def __call__(self, epoch: int) -> float:
        if self.style == "listing":
            if epoch <= self.decay_start:
                return self.ratio
            return max(1.0 - self.decay_step * (epoch - 1 - self.decay_start), self.floor)
        if epoch < self.decay_start:
            return self.ratio
        return max(self.ratio - self.decay_step * (epoch - self.decay_start), min(self.floor, self.ratio))
