"""`llm-course export gradescope`: the zip unpacks into a working autograder, run here against a
fake /autograder tree; and `assign` refuses to run outside a course folder."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from lab00_submissions import SOLUTION, submission

from course_utils.cli import main


@pytest.fixture(scope="module")
def autograder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gradescope")
    zip_path = tmp / "lab.zip"
    assert main(["export", "gradescope", "--lab", str(SOLUTION), "--out", str(zip_path), "--cell-timeout", "5",
                 "--timeout", "60", "--memory-gb", "2"]) == 0
    root = tmp / "autograder"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(root / "source")
        modes = {i.filename: i.external_attr >> 16 for i in archive.infolist()}
    return zip_path, root, modes


def _run(root: Path, notebooks: dict[str, nbformat.NotebookNode]) -> dict:
    sub = root / "submission"
    if sub.exists():
        for p in sub.iterdir():
            p.unlink()
    sub.mkdir(exist_ok=True)
    for name, nb in notebooks.items():
        nbformat.write(nb, sub / name)
    script = root / "source" / "run_autograder"
    script.chmod(0o755)
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable}
    done = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((root / "results" / "results.json").read_text())


def test_the_zip_holds_what_gradescope_runs(autograder):
    zip_path, root, modes = autograder
    assert modes["setup.sh"] & 0o111 and modes["run_autograder"] & 0o111
    assert (root / "source" / "lab" / SOLUTION.name).is_file()
    assert (root / "source" / "course" / "course_utils" / "grading" / "export.py").is_file()
    assert not any("__pycache__" in n for n in modes)
    config = json.loads((root / "source" / "config.json").read_text())
    assert config["hidden_visibility"] == "after_published" and config["limits"]["cell_timeout_s"] == 5
    assert subprocess.run(["bash", "-n", str(root / "source" / "setup.sh")]).returncode == 0


def test_run_autograder_grades_with_the_zips_own_code(autograder):
    zip_path, root, _ = autograder
    results = _run(root, {SOLUTION.name: submission()})
    assert results["score"] == 10
    hidden = [t for t in results["tests"] if t["name"].endswith("(hidden cases)")]
    public = [t for t in results["tests"] if t["name"].endswith("(public cases)")]
    assert len(hidden) == len(public) == 3
    assert {t["visibility"] for t in hidden} == {"after_published"} and {t["visibility"] for t in public} == {"visible"}
    assert sum(t["max_score"] for t in results["tests"]) == pytest.approx(10)
    text = json.dumps(results)
    assert str(root) not in text and str(SOLUTION.parent) not in text  # no instructor paths
    assert set(results["extra_data"]) == {"grading_key"}


def test_a_wrong_answer_shows_its_public_failure_and_hides_the_hidden_ones(autograder):
    _, root, _ = autograder
    wrong = submission({"top-p": "def top_p_filter(probs, p):\n    return [0.0] * len(probs)\n"})
    results = _run(root, {"anything.ipynb": wrong})
    top_p = {t["name"]: t for t in results["tests"] if t["name"].startswith("top-p")}
    assert results["score"] == 6
    assert top_p["top-p (public cases)"]["score"] == 0 and "0/2 public cases passed" in top_p[
        "top-p (public cases)"]["output"]
    assert "0.25" not in top_p["top-p (hidden cases)"]["output"]  # a hidden argument


def test_two_notebooks_get_a_clear_message_not_a_crash(autograder):
    _, root, _ = autograder
    results = _run(root, {"a.ipynb": submission(), "b.ipynb": submission()})
    assert results["score"] == 0 and "exactly one notebook" in results["output"]


def test_an_unknown_visibility_is_refused(tmp_path, capsys):
    assert main(["export", "gradescope", "--lab", str(SOLUTION), "--out", str(tmp_path / "x.zip"),
                 "--hidden-visibility", "sometimes"]) == 1
    assert "hidden_visibility must be one of" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["assign"], ["assign", "--check"]])
def test_assign_outside_a_course_folder_fails_clearly(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    assert main(command) == 1
    err = capsys.readouterr().err
    assert "not inside a course folder" in err and not (tmp_path / "labs").exists()
