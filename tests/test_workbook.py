"""The workbook: notebook parameters, load_or_train, the notebooks' shape, and papermill runs.

The papermill and CLI tests start real Jupyter kernels (about 10 s each on 2 cores); they stop
at the validation or data cell, so nothing is trained. The sweep test trains the smoke preset
and is marked slow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from lab5 import cli, workbook as wb
from lab5.config import ConfigError, get_preset
from lab5.rundir import RunDirError, shipped_demo
from lab5.files import home
from lab5.train import load_or_train

NOTEBOOKS_DIR = Path(__file__).parents[1] / "notebooks"


def _ns(**params):
    """A notebook-like namespace after the setup cell, with the given parameters bound."""
    ns = {"In": [], "Out": {}, "torch": torch, "wb": wb, "get_ipython": print}
    ns["device"] = wb.setup(ns)
    ns.update(params)
    return ns


# --- params ----------------------------------------------------------------------------------

def test_defaults_build_the_preset_and_the_run_dir():
    ns = _ns(**wb.NOTEBOOKS["04_training"])
    p = wb.params(ns, "04_training")
    assert p.cfg == get_preset("demo")
    assert p.run_dir == home() / "runs" / "demo"
    assert p.data_root is None and p.interactive is True and p.overrides == {}
    assert "04_training" in str(p) and "config overrides: none" in str(p)


def test_the_model_line_says_whether_the_conditions_are_standardised():
    demo, lab = get_preset("demo"), get_preset("lab")
    assert demo.cond_norm and not lab.cond_norm
    assert "condition actions+positions (standardised);" in wb.describe_config(demo)[0]
    assert "condition actions+positions;" in wb.describe_config(lab)[0]


def test_unknown_parameter_is_named():
    ns = _ns(**wb.NOTEBOOKS["04_training"], bogus=1)
    with pytest.raises(ConfigError, match="'bogus'.*04_training"):
        wb.params(ns, "04_training")


def test_parameter_of_another_notebook_is_unknown_here():
    ns = _ns(**wb.NOTEBOOKS["04_training"], samples=5)   # a 05_evaluation parameter
    with pytest.raises(ConfigError, match="'samples'"):
        wb.params(ns, "04_training")


@pytest.mark.parametrize("name,value", [("epochs", "ten"), ("epochs", 2.5), ("lr", "fast"),
                                        ("interactive", "maybe"), ("run_dir", 3), ("seed", True)])
def test_ill_typed_parameter_is_named(name, value):
    ns = _ns(**{**wb.NOTEBOOKS["04_training"], name: value})
    with pytest.raises(ConfigError, match=f"'{name}'"):
        wb.params(ns, "04_training")


def test_unknown_preset_and_out_of_range_values():
    ns = _ns(**{**wb.NOTEBOOKS["05_evaluation"], "preset": "nosuch"})
    with pytest.raises(ConfigError, match="nosuch"):
        wb.params(ns, "05_evaluation")
    ns = _ns(**{**wb.NOTEBOOKS["05_evaluation"], "samples": 0})
    with pytest.raises(ConfigError, match="'samples'"):
        wb.params(ns, "05_evaluation")


def test_config_fields_are_parameters_and_name_the_run():
    ns = _ns(**{**wb.NOTEBOOKS["04_training"], "epochs": 2, "seed": None}, lr=1e-3, iters_per_epoch="5")
    p = wb.params(ns, "04_training")
    assert (p.cfg.epochs, p.cfg.lr, p.cfg.iters_per_epoch, p.cfg.seed) == (2, 1e-3, 5, get_preset("demo").seed)
    # epochs can be extended by resuming, so it does not name the run; lr does.
    assert p.name == "demo,iters_per_epoch=5,lr=0.001"
    assert p.run_dir == home() / "runs" / "demo,iters_per_epoch=5,lr=0.001"


def test_a_user_data_root_names_the_run(tmp_path):
    ns = _ns(**{**wb.NOTEBOOKS["04_training"], "data_root": str(tmp_path / "bair")})
    p = wb.params(ns, "04_training")
    assert p.data_root == tmp_path / "bair" and p.run_dir == home() / "runs" / "demo,data=bair"


def test_rebinding_a_setup_name_counts_as_a_parameter():
    ns = _ns(**wb.NOTEBOOKS["03_model_build"])
    ns["device"] = "cpu"    # papermill -p device cpu rebinds the setup cell's torch.device
    assert wb.params(ns, "03_model_build").overrides == {"device": "cpu"}


def test_setup_fixes_the_parameter_window(capsys):
    ns = {"In": [], "Out": {}}
    exec("from lab5 import workbook as wb\ndevice = wb.setup(globals(), seed=3)", ns)
    assert "seed 3" in capsys.readouterr().out
    ns.update(wb.NOTEBOOKS["01_derivation"])
    ns["bogus"] = 1
    with pytest.raises(ConfigError, match="bogus"):
        wb.params(ns, "01_derivation")
    del ns["bogus"]
    first = wb.params(ns, "01_derivation")
    ns["results"] = {"psnr": 20.0}    # a later cell's variable: not a parameter on a re-run
    assert wb.params(ns, "01_derivation").cfg == first.cfg


# --- command-line helpers ----------------------------------------------------------------------

def test_grid_parsing_and_names():
    grid = cli.parse_grid(["lr=0.001,0.002", "kl_mode=monotonic,cyclical", "bf16=False"])
    assert grid == {"lr": [0.001, 0.002], "kl_mode": ["monotonic", "cyclical"], "bf16": [False]}
    points = wb.combinations(grid)
    assert len(points) == 4
    assert wb.combination_name(points[0]) == "bf16=False,kl_mode=monotonic,lr=0.001"
    with pytest.raises(ConfigError, match="key=v1,v2"):
        cli.parse_grid(["lr"])


def test_parameters_are_routed_and_checked_before_running():
    values = {"preset": "demo", "samples": 5, "lr": 0.001}
    assert wb.route_parameters("04_training", values) == {"lr": 0.001}       # preset: the default
    assert wb.route_parameters("05_evaluation", values) == {"samples": 5, "lr": 0.001}
    with pytest.raises(ConfigError, match="'bogus'"):
        wb.check_parameters({"bogus": 1}, wb.NOTEBOOKS)
    with pytest.raises(ConfigError, match="'epochs'"):
        wb.check_parameters({"epochs": "x"}, wb.NOTEBOOKS)
    with pytest.raises(ConfigError, match="--inplace"):
        wb.run_workbook({"epochs": 1}, inplace=True)


# --- the notebooks themselves ------------------------------------------------------------------

@pytest.mark.parametrize("name", list(wb.NOTEBOOKS))
def test_notebook_shape(name):
    """Same setup cell, a tagged parameters cell matching NOTEBOOKS, then the validation cell;
    short cells; stored outputs (if any) from one run in order."""
    import papermill as pm

    nb = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    setups = {c.source for n in wb.NOTEBOOKS for c in nbformat.read(NOTEBOOKS_DIR / f"{n}.ipynb", as_version=4).cells
              if c.cell_type == "code" and c.source.startswith("# Setup")}
    assert code[0].source.startswith("# Setup") and len(setups) == 1
    assert "parameters" in code[1].metadata.get("tags", [])
    assert f'wb.params(globals(), "{name}")' in code[2].source
    declared = {k: v["default"] for k, v in pm.inspect_notebook(str(NOTEBOOKS_DIR / f"{name}.ipynb")).items()}
    assert {k: eval(v) for k, v in declared.items()} == wb.NOTEBOOKS[name]
    assert max(len(c.source.splitlines()) for c in nb.cells if c.cell_type == "code") <= 25
    for c in code:  # nbval markers are cell tags, out of a student's way; a misspelt tag would be ignored
        assert "NBVAL_" not in c.source.upper(), c.source
        assert set(c.metadata.get("tags", [])) <= {"parameters", "nbval-ignore-output", "nbval-skip"}, c.source
    counts = [c.execution_count for c in code]
    if any(counts):
        assert counts == list(range(1, len(code) + 1))
        assert not any(o.output_type == "error" for c in code for o in c.outputs)


@pytest.mark.parametrize("name", list(wb.NOTEBOOKS))
def test_committed_plots_are_images(name):
    """Every cell that saves a figure shows it: an image/png output in the committed notebook
    (a Figure returned without the inline formatter is only the text '<Figure size ...>')."""
    nb = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    plotting = [c for c in nb.cells if c.cell_type == "code" and "wb.save_figure(" in c.source]
    for c in plotting:
        assert any("image/png" in o.get("data", {}) for o in c.outputs), c.source
    for c in nb.cells:
        for o in c.get("outputs", []):
            text = "".join(o.get("data", {}).get("text/plain", "")) + "".join(o.get("text", ""))
            assert "<Figure size" not in text, c.source


def test_figure_names_carry_no_commas_or_equals_and_runtime_fields_name_no_run():
    ns = _ns(**{**wb.NOTEBOOKS["05_evaluation"]}, lr=1e-3, kl_mode="cyclical")
    p = wb.params(ns, "05_evaluation")
    assert p.name == "demo,kl_mode=cyclical,lr=0.001" and p.stem == "demo_kl_mode-cyclical_lr-0.001"
    ns = _ns(**{**wb.NOTEBOOKS["05_evaluation"]}, bf16=False, channels_last=True, threads=1)
    assert wb.params(ns, "05_evaluation").name == "demo"
    for nb_name in wb.NOTEBOOKS:
        nb = nbformat.read(NOTEBOOKS_DIR / f"{nb_name}.ipynb", as_version=4)
        calls = re.findall(r"wb\.save_figure\(([^)]*)\)", "\n".join(c.source for c in nb.cells))
        assert all(call.endswith(", P") for call in calls), calls   # every figure is named by the run


def test_a_parameterised_run_never_overwrites_another_runs_figure(tmp_path):
    import matplotlib.figure
    paths = []
    for overrides in ({}, {"lr": 1e-3}):
        ns = _ns(**{**wb.NOTEBOOKS["05_evaluation"], "figures_dir": str(tmp_path)}, **overrides)
        paths.append(wb.save_figure(matplotlib.figure.Figure(), "05_best_of_n", wb.params(ns, "05_evaluation")))
    assert [p.name for p in paths] == ["05_best_of_n_demo.png", "05_best_of_n_demo_lr-0.001.png"]
    assert all(p.is_file() for p in paths)


def test_05_with_a_runtime_override_evaluates_the_shipped_checkpoint(capsys):
    ns = _ns(**{**wb.NOTEBOOKS["05_evaluation"]}, bf16=False)
    p = wb.params(ns, "05_evaluation")
    capsys.readouterr()  # the setup line
    _, _, src, _ = wb.evaluation_run(p)
    assert src == shipped_demo()
    assert capsys.readouterr().out.startswith("evaluating checkpoints/demo: demo preset")


def test_read_results_is_written_from_the_numbers():
    from lab5.evaluate import read_results

    changed = {"fraction": 0.065, "threshold": 0.1, "psnr": {"mean": 19.04}}
    results = {"protocol": {"condition": "actions+start"}, "psnr": {"mean": 29.45}, "ssim": {"mean": 0.934},
               "changed": changed,
               "copy_last": {"psnr": 23.81, "ssim": 0.876, "changed": {"psnr": {"mean": 11.3}}},
               "shuffled_actions": {"psnr": 23.17}, "best_of_n": {"n": 3, "psnr": {"best": 29.51, "worst": 29.39}},
               "counterfactual": {"psnr": 29.1, "changed_psnr": 18.0,
                                  "factual_conditions": {"psnr": 28.0, "changed_psnr": 15.5}}}
    text = read_results(results)
    assert "5.64 dB above copy-last-frame" in text and "0.058 above it in SSIM" in text
    assert "costs 6.28 dB: it uses them" in text and "differ by 0.12 dB" in text and "is small" in text
    assert "6.5% of pixels that change it scores 19.04 dB (copy-last 11.30)" in text
    assert "+1.10 dB on whole frames and +2.50 dB on changed pixels" in text and "it follows the actions" in text
    assert "picked by comparing each with the truth" in text
    worse = {"protocol": {"condition": "actions"}, "psnr": {"mean": 23.5},
             "copy_last": {"psnr": 23.8, "changed": {"psnr": {"mean": 11.0}}},
             "changed": changed, "shuffled_actions": {"psnr": 23.45},
             "counterfactual": {"psnr": 28.2, "changed_psnr": 15.8,
                                "factual_conditions": {"psnr": 28.0, "changed_psnr": 15.5}}}
    text = read_results(worse)
    assert "0.30 dB below copy-last-frame" in text and "little more than holding" in text
    assert "costs 0.05 dB: it hardly uses them" in text
    assert "no clear sign that it follows the actions" in text
    part = {**worse, "counterfactual": {"psnr": 29.2, "changed_psnr": 16.6,
                                        "factual_conditions": {"psnr": 28.0, "changed_psnr": 15.5}}}
    assert "it follows the actions in part" in read_results(part)
    # Given the positions the new actions lead to, a gain shows nothing about reading the actions.
    lab = {**results, "protocol": {"condition": "actions+positions"}}
    assert "does not show that it reads the actions" in read_results(lab)


# --- load_or_train -----------------------------------------------------------------------------

@pytest.fixture
def tiny_root(make_root):
    # 12 frames: what the lab protocol evaluates in 05 (2 + 10)
    return make_root({"train": 8, "validate": 4, "test": 4}, n_frames=12, size=64)


def test_load_or_train_trains_loads_resumes_and_refuses(tiny_root, tmp_path):
    cfg = get_preset("smoke").replace(epochs=1)
    run_dir = tmp_path / "run"
    first = load_or_train(cfg, tiny_root, run_dir, progress=False, log=lambda s: None)
    assert first.status == "trained" and len(first.history) == 1
    again = load_or_train(cfg, tiny_root, run_dir, progress=False)
    assert again.status == "loaded" and again.history == first.history
    longer = load_or_train(cfg.replace(epochs=2), tiny_root, run_dir, progress=False, log=lambda s: None)
    assert longer.status == "resumed" and [r["epoch"] for r in longer.history] == [1, 2]
    with pytest.raises(RunDirError, match="lr"):
        load_or_train(cfg.replace(epochs=2, lr=1e-4), tiny_root, run_dir, progress=False)
    with pytest.raises(RunDirError, match="2 epochs but 1"):
        load_or_train(cfg, tiny_root, run_dir, progress=False)


def test_load_or_train_replaces_a_run_killed_before_its_first_checkpoint(tiny_root, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")   # what a run killed during epoch 1 leaves
    run = load_or_train(get_preset("smoke").replace(epochs=1), tiny_root, run_dir, progress=False, log=lambda s: None)
    assert run.status == "trained"


# --- real executions -----------------------------------------------------------------------------

def test_papermill_rejects_an_unknown_parameter(tmp_path):
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as err:
        pm.execute_notebook(str(NOTEBOOKS_DIR / "04_training.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"preset": "demo", "bogus": 1}, kernel_name="python3",
                            cwd=str(NOTEBOOKS_DIR), progress_bar=False)
    assert err.value.ename == "ConfigError"
    assert "bogus" in err.value.evalue
    assert err.value.exec_count == 4    # setup, parameters, injected parameters, validation: nothing ran after


def test_workbook_command_names_the_failing_notebook_and_cell(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "lab5", "workbook", "--only", "02", "03", "--no-progress",
                           "-p", "data_root", str(tmp_path / "no_such_root"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "02_data_exploration.ipynb failed at cell" in proc.stderr
    assert "DatasetError" in proc.stderr and "no_such_root" in proc.stderr
    assert (tmp_path / "out" / "02_data_exploration.ipynb").is_file()
    assert not (tmp_path / "out" / "03_model_build.ipynb").exists()    # stopped at the failure


def test_workbook_command_refuses_bad_parameters_before_starting_a_kernel(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lab5", "workbook", "-p", "bogus", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "'bogus'" in proc.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_sweep_runs_training_and_evaluation_per_grid_point(tiny_root, tmp_path):
    out = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "lab5", "sweep", "--preset", "smoke", "--no-progress",
                           "-p", "data_root", str(tiny_root), "-p", "epochs", "1", "-p", "samples", "2",
                           "--grid", "lr=0.001,0.002", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [row["lr"] for row in summary] == [0.001, 0.002]
    for row in summary:
        folder = out / f"lr={row['lr']}"
        assert (folder / "run" / "best.pt").is_file() and (folder / "05_evaluation.ipynb").is_file()
        assert row["test_psnr"] > 0 and row["best_val_psnr"] > 0
        # figures are named by the run (preset, grid values, the data root's folder name), in a
        # file-name form without commas or "="
        assert (folder / "figures" / f"05_filmstrip_smoke_lr-{row['lr']}_data-root.png").is_file()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_second_run_all_in_the_same_kernel_takes_the_edited_parameters():
    # 05's own setup, parameters and validation cells in one real kernel, as Run All twice
    # with edits between: back to the default small int (samples 3), to 0 and to None.
    import queue

    from jupyter_client.manager import start_new_kernel

    cells = nbformat.read(NOTEBOOKS_DIR / "05_evaluation.ipynb", as_version=4).cells
    k = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    setup, params, check = cells[k - 1].source, cells[k].source, cells[k + 1].source

    def edited(**values) -> str:
        lines = []
        for line in params.splitlines():
            name = line.split("=", 1)[0].strip()
            lines.append(f"{name} = {values[name]!r}" if name in values else line)
        return "\n".join(lines)

    def run(kc, code: str) -> str:
        msg_id = kc.execute(code)
        reply = kc.get_shell_msg(timeout=120)
        out = []
        while True:
            msg = kc.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        assert reply["content"]["status"] == "ok", reply["content"]
        return "".join(out)

    report = "\nprint('PARAMS', P.samples, P.max_sequences, P.run_dir)"
    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=120, cwd=str(NOTEBOOKS_DIR))
    try:
        while True:  # start-up chatter
            try:
                kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                break
        seen = []
        edit = {"samples": 6, "max_sequences": 32, "run_dir": "runs/elsewhere"}
        # The same edit twice: the second run binds the very objects the first left (6 and 32
        # are cached small ints), which a "changed since setup" test cannot see.
        for values in (edit, edit, {"samples": 3, "max_sequences": 0, "run_dir": None}):
            out = run(kc, setup) + run(kc, edited(**values)) + run(kc, check + report)
            seen.append(next(line for line in out.splitlines() if line.startswith("PARAMS")))
        # An edit of the parameters cell re-run without the setup cell counts too.
        out = run(kc, edited(samples=5)) + run(kc, check + report)
        seen.append(next(line for line in out.splitlines() if line.startswith("PARAMS")))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert seen == ["PARAMS 6 32 runs/elsewhere"] * 2 + ["PARAMS 3 0 None", "PARAMS 5 0 None"]


def test_a_stored_log_keeps_what_a_terminal_shows():
    """Bar refreshes (carriage returns) and split fragments collapse to one line each; other outputs stay."""
    stream = lambda text, name="stdout": nbformat.v4.new_output("stream", name=name, text=text)
    outputs = [stream("training into runs/demo\n"), stream("\repoch 1/2:   0%|  | 0/4"),
               stream("\repoch 1/2: 100%|##| 4/4"), stream("\r          \r"), stream("epoch 1/2: loss 0.1\r\n\n"),
               stream("a warning\n", "stderr"), stream("\repoch 2/2:  50%|# | 2/4"), stream("\r    \r"),
               nbformat.v4.new_output("display_data", data={"text/plain": "table"}), stream("done\n"),
               nbformat.v4.new_output("display_data", data={"text/plain": "table"}), stream("no newline")]
    tidy = wb.tidy_streams(outputs)
    assert [(o.output_type, o.get("name"), o.get("text")) for o in tidy] == [
        ("stream", "stdout", "training into runs/demo\nepoch 1/2: loss 0.1\n\n"), ("stream", "stderr", "a warning\n"),
        ("display_data", None, None), ("stream", "stdout", "done\n"), ("display_data", None, None),
        ("stream", "stdout", "no newline")]


def test_the_latent_section_needs_two_samples_for_its_best_of_n():
    with pytest.raises(ConfigError, match="'latent_samples' must be >= 2"):
        wb.check_param("latent_samples", 1)
