"""Config: presets, JSON round trip, typed ``--set`` overrides, and errors naming the field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lab5.config import PRESETS, Config, ConfigError, get_preset, make_config


def test_lab_preset_is_the_reports_setup() -> None:
    cfg = get_preset("lab")
    assert (cfg.seed, cfg.batch_size, cfg.epochs, cfg.iters_per_epoch) == (42, 64, 100, 600)
    assert (cfg.lr, (cfg.beta1, cfg.beta2)) == (2e-3, (0.9, 0.999))
    assert (cfg.rnn_size, cfg.predictor_rnn_layers, cfg.posterior_rnn_layers) == (256, 2, 1)
    assert (cfg.g_dim, cfg.z_dim, cfg.n_past, cfg.n_future, cfg.n_frames) == (128, 64, 2, 10, 12)
    assert (cfg.arch, cfg.prior, cfg.kl_mode, cfg.tf_ratio) == ("vgg64", "fixed", "monotonic", 1.0)
    assert cfg.tf_decay_start >= cfg.epochs  # teacher forcing fixed at 1 for the whole run
    assert cfg.val_every == 5


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_valid_and_fresh(name: str) -> None:
    cfg = get_preset(name)
    assert cfg.preset == name and cfg.validate() is cfg
    cfg.epochs += 1
    assert get_preset(name).epochs == cfg.epochs - 1  # a new object each call


def test_json_round_trip(tmp_path: Path) -> None:
    cfg = get_preset("demo").replace(lr=1e-4, bf16=False, kl_mode="cyclical", grad_clip=0.5)
    path = tmp_path / "config.json"
    path.write_text(cfg.to_json())
    assert Config.from_json(path) == cfg
    assert Config.from_dict(json.loads(cfg.to_json())) == cfg
    assert json.loads(path.read_text())["kl_mode"] == "cyclical"


def test_set_overrides_are_typed() -> None:
    cfg = make_config("smoke", assignments=["lr=1e-3", "epochs=7", "bf16=true", "arch=vgg64",
                                            "kl_beta_max=1", "channels_last=0", " z_dim = 2 "])
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)
    assert cfg.epochs == 7 and isinstance(cfg.epochs, int)
    assert cfg.bf16 is True and cfg.channels_last is False
    assert cfg.arch == "vgg64" and cfg.kl_beta_max == 1.0 and isinstance(cfg.kl_beta_max, float)
    assert cfg.z_dim == 2


def test_papermill_overrides_skip_none() -> None:
    cfg = make_config("smoke", overrides={"epochs": 4, "lr": None, "val_every": 2.0})
    assert (cfg.epochs, cfg.lr, cfg.val_every) == (4, get_preset("smoke").lr, 2)


@pytest.mark.parametrize("assignment, message", [
    ("colour=red", "unknown config key 'colour'"),
    ("lr", "override 'lr' is not of the form key=value"),
    ("lr=fast", "config key 'lr' expects float, got 'fast'"),
    ("epochs=2.5", "config key 'epochs' expects int, got '2.5'"),
    ("bf16=maybe", "config key 'bf16' expects bool"),
    ("n_past=0", "config field 'n_past' must be >= 1, got 0"),
    ("batch_size=-1", "config field 'batch_size' must be >= 1"),
    ("lr=0", "config field 'lr' must be > 0, got 0.0"),
    ("lr=-1e-3", "config field 'lr' must be > 0"),
    ("beta2=1", "config field 'beta2' must be in [0, 1)"),
    ("tf_ratio=1.5", "config field 'tf_ratio' must be in [0, 1]"),
    ("grad_clip=-1", "config field 'grad_clip' must be >= 0"),
    ("arch=resnet", "config field 'arch': 'resnet' is not one of"),
    ("kl_mode=sigmoid", "config field 'kl_mode'"),
    ("prior=none", "config field 'z_dim' must be 0 when prior='none'"),
    ("z_dim=0", "config field 'prior' must be 'none' when z_dim=0"),
])
def test_bad_overrides_name_the_field(assignment: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_config("smoke", assignments=[assignment])
    assert message in str(info.value)


def test_replace_rejects_wrong_python_types() -> None:
    cfg = get_preset("smoke")
    for key, value in [("epochs", True), ("epochs", "ten"), ("lr", [1e-3]), ("arch", 64), ("bf16", 2)]:
        with pytest.raises(ConfigError, match=f"config key '{key}' expects"):
            cfg.replace(**{key: value})
    other = cfg.replace(epochs=3.0, lr=1)
    assert (other.epochs, other.lr) == (3, 1.0) and type(other.epochs) is int and type(other.lr) is float


def test_replace_is_a_validated_copy() -> None:
    cfg = get_preset("smoke")
    other = cfg.replace(epochs=9)
    assert other.epochs == 9 and cfg.epochs == get_preset("smoke").epochs
    with pytest.raises(ConfigError, match="n_future"):
        cfg.replace(n_future=0)
    assert cfg.n_frames == cfg.n_past + cfg.n_future


def test_json_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=f"{bad}: cannot read config JSON"):
        Config.from_json(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=f"{bad}: config JSON must be an object"):
        Config.from_json(bad)
    bad.write_text(json.dumps({**dataclasses.asdict(get_preset("smoke")), "n_past": 0}))
    with pytest.raises(ConfigError, match=f"{bad}: config field 'n_past'"):
        Config.from_json(bad)
    with pytest.raises(ConfigError, match="missing.json"):
        Config.from_json(tmp_path / "missing.json")


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        get_preset("huge")
