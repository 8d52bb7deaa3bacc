"""The workbook as an assignment (lab5.assignment, ``python -m lab5 assignment``): the release, the autograder and
its scores, on the real workbook notebooks; the grader's edge cases on a tiny notebook of two exercises.

The tests that start kernels on the real notebooks are marked slow (they run in the default suite): a notebook up
to its last check is 10-20 s on 2 cores, 05 top to bottom about 100 s (its protocol table).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import nbformat
import nbformat.v4 as v4
import pytest

from lab5 import assignment
from lab5.config import ConfigError
from lab5.workbook import NOTEBOOKS

REPO = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO / "notebooks"
EXERCISE_NOTEBOOKS = ("01_derivation", "03_model_build", "05_evaluation")
NOT_ANSWERED = "not answered yet"
STUB = "# YOUR CODE HERE\nraise NotImplementedError()"   # nbgrader's ClearSolutions stub for Python
# 05 top to bottom in a test: the real code path on few sequences, no widgets.
FAST_05 = {**assignment.GRADING_PARAMETERS["05_evaluation"]}
# A line of an answer or hidden-test region counts as secret when, stripped, it is longer than this and the
# solution notebook does not show it outside those regions too (a formula in the exercise's text): shorter lines
# (`return z`, `else:`) could occur in a release legitimately.
MIN_SECRET_CHARS = 12


def region_lines(source: str, begin: str, end: str) -> list[str]:
    """The stripped lines strictly between ``### BEGIN <begin>`` and ``### END <end>`` markers."""
    out, inside = [], False
    for line in source.splitlines():
        if f"BEGIN {begin}" in line:
            inside = True
        elif f"END {end}" in line:
            inside = False
        elif inside:
            out.append(line.strip())
    return out


def outside_regions(source: str) -> str:
    """``source`` without its answer and hidden-test regions (markers included): what a student may see."""
    out, inside = [], False
    for line in source.splitlines():
        if re.search(r"### (BEGIN|END) (SOLUTION|HIDDEN TESTS)", line):
            inside = "BEGIN" in line
        elif not inside:
            out.append(line)
    return "\n".join(out)


def solution_body(nb: nbformat.NotebookNode, grade_id: str) -> str:
    """The answer region of ``<grade_id>_answer`` (its lines as written, markers excluded)."""
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == f"{grade_id}_answer")
    lines, inside = [], False
    for line in cell.source.splitlines():
        if "BEGIN SOLUTION" in line or "END SOLUTION" in line:
            inside = "BEGIN" in line
        elif inside:
            lines.append(line)
    return "\n".join(lines)


def answered(name: str, bodies: dict[str, str]) -> nbformat.NotebookNode:
    """The released notebook as a student hands it in: each stub replaced by ``bodies[grade_id]`` (function-body
    lines, indented as in the function), or by the solution's own answer for the exercises not in ``bodies``."""
    sol = nbformat.read(SOLUTIONS / f"{name}.ipynb", as_version=4)
    nb = assignment.student_copy(sol)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        if grade_id.endswith("_answer"):
            gid = grade_id.removesuffix("_answer")
            stub = "\n".join("    " + line for line in STUB.splitlines())
            assert stub in cell.source, cell.source
            cell.source = cell.source.replace(stub, bodies.get(gid, solution_body(sol, gid)).strip("\n"))
    return nb


def exercises_of(name: str) -> dict[str, float]:
    sol = nbformat.read(SOLUTIONS / f"{name}.ipynb", as_version=4)
    return {gid: points for gid, (_, points) in assignment.check_cells(sol).items()}


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("release")
    assignment.release(out)
    return out


# --- the release --------------------------------------------------------------------------------

def test_the_workbook_has_its_exercises() -> None:
    """The planned exercises, in nbgrader's schema 3, with points; every answer cell has its check."""
    ids = {name: set(exercises_of(name)) for name in NOTEBOOKS}
    assert ids == {"01_derivation": {"reparameterize", "kl_gaussian", "kl_beta", "teacher_forcing_ratio"},
                   "02_data_exploration": set(), "03_model_build": {"step", "frame_loss"}, "04_training": set(),
                   "05_evaluation": {"psnr_per_frame", "predict_next"}}
    for name in EXERCISE_NOTEBOOKS:
        nb = nbformat.read(SOLUTIONS / f"{name}.ipynb", as_version=4)
        marked = [c.metadata["nbgrader"] for c in nb.cells if "nbgrader" in c.metadata]
        assert all(m["schema_version"] == 3 for m in marked)
        answers = {m["grade_id"] for m in marked if m["solution"]}
        assert answers == {f"{gid}_answer" for gid in ids[name]}
        assert all(exercises_of(name)[gid] > 0 for gid in ids[name])


