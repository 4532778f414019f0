"""Every chapter notebook and lab solution runs top to bottom in QUICK mode and obeys the contract."""

import json
import time
from pathlib import Path

import nbformat
import pytest

from course_utils.notebooks import NotebookExecutionError, changed_outputs, execute_notebook, lint_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))
QUICK_BUDGET_S = 300  # docs/contributing.md asks for < 150 s on 2 cores; the margin absorbs a busy CI machine


def _ids(paths):
    return [p.relative_to(ROOT).as_posix() for p in paths]


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_follows_the_contract(path):
    assert lint_notebook(path) == []


@pytest.mark.notebook
@pytest.mark.timeout(QUICK_BUDGET_S + 60)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_in_quick_mode(path, tmp_path):
    start = time.perf_counter()
    execute_notebook(path, tmp_path / path.name, {"QUICK": True}, cell_timeout=QUICK_BUDGET_S)
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.1f}s")
    assert elapsed < QUICK_BUDGET_S
    assert changed_outputs(path, tmp_path / path.name) == []  # cells marked # NBVAL_CHECK_OUTPUT


def _notebook(tmp_path, *sources, tag_first=True, name="probe.ipynb"):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    if tag_first and nb.cells:
        nb.cells[0].metadata["tags"] = ["parameters"]
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


PARAMS = "QUICK = True\nMODEL = 'smollm2-135m-instruct'\nSEED = 0\nDEVICE = 'auto'"


def test_lint_names_a_notebook_without_parameters_cell(tmp_path):
    path = _notebook(tmp_path, "x = 1", tag_first=False, name="07_no_params.ipynb")
    problems = lint_notebook(path)
    assert any(p.startswith("07_no_params.ipynb:") and "parameters" in p for p in problems)


def test_lint_names_missing_parameters(tmp_path):
    path = _notebook(tmp_path, "QUICK = True\nSEED = 0", name="x.ipynb")
    assert any("MODEL, DEVICE" in p for p in lint_notebook(path))


def test_lint_flags_unexecuted_reordered_and_leaky_notebooks(tmp_path):
    path = _notebook(tmp_path, PARAMS, "print(1)")
    assert any("never executed" in p for p in lint_notebook(path))
    nb = json.loads(path.read_text())
    nb["cells"][0]["execution_count"], nb["cells"][1]["execution_count"] = 2, 1
    nb["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "/home/alice/course/x.py\n"}]
    path.write_text(json.dumps(nb))
    problems = lint_notebook(path)
    assert any("top to bottom" in p for p in problems)
    assert any("/home/alice/" in p for p in problems)


def test_lint_flags_oversized_outputs(tmp_path):
    path = _notebook(tmp_path, PARAMS)
    nb = json.loads(path.read_text())
    nb["cells"][0]["execution_count"] = 1
    nb["cells"][0]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x" * 600_000}]
    path.write_text(json.dumps(nb))
    assert any("output of" in p for p in lint_notebook(path))


def test_lint_rejects_a_file_that_is_not_a_notebook(tmp_path):
    path = tmp_path / "broken.ipynb"
    path.write_text("{ not json")
    assert lint_notebook(path)[0].startswith("broken.ipynb: not valid notebook JSON")


def test_changed_outputs_reports_marked_cells_only(tmp_path):
    committed = _notebook(tmp_path, PARAMS, "# NBVAL_CHECK_OUTPUT\nprint(2 + 2)", "print('free to vary')",
                          name="committed.ipynb")
    nb = json.loads(committed.read_text())
    nb["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["4\n"]}]
    nb["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "anything\n"}]
    committed.write_text(json.dumps(nb))
    executed = tmp_path / "executed.ipynb"
    nb["cells"].insert(1, nbformat.v4.new_code_cell("QUICK = True"))  # papermill's injected parameters
    nb["cells"][3]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "something else\n"}]
    executed.write_text(json.dumps(nb))
    assert changed_outputs(committed, executed) == []
    nb["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "5\n"}]
    executed.write_text(json.dumps(nb))
    assert changed_outputs(committed, executed) == ["code cell 1: output line 1 was '4', now '5'"]
    nb["cells"][2]["source"] = "print(5)"
    executed.write_text(json.dumps(nb))
    assert changed_outputs(committed, executed) == ["code cell 1: not found in the executed notebook"]


@pytest.mark.timeout(120)
def test_the_executed_copy_records_no_absolute_path(tmp_path, monkeypatch):
    path = _notebook(tmp_path, PARAMS, "print('ok')")
    monkeypatch.chdir(tmp_path)
    out = execute_notebook(path.resolve(), (tmp_path / "out" / "run.ipynb").resolve())
    record = json.loads(out.read_text())["metadata"]["papermill"]
    assert (record["input_path"], record["output_path"]) == ("probe.ipynb", "out/run.ipynb")


@pytest.mark.timeout(120)
def test_early_sys_exit_fails_the_run(tmp_path):
    path = _notebook(tmp_path, PARAMS, "import sys\nsys.exit(0)", "print('never reached')")
    with pytest.raises(NotebookExecutionError, match="sys.exit"):
        execute_notebook(path, tmp_path / "out.ipynb")


@pytest.mark.timeout(120)
def test_cell_error_names_the_cell(tmp_path):
    path = _notebook(tmp_path, PARAMS, "1 / 0")
    with pytest.raises(NotebookExecutionError, match="cell 1 failed with ZeroDivisionError"):
        execute_notebook(path, tmp_path / "out.ipynb")
