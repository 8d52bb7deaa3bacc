"""The workbook as an assignment: the student release and the autograder, both from the solution notebooks, whose
exercises are marked in nbgrader's syntax (schema 3). ``release`` applies nbgrader's own preprocessors, ``grade`` runs
submissions headless with nbclient; neither needs nbgrader's course directory or database. The command line imports
this module only when asked: nbgrader, nbclient and nbformat are part of the ``dev`` extra and slow to import.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbformat import NotebookNode
from nbgrader.preprocessors import (CheckCellMetadata, ClearHiddenTests, ClearOutput, ClearSolutions,
                                    ComputeChecksums, LockCells)

import lab5
from lab5.config import ConfigError
from lab5.workbook import NOTEBOOKS, notebooks_dir

# nbgrader's generate_assignment steps, in its order, less those that need its database or templates: the
# checksums are taken once the hidden tests are gone (nbgrader's tools then see the released cells unchanged).
RELEASE_STEPS = (LockCells, ClearSolutions, ClearOutput, ClearHiddenTests, ComputeChecksums, CheckCellMetadata)
# 05 at grading: no widgets and few sequences, in case a check sits after an evaluating cell (its checks come
# right after the model is loaded, so these rarely run). 01 and 03 have no such parameters.
GRADING_PARAMETERS: dict[str, dict[str, Any]] = {
    "05_evaluation": {"interactive": False, "max_sequences": 4, "samples": 1, "latent_sequences": 2,
                      "latent_samples": 2},
}
CELL_TIMEOUT_S = 600
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PASSED = "passed"


def check_cells(nb: NotebookNode) -> dict[str, tuple[int, float]]:
    """``{grade_id: (cell index, points)}`` of the autograded check cells (grade cells that are not answers)."""
    out = {}
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution") and meta.get("grade_id"):
            out.setdefault(meta["grade_id"], (i, float(meta.get("points", 0))))
    return out


def student_copy(nb: NotebookNode) -> NotebookNode:
    """The notebook as students get it: nbgrader's stubs for the answers, no hidden tests, outputs nor widget state,
    check cells locked and tagged ``raises-exception``; the nbgrader metadata kept."""
    nb = copy.deepcopy(nb)
    resources: dict[str, Any] = {}
    for step in RELEASE_STEPS:
        nb, resources = step().preprocess(nb, resources)
    nb.metadata.pop("widgets", None)
    nb.metadata.pop("papermill", None)
    # An unanswered check fails; tagged so, it does not stop Run All (JupyterLab, nbclient and papermill read the
    # tag): a student sees every check's message, and the cells after it run with lab5's own function.
    for i, _ in check_cells(nb).values():
        tags = nb.cells[i].metadata.setdefault("tags", [])
        if "raises-exception" not in tags:
            tags.append("raises-exception")
    return nb


def release(out: Path) -> list[Path]:
    """Write every notebook of the workbook, as students get it, to ``out/<name>.ipynb``; print one line each."""
    out, src = Path(out), notebooks_dir()
    package_notebooks = Path(lab5.__file__).resolve().parents[1] / "notebooks"
    # inside notebooks/, the release would also be collected by the test suite's nbval run
    if any(out.resolve().is_relative_to(folder) for folder in (src.resolve(), package_notebooks)):
        raise ConfigError(f"{out}: that is the solution workbook's folder; release into a folder outside it")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in NOTEBOOKS:
        nb = student_copy(nbformat.read(src / f"{name}.ipynb", as_version=4))
        checks = check_cells(nb)
        path = out / f"{name}.ipynb"
        nbformat.write(nb, path)
        written.append(path)
        points = sum(p for _, p in checks.values())
        print(f"wrote {path} ({f'{len(checks)} exercises, {points:g} points' if checks else 'no exercises'})")
    return written


def identify(path: Path, nb: NotebookNode | None, solutions: dict[str, NotebookNode]) -> str | None:
    """Which workbook notebook a submission is: the one its file name holds (``jdoe_01_derivation.ipynb``), else the
    one whose exercise ids it shares most."""
    hit = next((name for name in NOTEBOOKS if name in path.stem), None)
    if hit or nb is None:
        return hit
    ids = set(check_cells(nb))
    shared = {name: len(ids & set(check_cells(sol))) for name, sol in solutions.items()}
    best = max(shared, key=shared.get)
    return best if shared[best] else None


def with_checks_restored(sub: NotebookNode, sol: NotebookNode) -> NotebookNode:
    """The submission with each check cell replaced by the solution's, hidden tests included (an edited check cannot
    cheat: nbgrader's autograde too overwrites locked cells), cut after the last check cell."""
    sub, wanted = copy.deepcopy(sub), check_cells(sol)
    last = -1
    for grade_id, (i, _) in check_cells(sub).items():
        if grade_id in wanted:
            sub.cells[i] = copy.deepcopy(sol.cells[wanted[grade_id][0]])
            last = max(last, i)
    # Cells after the last check cannot change a score; skipping them keeps 05 (minutes to the end) short.
    sub.cells = sub.cells[: last + 1]
    for cell in (c for c in sub.cells if c.cell_type == "code"):   # a stored count is no proof that it ran here
        cell.outputs, cell.execution_count = [], None
    return sub


def inject_parameters(nb: NotebookNode, values: dict[str, Any]) -> None:
    """Papermill's way: a cell tagged ``injected-parameters`` right after the ``parameters`` cell."""
    at = next((i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), None)
    if values and at is not None:
        source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
        nb.cells.insert(at + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))