def test_docs_table_lists_each_exercise_with_its_points() -> None:
    """docs/assignment.md's table (notebook, exercise, points) is the notebooks' own."""
    rows = re.findall(r"^\| (\d\d) \| `(\w+)` \| ([\d.]+) \|", (REPO / "docs/assignment.md").read_text(), re.M)
    documented = {(nb, gid): float(points) for nb, gid, points in rows}
    assert documented == {(name[:2], gid): points for name in NOTEBOOKS for gid, points in exercises_of(name).items()}


def test_release_contains_no_line_of_a_solution(released: Path) -> None:
    secret_count = 0
    for name in NOTEBOOKS:
        sol = nbformat.read(SOLUTIONS / f"{name}.ipynb", as_version=4)
        hidden = [line for c in sol.cells for line in region_lines(c.source, "SOLUTION", "SOLUTION")
                  + region_lines(c.source, "HIDDEN TESTS", "HIDDEN TESTS")]
        public = "\n".join(outside_regions(c.source) for c in sol.cells)
        secrets = {line for line in hidden if len(line) > MIN_SECRET_CHARS and line not in public}
        text = (released / f"{name}.ipynb").read_text()
        nb = nbformat.reads(text, as_version=4)
        shown = "\n".join(c.source for c in nb.cells) + json.dumps(nb.metadata)
        leaked = sorted(line for line in secrets if line in shown or json.dumps(line)[1:-1] in text)
        assert not leaked, f"{name}: solution lines in the release: {leaked}"
        assert all("BEGIN SOLUTION" not in c.source and "HIDDEN TESTS" not in c.source for c in nb.cells)
        secret_count += len(secrets)
    assert secret_count >= 20, "the rule above found almost nothing to look for"


