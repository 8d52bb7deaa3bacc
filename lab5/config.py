"""One configuration dataclass with named presets, and the one way strings become its values.

Presets: ``lab`` (the lab report's exact settings), ``demo`` (a CPU preset that learns
visibly in minutes), ``smoke`` (a tiny model for tests). ``make_config`` builds a preset with
overrides from papermill (a dict) or the CLI (``key=value`` strings); ``Config.replace`` makes
a checked copy. An unknown key or a bad value raises ``ConfigError`` naming it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

# The value of a switch that the machine decides (``lab5.hardware.resolve_precision``).
AUTO = "auto"
# Switches that take True, False or AUTO.
TRISTATE = ("bf16", "channels_last")

# Fields that change how a run is computed, not what it learns: they neither name a run
# directory nor block loading or resuming it (epochs: a run can be extended; bf16,
# channels_last, compile: the same maths in other arithmetic or kernels).
RUNTIME_FIELDS = ("epochs", "num_workers", "device", "threads", "checkpoint_every", "compile",
                  "bf16", "channels_last")
# What a resume may change besides: the step size, after a non-finite stop.
RESUMABLE_FIELDS = RUNTIME_FIELDS + ("lr", "grad_clip")
# Fields that shape the model's parameters: a checkpoint with other values cannot be loaded.
ARCH_FIELDS = ("arch", "nf", "g_dim", "z_dim", "rnn_size", "predictor_rnn_layers",
               "posterior_rnn_layers", "prior_rnn_layers", "prior", "condition")

#: What the predictor may be given, from the same data files; the one place these names are spelled.
CONDITIONS: dict[str, str] = {
    "actions+positions": "every frame's action and end-effector position (the lab's: the arm's future is given)",
    "actions+start": "every frame's action, the end-effector position of the conditioning frames only "
                     "(Finn et al. 2016, SAVP: the arm's future must come from the actions)",
    "actions": "every frame's action, no position",
    "none": "nothing (action-free, SVG's BAIR setting)",
}

CHOICES: dict[str, tuple[str, ...]] = {
    "arch": ("vgg64", "dcgan64"),
    "condition": tuple(CONDITIONS),
    "prior": ("fixed", "learned", "none"),
    "kl_mode": ("monotonic", "cyclical", "off"),
    "step": ("reference", "exact", "fast"),
    "init": ("svg", "torch"),
    "skip_frame": ("svg", "last"),
    "tf_style": ("listing", "conditioned"),
    "device": ("auto", "cpu", "cuda"),
}


class ConfigError(ValueError):
    """An unknown key, an ill-typed value or an out-of-range value in a Config."""


def check_switch(name: str, value: Any) -> None:
    """A TRISTATE field's value must be True, False or AUTO."""
    if value not in (True, False, AUTO) or isinstance(value, int) and not isinstance(value, bool):
        raise ConfigError(f"config field '{name}': {value!r} is not one of [True, False, '{AUTO}']")


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def coerce(key: str, value: Any, typ: type, allow_auto: bool = False) -> Any:
    """``value`` (a Python value, or a string from the CLI or papermill) as a ``typ``; a value
    that is not one raises ConfigError naming ``key``."""
    if allow_auto and isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    text = value.strip() if isinstance(value, str) else None
    if typ is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif typ in (int, float) and not isinstance(value, bool):
        if isinstance(value, (int, float)) and (typ is float or float(value).is_integer()):
            return typ(value)
        if text is not None:
            try:
                return typ(text)
            except ValueError:
                pass
    elif typ is str and isinstance(value, str):
        return value
    expected = f"{typ.__name__} or '{AUTO}'" if allow_auto else typ.__name__
    raise ConfigError(f"config key '{key}' expects {expected}, got {value!r} ({type(value).__name__})")


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["lr=1e-3", "epochs=7"]`` (``--set``) -> ``{"lr": "1e-3", "epochs": "7"}``."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        out[key.strip()] = raw.strip()
    return out