def execute(nb: NotebookNode, workdir: Path, timeout: int) -> str | None:
    """Run ``nb`` in place in a fresh kernel, errors allowed; ``None``, or why it could not run to the end. Answers and
    figures go to ``workdir``: one student's passing answers must not reach another's grading."""
    env = {**os.environ, "LAB5_ANSWERS": str(workdir / "answers"), "LAB5_FIGURES": str(workdir / "figures")}
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            interrupt_on_timeout=True, resources={"metadata": {"path": str(workdir)}})
    try:
        # the kernel's stderr (ipykernel's warnings, one per kernel) would interleave with the score table
        client.execute(env=env, stderr=subprocess.DEVNULL)
    except Exception as exc:   # a kernel that died or did not start: score what ran
        return f"the notebook could not run to its last check: {type(exc).__name__}: {one_line(str(exc))}"
    return None


def one_line(text: str) -> str:
    """The first non-blank line of ``text``, ANSI colours stripped."""
    return next((line.strip() for line in ANSI.sub("", text).splitlines() if line.strip()), "")


def cell_error(cell: NotebookNode, timeout: int) -> str | None:
    """``ename: first line of evalue`` of a cell's error output, or ``None``."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            if out.get("ename") == "KeyboardInterrupt":   # nbclient interrupts a cell past its timeout
                return f"timed out: the cell ran longer than {timeout} s and was interrupted"
            return f"{out.get('ename')}: {one_line(out.get('evalue', ''))}".rstrip(": ")
    return None


def score(nb: NotebookNode, sol: NotebookNode, reason: str | None, timeout: int) -> dict[str, dict[str, Any]]:
    """Each exercise's ``{"score", "max", "message"}``: a check cell that ran without an error earns its points; a
    failing one whose answer cell (``<id>_answer``) failed too reports the answer's error, not its own."""
    ran = {gid: nb.cells[i] for gid, (i, _) in check_cells(nb).items()}
    answer_errors = {c.metadata["nbgrader"]["grade_id"]: cell_error(c, timeout) for c in nb.cells
                     if c.metadata.get("nbgrader", {}).get("solution") and "grade_id" in c.metadata["nbgrader"]}
    exercises = {}
    for grade_id, (_, points) in check_cells(sol).items():
        cell = ran.get(grade_id)
        if cell is None:   # the submission has no such check cell
            message = "check cell missing"
        elif cell.get("execution_count") is None:
            message = f"not run: {reason}" if reason else "not run"
        elif (message := cell_error(cell, timeout)) is not None:
            failed = answer_errors.get(f"{grade_id}_answer")
            message = f"your answer cell failed: {failed}" if failed else message
        exercises[grade_id] = {"score": 0.0 if message else points, "max": points, "message": message or PASSED}
    return exercises


def read_submission(path: Path) -> tuple[NotebookNode | None, str | None]:
    """The submission as a notebook, or ``None`` and why not (one line)."""
    if not path.is_file():
        return None, "no such file"
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        return nb, None
    except Exception as exc:   # not JSON, not a notebook, another format version: the reason is the message
        return None, f"not a notebook ({type(exc).__name__}: {one_line(str(exc))[:200]})"


def grade_one(path: Path, solutions: dict[str, NotebookNode], timeout: int) -> dict[str, Any]:
    """One submission's result: ``{"notebook", "path", "score", "max", "exercises", "error"}``."""
    nb, error = read_submission(path)
    name = identify(path, nb, solutions)
    if name is None:
        error = error or "not a notebook of the workbook (neither its file name nor an exercise id is one of 01-05)"
        return {"notebook": None, "path": str(path), "score": 0.0, "max": 0.0, "exercises": {}, "error": error}
    sol = solutions[name]
    if nb is not None and check_cells(sol):
        run = with_checks_restored(nb, sol)
        inject_parameters(run, GRADING_PARAMETERS.get(name, {}))
        with tempfile.TemporaryDirectory(prefix="lab5-grade-") as tmp:
            error = execute(run, Path(tmp), timeout)
        exercises = score(run, sol, error, timeout)
    else:
        exercises = {gid: {"score": 0.0, "max": pts, "message": error} for gid, (_, pts) in check_cells(sol).items()}
    return {"notebook": name, "path": str(path), "score": sum(e["score"] for e in exercises.values()),
            "max": sum(e["max"] for e in exercises.values()), "exercises": exercises, "error": error}


def grade(paths: list[Path], timeout: int = CELL_TIMEOUT_S) -> list[dict[str, Any]]:
    """Grade each submission: the solution's check cells (with their hidden tests) in place of its own, run headless up
    to the last one, each scored. One per path: ``{"notebook", "path", "score", "max", "exercises": {grade_id: {"score",
    "max", "message"}}, "error"}``; a file that cannot be read or run scores 0 (``error`` and each ``message`` say
    why) and grading goes on. ``timeout``: seconds per cell."""
    solutions = {name: nbformat.read(notebooks_dir() / f"{name}.ipynb", as_version=4) for name in NOTEBOOKS}
    results = []
    for path in map(Path, paths):
        r = grade_one(path, solutions, timeout)
        results.append(r)
        print(f"graded {path}: {r['notebook'] or 'unknown notebook'}, {r['score']:g}/{r['max']:g}", flush=True)
    return results


def format_scores(results: list[dict[str, Any]]) -> str:
    """The score table: one row per exercise (notebook, exercise, points, message), a total row per notebook."""
    rows = [("notebook", "exercise", "points", "message")]
    for r in results:
        name = r["notebook"] or Path(r["path"]).name
        rows += [(name, gid, f"{e['score']:g}/{e['max']:g}", e["message"]) for gid, e in r["exercises"].items()]
        where = f"{r['path']}: {r['error']}" if r["error"] else r["path"]
        rows.append((name, "total", f"{r['score']:g}/{r['max']:g}", where))
    widths = [max(len(row[k]) for row in rows) for k in range(3)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3] for row in rows)