def test_release_keeps_the_checks_and_clears_the_rest(released: Path) -> None:
    """Each check cell (public part) is there, locked; no outputs, execution counts or widget state; the answer
    cells hold nbgrader's stub; the nbgrader metadata survives for nbgrader's own tools."""
    for name in NOTEBOOKS:
        sol = nbformat.read(SOLUTIONS / f"{name}.ipynb", as_version=4)
        nb = nbformat.read(released / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert "widgets" not in nb.metadata
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
        checks = assignment.check_cells(nb)
        assert {g: p for g, (_, p) in checks.items()} == exercises_of(name)
        for gid, (i, _) in checks.items():
            cell = nb.cells[i]
            assert f'ex.check("{gid}", ' in cell.source and "hidden=True" not in cell.source
            assert cell.metadata["editable"] is False and cell.metadata["nbgrader"]["locked"] is True
            assert "raises-exception" in cell.metadata["tags"]   # Run All goes on past an unanswered check
            answer = nb.cells[i - 1] if nb.cells[i - 1].metadata.get("nbgrader") else None
            assert answer is not None and "raise NotImplementedError()" in answer.source, f"{name}: {gid}"
        assert [c.cell_type for c in nb.cells] == [c.cell_type for c in sol.cells]


def test_release_refuses_the_solution_folder() -> None:
    for out in (SOLUTIONS, SOLUTIONS / "release"):
        with pytest.raises(ConfigError, match="solution workbook's folder"):
            assignment.release(out)
    assert not (SOLUTIONS / "release").exists()


# --- the released notebooks and the grader, on the real workbook -----------------------------------

@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", EXERCISE_NOTEBOOKS)
def test_released_notebook_runs_with_only_the_checks_failing(released: Path, tmp_path: Path, name: str) -> None:
    """Top to bottom, unanswered: every check cell fails with its "not answered yet", no other cell fails."""
    nb = nbformat.read(released / f"{name}.ipynb", as_version=4)
    assignment.inject_parameters(nb, FAST_05 if name == "05_evaluation" else {})
    assert assignment.execute(nb, tmp_path, timeout=600) is None
    checks = {i for i, _ in assignment.check_cells(nb).values()}
    errors = {i: assignment.cell_error(c, 600) for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code" and c.source.strip())
    assert {i for i, e in errors.items() if e} == checks, {i: e for i, e in errors.items() if e}
    assert all(errors[i].startswith("ExerciseFailed: ") and NOT_ANSWERED in errors[i] for i in checks), errors


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cli_release_then_grade_gives_zero_with_a_message_each(lab5_cli, tmp_path: Path) -> None:
    """The issue's "done when": release, then grade DIR/*.ipynb --json: 0 points for each exercise, each with a
    message, and the JSON an LMS reads."""
    out = tmp_path / "release"
    done = lab5_cli("assignment", "release", "--out", out, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("wrote ") == len(NOTEBOOKS) and done.stdout.count("(no exercises)") == 2
    first = exercises_of("01_derivation")
    assert f"01_derivation.ipynb ({len(first)} exercises, {sum(first.values()):g} points)" in done.stdout
    paths = sorted(out.glob("*.ipynb"))
    done = lab5_cli("assignment", "grade", *paths, "--json", tmp_path / "g.json", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "g.json").read_text())
    assert report["score"] == 0 and report["max"] == sum(sum(exercises_of(n).values()) for n in NOTEBOOKS)
    assert [r["notebook"] for r in report["notebooks"]] == list(NOTEBOOKS)
    for r in report["notebooks"]:
        assert {"notebook", "path", "score", "max", "exercises"} <= r.keys() and r["score"] == 0
        assert r["exercises"].keys() == exercises_of(r["notebook"]).keys()
        for gid, e in r["exercises"].items():
            assert e.keys() == {"score", "max", "message"} and e["score"] == 0 and e["max"] > 0
            assert NOT_ANSWERED in e["message"], (gid, e)
            row = rf"^{r['notebook']} +{gid} +0/{e['max']:g} +ExerciseFailed: .*{NOT_ANSWERED}"
            assert re.search(row, done.stdout, re.M), (row, done.stdout)
    assert "total" in done.stdout and "Traceback" not in done.stdout + done.stderr


def test_cli_names_a_bad_file_in_one_line(lab5_cli, tmp_path: Path) -> None:
    """A missing file and a file that is not a notebook: one ``error:`` line each naming it, exit status 1."""
    (tmp_path / "notes.ipynb").write_text("not JSON")
    done = lab5_cli("assignment", "grade", tmp_path / "missing.ipynb", tmp_path / "notes.ipynb")
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert done.stderr.splitlines() == [f"error: {tmp_path / 'missing.ipynb'}: no such file",
                                        f"error: {tmp_path / 'notes.ipynb'}: not a notebook (NotJSONError: "
                                        "Notebook does not appear to be JSON: 'not JSON')"]
    done = lab5_cli("assignment", "grade", tmp_path / "notes.ipynb", "--json", "/proc/no/g.json")
    assert done.returncode == 1 and done.stderr.startswith("error: --json /proc/no/g.json: cannot write there")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_solution_notebooks_grade_full_marks() -> None:
    results = assignment.grade([SOLUTIONS / f"{name}.ipynb" for name in NOTEBOOKS])
    for r in results:
        assert r["error"] is None and r["score"] == r["max"] == sum(exercises_of(r["notebook"]).values()), r
        assert all(e["message"] == assignment.PASSED for e in r["exercises"].values()), r
    assert sum(r["max"] for r in results) > 0


# The report's mistakes, as a student would write them (function-body lines); each with the phrase its check's
# message must contain.
PLANTED: dict[str, dict[str, tuple[str, str]]] = {
    "01_derivation": {
        "kl_gaussian": ("""
    if mu_p is None or logvar_p is None:
        mu_p, logvar_p = torch.zeros_like(mu_q), torch.zeros_like(logvar_q)
    kld = 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1)
    return -kld.sum() / mu_q.shape[0]   # ELBO = E log p + KL: the report's sign""", "sign"),
        "teacher_forcing_ratio": ("""
    return ratio   # never decays""", "never decays"),
    },
    "03_model_build": {
        "step": ("""
    posterior = model.posterior(h_target, hidden, generator) if h_target is not None else None
    seen = h if h_target is None else h_target   # the prior fed x_t's code
    prior = model.prior(seen, hidden, generator) if posterior is None or model.prior_net is not None else None
    z, kld = (prior[0], h.new_zeros(())) if posterior is None else (posterior[0], model.kl(posterior, prior))
    cond = c_prev[:, model.cond_columns].to(h.dtype)
    g, hidden["predictor"] = model.predictor(torch.cat([h, z, cond], 1), hidden["predictor"])
    return g, kld""", "x_{t-1}"),
    },
    "05_evaluation": {
        "psnr_per_frame": ("""
    mse = ((pred.double() - truth.double()) ** 2).flatten(2).mean(2)   # pooled over the channels
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).float()""", "per channel"),
    },
}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", PLANTED)
def test_planted_mistakes_lose_their_points(tmp_path: Path, name: str) -> None:
    """Each planted mistake scores 0 with the message that names it; the notebook's other exercises keep full
    marks (each submission is otherwise answered with the solution's own code)."""
    planted = PLANTED[name]
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(answered(name, {gid: body for gid, (body, _) in planted.items()}), path)
    [result] = assignment.grade([path])
    for gid, e in result["exercises"].items():
        if gid in planted:
            assert e["score"] == 0 and planted[gid][1] in e["message"], (gid, e)
            assert "prior" in e["message"] if gid == "step" else True, e
        else:
            assert e["score"] == e["max"] and e["message"] == assignment.PASSED, (gid, e)


# --- the grader's edge cases, on a tiny workbook of its own ---------------------------------------------

def tiny_workbook(home: Path) -> None:
    """A lab5 home whose 01 has two exercises (plain asserts, no lab5 import) and a cell after them."""
    def answer(gid: str, source: str) -> Any:
        return v4.new_code_cell(source, metadata={"nbgrader": {
            "grade": False, "solution": True, "locked": False, "grade_id": f"{gid}_answer", "schema_version": 3}})

    def check(gid: str, source: str, points: int) -> Any:
        return v4.new_code_cell(source, metadata={"nbgrader": {
            "grade": True, "solution": False, "locked": True, "grade_id": gid, "points": points, "schema_version": 3}})

    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nb = v4.new_notebook(metadata=meta, cells=[
        v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        answer("double", "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
        check("double", "assert double(3) == 6, 'double: wrong for 3'\n### BEGIN HIDDEN TESTS\n"
                        "assert double(-1) == -2, 'double: wrong for negative numbers'\n### END HIDDEN TESTS", 2),
        answer("square", "def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION"),
        check("square", "assert square(3) == 9, 'square: wrong'", 3),
        v4.new_code_cell("import os\nos._exit(1)   # after the last check: never run by the grader"),
    ])
    nb.cells[4].execution_count = 4   # stored as in the committed solutions: executed, no error
    (home / "notebooks").mkdir(parents=True)
    for name in NOTEBOOKS:
        nbformat.write(nb if name == "01_derivation" else v4.new_notebook(metadata=meta),
                       home / "notebooks" / f"{name}.ipynb")


def edited(home: Path, path: Path, **sources: str) -> Path:
    """The tiny solution with cells replaced (``c1="..."``: cell 1's source; ``None``: the cell deleted)."""
    nb = nbformat.read(home / "notebooks" / "01_derivation.ipynb", as_version=4)
    for key, source in sorted(sources.items(), reverse=True):
        if source is None:
            del nb.cells[int(key[1:])]
        else:
            nb.cells[int(key[1:])].source = source
    nbformat.write(nb, path)
    return path


@pytest.mark.timeout(300)
def test_grader_cannot_be_fooled_and_keeps_going(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An edited check cell is put back (hidden tests included); a deleted one scores 0; a failing answer cell is
    what the message names; a renamed file is known by its exercise ids; a file that is not a notebook, a missing
    one, and a kernel that dies each give their one-line reason, and grading goes on; a cell past its timeout is
    interrupted; the cells after the last check do not run (the tiny solution's last cell would kill the kernel)."""
    home = tmp_path / "home"
    tiny_workbook(home)
    monkeypatch.setenv("LAB5_HOME", str(home))
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "01_derivation.ipynb").write_text("this is not JSON")
    paths = [home / "notebooks" / "01_derivation.ipynb",
             edited(home, subs / "jdoe_01_derivation.ipynb", c1="def double(x):\n    return abs(2 * x)",
                    c2="pass", c3="def square(x):\n    return x *"),
             edited(home, subs / "renamed.ipynb", c4=None),
             subs / "01_derivation.ipynb", subs / "missing.ipynb",
             edited(home, subs / "dies_01_derivation.ipynb", c3="import os\nos._exit(1)"),
             edited(home, subs / "slow_01_derivation.ipynb", c3="def square(x):\n    while True:\n        pass")]
    results = assignment.grade(paths, timeout=10)
    assert [r["path"] for r in results] == list(map(str, paths))
    solution, cheat, renamed, not_json, missing, dies, slow = results
    scores = [{gid: (e["score"], e["message"]) for gid, e in r["exercises"].items()} for r in results]
    assert solution["score"] == solution["max"] == 5 and solution["error"] is None
    assert scores[1]["double"] == (0, "AssertionError: double: wrong for negative numbers")
    assert scores[1]["square"][0] == 0 and scores[1]["square"][1].startswith("your answer cell failed: SyntaxError")
    assert renamed["notebook"] == "01_derivation"
    assert scores[2] == {"double": (2, "passed"), "square": (0, "check cell missing")}
    assert not_json["error"].startswith("not a notebook (NotJSONError") and not_json["notebook"] == "01_derivation"
    assert scores[3] == {gid: (0, not_json["error"]) for gid in ("double", "square")}
    assert missing["error"] == "no such file" and missing["notebook"] is None and missing["max"] == 0
    assert scores[5]["double"] == (2, "passed") and dies["score"] == 2 and "DeadKernelError" in dies["error"]
    assert scores[5]["square"][1] == f"not run: {dies['error']}"
    assert scores[6]["square"] == (0, "timed out: the cell ran longer than 10 s and was interrupted")
    table = assignment.format_scores(results)
    assert "check cell missing" in table and "no such file" in table and table.count("  total  ") == len(paths)