@dataclass
class Config:
    """Every hyperparameter of a training or evaluation run."""

    preset: str = "lab"
    seed: int = 42
    # --- data -------------------------------------------------------------------
    n_past: int = 2              # conditioning frames
    n_future: int = 10           # predicted frames (training and evaluation)
    random_window: bool = False  # train on a random window instead of the first frames
    num_workers: int = 0
    # --- model ------------------------------------------------------------------
    arch: str = "vgg64"          # encoder/decoder family
    nf: int = 64                 # base width of dcgan64 (vgg64 follows the report's widths)
    g_dim: int = 128             # frame encoding size
    z_dim: int = 64              # latent size; 0 makes a deterministic model
    rnn_size: int = 256
    predictor_rnn_layers: int = 2
    posterior_rnn_layers: int = 1
    prior_rnn_layers: int = 1
    prior: str = "fixed"         # fixed N(0, I) (SVG-FP), learned (SVG-LP), none (deterministic)
    last_frame_skip: bool = False
    # What the predictor is conditioned on (CONDITIONS): the lab's actions and end-effector positions,
    # the actions with the conditioning frames' positions, the actions alone, or nothing.
    condition: str = "actions+positions"
    # Which frame's skips the predicted frames take (without last_frame_skip): "svg", x[n_past-2] as
    # SVG and the report's Listing 2.7; "last", the last conditioning frame x[n_past-1].
    skip_frame: str = "svg"
    # Weights: "svg", N(0, 0.02) for conv and linear weights and N(1, 0.02) for BatchNorm's, biases 0
    # (SVG and the lab template); "torch", PyTorch's default initialisation.
    init: str = "svg"
    # --- optimisation -----------------------------------------------------------
    batch_size: int = 64
    epochs: int = 100
    iters_per_epoch: int = 600   # 0: one pass over the training split per epoch
    lr: float = 2e-3
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 0.0       # 0 disables gradient-norm clipping
    # --- KL annealing (report semantics) ----------------------------------------
    kl_mode: str = "monotonic"
    kl_cycles: int = 4
    kl_ratio: float = 0.5        # fraction of a cycle spent ramping beta up
    kl_beta_min: float = 0.0
    kl_beta_max: float = 1.0
    # --- teacher forcing (scheduled sampling, report semantics) -----------------
    tf_ratio: float = 1.0
    tf_decay_start: int = 100    # epoch at which the ratio starts to decay
    tf_decay_step: float = 0.0   # decrease per epoch after tf_decay_start
    tf_min: float = 0.0
    # "listing", the report's Listing 2.7: a batch without teacher forcing feeds back its predictions
    # from the second frame on (conditioning frames too), and the ratio stays tf_ratio through epoch
    # tf_decay_start, then decays from 1. "conditioned": conditioning frames are always ground truth,
    # and the ratio decays from tf_ratio from epoch tf_decay_start on (lab5 before these fields).
    tf_style: str = "listing"
    # --- validation / checkpoints -----------------------------------------------
    val_every: int = 5           # epochs between validation PSNR measurements
    val_sequences: int = 0       # 0: the whole validation split
    checkpoint_every: int = 0    # iterations between mid-epoch checkpoints; 0: epoch ends only
    # --- performance ------------------------------------------------------------
    step: str = "exact"          # reference | exact (encode once) | fast (batched over time)
    # True, False or "auto". bf16 auto: on where the device computes bfloat16 natively (CUDA;
    # a CPU with AVX512_BF16 or AMX), off where it would be emulated (AVX2). channels_last
    # auto: on with bf16 only. The values a run resolved to are in its config.json.
    bf16: bool | str = False     # bfloat16 autocast
    channels_last: bool | str = AUTO
    compile: bool = False
    device: str = "auto"
    threads: int = 0             # torch intra-op threads; 0 keeps torch's default

    @property
    def n_frames(self) -> int:
        """Frames per training/evaluation sequence."""
        return self.n_past + self.n_future

    def validate(self) -> "Config":
        """Check ranges and choices; raise ConfigError naming the first bad field."""
        for name in TRISTATE:
            check_switch(name, getattr(self, name))
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"config field '{name}': {value!r} is not one of {list(allowed)}")
        positive = ["n_past", "n_future", "batch_size", "epochs", "g_dim", "rnn_size",
                    "predictor_rnn_layers", "posterior_rnn_layers", "prior_rnn_layers",
                    "nf", "val_every", "kl_cycles"]
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"config field '{name}' must be >= 1, got {getattr(self, name)!r}")
        for name in ["z_dim", "iters_per_epoch", "num_workers", "val_sequences",
                     "checkpoint_every", "threads", "tf_decay_start", "grad_clip",
                     "tf_decay_step", "kl_beta_min"]:
            if getattr(self, name) < 0:
                raise ConfigError(f"config field '{name}' must be >= 0, got {getattr(self, name)!r}")
        if self.lr <= 0:
            raise ConfigError(f"config field 'lr' must be > 0, got {self.lr!r}")
        for name in ["beta1", "beta2"]:
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"config field '{name}' must be in [0, 1), got {getattr(self, name)!r}")
        for name in ["tf_ratio", "tf_min"]:
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"config field '{name}' must be in [0, 1], got {getattr(self, name)!r}")
        if not 0 < self.kl_ratio:
            raise ConfigError(f"config field 'kl_ratio' must be > 0, got {self.kl_ratio!r}")
        if self.kl_beta_max <= 0 or self.kl_beta_min > self.kl_beta_max:
            raise ConfigError("config fields 'kl_beta_min'/'kl_beta_max' need 0 <= min <= max, max > 0")
        if self.prior == "none" and self.z_dim != 0:
            raise ConfigError("config field 'z_dim' must be 0 when prior='none' (deterministic model)")
        if self.z_dim == 0 and self.prior != "none":
            raise ConfigError("config field 'prior' must be 'none' when z_dim=0")
        if self.skip_frame == "svg" and self.n_past < 2:
            raise ConfigError("config field 'skip_frame': 'svg' takes the skips of frame n_past-2, so it needs "
                              "n_past >= 2 (or use skip_frame=last)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def replace(self, **values: Any) -> "Config":
        """A checked copy with some fields changed (strings are converted to the fields' types)."""
        return dataclasses.replace(self, **{k: field_value(k, v) for k, v in values.items()}).validate()

    def diff(self, other: "Config", ignore: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
        """``{field: (self's value, other's)}`` for every field outside ``ignore`` where they differ."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if k not in ignore and a[k] != b[k]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        """A Config from ``to_dict``'s keys; a run's config.json may also hold ``resolved`` (what
        the auto switches resolved to on the machine that trained it), which is only a record."""
        return cls().replace(**{**LEGACY, **{k: v for k, v in data.items() if k != "resolved"}})

    @classmethod
    def from_json(cls, path: str | Path) -> "Config":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: config JSON must be an object")
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc


# What a stored config without these fields (written before they existed) meant.
LEGACY = {"skip_frame": "last", "init": "torch", "tf_style": "conditioned"}


def field_value(key: str, value: Any) -> Any:
    """``value`` as the type of Config field ``key`` (a string from the CLI or papermill converted)."""
    if key not in FIELD_TYPES:
        raise ConfigError(f"unknown config key '{key}' (known keys: {', '.join(sorted(FIELD_TYPES))})")
    return coerce(key, value, bool if key in TRISTATE else FIELD_TYPES[key], allow_auto=key in TRISTATE)


FIELD_TYPES: dict[str, type] = {f.name: typing.get_type_hints(Config)[f.name] for f in fields(Config)}

_DEMO = dict(arch="dcgan64", nf=24, g_dim=64, z_dim=8, rnn_size=128, batch_size=16, epochs=6,
             iters_per_epoch=40, kl_cycles=1, tf_decay_start=1, tf_decay_step=0.2, tf_min=0.2,
             val_every=1, val_sequences=64, step="fast", bf16=AUTO, channels_last=False,
             random_window=True, threads=2, skip_frame="last")
PRESETS: dict[str, dict[str, Any]] = {
    # The report: seed 42, batch 64, 100 epochs x 600 iterations, Adam(2e-3, (0.9, 0.999)), rnn 256,
    # predictor 2 layers, posterior 1 layer, g_dim 128, z_dim 64, 2 + 10 frames, VGG64, fixed prior,
    # teacher forcing fixed at 1 (its Figs. 3.2/3.3), validation every 5 epochs: the defaults.
    "lab": {},
    # 04_training learns visibly within the workbook's 10 minutes on a 2-core CPU without native
    # bf16; the shipped checkpoint is this preset trained longer (see README). Skips of the last
    # conditioning frame: 0.3 dB better here than SVG's choice (benchmarks/deviations.py).
    "demo": _DEMO,
    # The demo's model with SVG-LP's learned prior and a constant beta = 1e-5: an assumed pixel noise
    # sigma = sqrt(beta * 64*64*3 / 2) of 0.25 instead of beta = 1's 78 (pixels in [0, 1]), so the KL
    # stays alive and z carries what the first frames and conditions leave open (at SVG's 1e-4 it
    # still collapsed on the embedded data: README). nf 20 keeps the three shipped latent-*
    # checkpoints and the demo's within 30 MB; the epochs are theirs (README).
    "latent": {**_DEMO, "nf": 20, "prior": "learned", "kl_mode": "off", "kl_beta_max": 1e-5,
               "epochs": 16, "iters_per_epoch": 250, "checkpoint_every": 50},
    "smoke": dict(arch="dcgan64", nf=8, g_dim=16, z_dim=4, rnn_size=16, predictor_rnn_layers=1,
                  batch_size=4, epochs=2, iters_per_epoch=3, n_future=3, val_every=1, val_sequences=4,
                  kl_cycles=1, tf_decay_start=1, tf_decay_step=0.5),
}


def get_preset(name: str) -> Config:
    """A fresh Config for a named preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (known presets: {', '.join(PRESETS)})")
    return Config(preset=name, **PRESETS[name]).validate()


def make_config(preset: str = "demo", overrides: dict[str, Any] | None = None,
                assignments: list[str] | None = None) -> Config:
    """A preset with dict overrides (papermill parameters; None values are skipped) and then
    ``key=value`` strings (the CLI's ``--set``)."""
    values = {k: v for k, v in (overrides or {}).items() if v is not None}
    return get_preset(preset).replace(**values).replace(**parse_assignments(assignments or []))
