"""Hostile and broken submissions: the grader finishes, grades everyone else correctly, awards
nothing unearned, and says why. All cases are graded together in one run with --jobs 2."""

import json
from pathlib import Path

import nbformat
import pytest
from lab00_submissions import answer_index, release, submission

from course_utils.grading.grade import grade_submissions

WRONG_SOFTMAX = "def softmax_with_temperature(logits, temperature):\n    return [0.0 for _ in logits]\n"
LEAKY = '''
import os, pathlib, course_utils
leaked = None
candidates = [pathlib.Path(course_utils.__file__).resolve().parents[1] / "solutions" / "00_getting_started_lab.ipynb"]
candidates += [pathlib.Path(p) for p in os.environ.get("GRADER_HINT_PATHS", "").split(":") if p]
for path in candidates:
    try:
        leaked = path.read_text()
        break
    except OSError:
        pass
for pid in os.listdir("/proc"):  # other processes' working folders (other submissions)
    try:
        os.listdir(f"/proc/{pid}/cwd")
        if pid != str(os.getpid()):
            leaked = leaked or f"listed /proc/{pid}/cwd"
    except OSError:
        pass
if leaked and "BEGIN SOLUTION" in leaked:
    exec(leaked[leaked.index("def softmax_with_temperature"):].split("### END SOLUTION")[0]
         .replace("### BEGIN SOLUTION", ""))
else:
    def softmax_with_temperature(logits, temperature):
        return [-1.0] * len(logits)
'''
HARDCODED = '''
def softmax_with_temperature(logits, temperature):
    table = {
        (1.0, 2.0, 3.0, 1.0): [0.09003057317038046, 0.24472847105479764, 0.6652409557748218],
        (2.0, 1.0, 0.1, 0.5): [0.8637771182080067, 0.11689952094598567, 0.019323360846007505],
    }
    return table.get((*logits, temperature), [-1.0] * len(logits))
'''


def _v3_notebook() -> dict:
    return {"nbformat": 3, "nbformat_minor": 0, "metadata": {"name": "old"},
            "worksheets": [{"cells": [{"cell_type": "code", "input": "x = 1", "language": "python",
                                       "outputs": [], "metadata": {}}], "metadata": {}}]}


def _build(tmp: Path) -> dict[str, Path]:
    subs = tmp / "submissions"
    subs.mkdir()
    files: dict[str, Path] = {}

    def put(name: str, nb) -> None:
        files[name] = subs / f"{name}.ipynb"
        if isinstance(nb, (str, bytes)):
            files[name].write_bytes(nb if isinstance(nb, bytes) else nb.encode())
        elif isinstance(nb, dict) and not isinstance(nb, nbformat.NotebookNode):
            files[name].write_text(json.dumps(nb))
        else:
            nbformat.write(nb, files[name])

    put("correct", submission())
    put("blank", release())
    put("infinite_loop", submission({"softmax-temperature": "def softmax_with_temperature(l, t):\n    while True:\n"
                                                            "        pass\n"}))
    put("sys_exit", submission({"softmax-temperature": "import sys\nsys.exit(0)\n"}))
    put("os_exit", submission({"top-p": "import os\nos._exit(0)\n"}))
    put("huge_alloc", submission({"top-p": "def top_p_filter(probs, p):\n    block = bytearray(40 * 2**30)\n"
                                           "    return probs\n"}))
    fork = "import os\nfor _ in range(64):\n    try:\n        os.fork()\n    except OSError:\n        break\n"
    put("fork_bomb", submission({"recent-messages": fork + submission().cells[answer_index(submission(),
                                                                                    "recent-messages")].source}))
    put("monkeypatch", submission({"softmax-temperature": (
        "import builtins, course_utils.grading as g, course_utils.grading.values as v\n"
        "g.check = lambda *a, **k: print('All tests passed!') or True\n"
        "v.compare = lambda *a, **k: (True, '')\n"
        "builtins.print('patched')\n"
        "builtins.abs = lambda x: 0\n"
        "builtins.print = lambda *a, **k: None\n" + WRONG_SOFTMAX)}))
    put("reads_secrets", submission({"softmax-temperature": LEAKY}))
    put("fake_grades", submission({"softmax-temperature": (
        "print('All tests passed! Score: 10/10')\n"
        "open('grades.csv', 'w').write('student,total\\nfake_grades,10\\n')\n"
        "import glob\nfor path in glob.glob('/tmp/**/grades.csv', recursive=True):\n"
        "    try:\n        open(path, 'w').write('hacked')\n    except OSError:\n        pass\n" + WRONG_SOFTMAX)}))
    put("not_json", "{ this is not json")
    put("not_notebook", json.dumps([1, 2, 3]))
    put("nbformat3", _v3_notebook())
    deleted = submission()
    del deleted.cells[answer_index(deleted, "top-p")]
    put("deleted_cell", deleted)
    dup = submission()
    i = answer_index(dup, "softmax-temperature")
    wrong = nbformat.v4.new_code_cell(WRONG_SOFTMAX, metadata=dict(dup.cells[i].metadata))
    dup.cells.insert(i, wrong)
    put("duplicated_cell", dup)
    reordered = submission()
    a, b = answer_index(reordered, "softmax-temperature"), answer_index(reordered, "recent-messages")
    reordered.cells[a], reordered.cells[b] = reordered.cells[b], reordered.cells[a]
    put("reordered", reordered)
    edited = submission()
    edited.cells[answer_index(edited, "softmax-temperature")].metadata["course"]["points"] = 100
    k = answer_index(edited, "recent-messages")
    edited.cells[k].metadata["course"] = {"question": "renamed"}  # cell id still matches
    j = answer_index(edited, "top-p")
    edited.cells[j].metadata = {}
    edited.cells[j]["id"] = "student-made-this-up"  # neither id nor metadata: unrecoverable
    for cell in edited.cells:  # the public check cells are rewritten to claim success
        if "check(" in cell.source:
            cell.source = "print('all public checks passed')"
    put("edited_metadata", edited)
    put("megabytes_of_output", submission({"top-p": "print('x' * 5_000_000)\n" + submission().cells[
        answer_index(submission(), "top-p")].source}))
    put("hardcoded_public", submission({"softmax-temperature": HARDCODED}))
    retyped = submission()
    r = answer_index(retyped, "recent-messages")
    retyped.cells[r] = nbformat.v4.new_markdown_cell(retyped.cells[r].source, metadata=retyped.cells[r].metadata)
    put("retyped_markdown", retyped)
    return files


@pytest.fixture(scope="module")
def graded(tmp_path_factory, lab_context):
    tmp = tmp_path_factory.mktemp("adversarial")
    files = _build(tmp)
    out = tmp / "out"
    results = grade_submissions(list(files.values()), lab_context, out, jobs=2)
    return {r.student: r for r in results}, out


def q(results, student, question):
    return next(x for x in results[student].questions if x.question == question)


def test_every_submission_got_a_row_and_the_correct_one_full_marks(graded):
    results, out = graded
    assert len(results) == 20
    assert results["correct"].total == 10
    rows = (out / "grades.csv").read_text().splitlines()
    assert rows[0].startswith("student,softmax-temperature,top-p,recent-messages,total")
    assert len(rows) == 21
    for name in results:
        assert (out / "feedback" / f"{name}.md").is_file() and (out / "feedback" / f"{name}.html").is_file()
        assert json.loads((out / "results" / f"{name}.json").read_text())["score"] == results[name].total


def test_blank_lab_scores_zero_as_missing(graded):
    results, _ = graded
    assert results["blank"].total == 0
    assert {x.status for x in results["blank"].questions} == {"missing"}


def test_infinite_loop_times_out_and_the_rest_is_graded(graded):
    results, _ = graded
    assert q(results, "infinite_loop", "softmax-temperature").status == "timeout"
    assert q(results, "infinite_loop", "softmax-temperature").points == 0
    assert results["infinite_loop"].total == 7


def test_sys_exit_costs_only_its_own_question(graded):
    results, _ = graded
    first = q(results, "sys_exit", "softmax-temperature")
    assert first.points == 0 and "sys.exit(0)" in first.reason
    assert results["sys_exit"].total == 7


def test_os_exit_ends_the_run_with_an_accurate_reason(graded):
    results, _ = graded
    assert results["os_exit"].total == 0
    assert all("before reporting results" in x.reason for x in results["os_exit"].questions)


def test_huge_allocation_is_a_memory_failure(graded):
    results, _ = graded
    top_p = q(results, "huge_alloc", "top-p")
    assert top_p.status == "memory" and top_p.points == 0
    assert results["huge_alloc"].total == 6


def test_fork_bomb_is_contained(graded):
    results, _ = graded
    assert results["fork_bomb"].total == 10  # its functions are right; forking earned nothing extra
    assert "cgroup" in results["fork_bomb"].limits_in_force.get("processes", "") or \
        "RLIMIT_NPROC" in results["fork_bomb"].limits_in_force.get("processes", "")


def test_monkeypatching_the_checker_changes_nothing(graded):
    results, _ = graded
    patched = q(results, "monkeypatch", "softmax-temperature")
    assert patched.points == 0 and patched.status == "failed"


def test_secrets_on_disk_are_out_of_reach(graded):
    results, _ = graded
    leaky = q(results, "reads_secrets", "softmax-temperature")
    assert leaky.points == 0 and leaky.status == "failed"


def test_fake_success_messages_and_grade_files_have_no_effect(graded):
    results, out = graded
    assert q(results, "fake_grades", "softmax-temperature").points == 0
    assert results["fake_grades"].total == 7
    assert "hacked" not in (out / "grades.csv").read_text()
    assert "fake_grades,0,4,3,7,10" in (out / "grades.csv").read_text()


@pytest.mark.parametrize("name", ["not_json", "not_notebook", "nbformat3"])
def test_unreadable_or_foreign_notebooks_score_zero_with_a_reason(graded, name):
    results, _ = graded
    assert results[name].total == 0
    assert all(x.status == "missing" for x in results[name].questions)
    assert results[name].notes


def test_deleted_answer_cell_is_missing_only_for_its_question(graded):
    results, _ = graded
    assert q(results, "deleted_cell", "top-p").status == "missing"
    assert results["deleted_cell"].total == 6
    assert any("top-p: no answer cell" in n for n in results["deleted_cell"].notes)


def test_duplicated_answer_cell_uses_the_last_and_says_so(graded):
    results, _ = graded
    assert results["duplicated_cell"].total == 10
    assert any("2 cells carry" in n for n in results["duplicated_cell"].notes)


def test_reordered_answer_cells_are_graded_and_noted(graded):
    results, _ = graded
    assert results["reordered"].total == 10
    assert any("re-ordered" in n for n in results["reordered"].notes)


def test_edited_metadata_and_test_cells_have_no_effect(graded):
    results, _ = graded
    r = results["edited_metadata"]
    assert q(results, "edited_metadata", "softmax-temperature").max_points == 3  # not 100
    assert q(results, "edited_metadata", "recent-messages").points == 3  # found by cell id
    assert q(results, "edited_metadata", "top-p").status == "missing"
    assert r.total == 6 and r.max_total == 10
    assert any("found it by its cell id" in n for n in r.notes)


def test_megabytes_of_output_are_truncated_not_fatal(graded):
    results, _ = graded
    assert results["megabytes_of_output"].total == 10
    assert any("output limit" in n for n in results["megabytes_of_output"].notes)


def test_hardcoded_public_answers_fail_the_hidden_cases(graded):
    results, _ = graded
    hard = q(results, "hardcoded_public", "softmax-temperature")
    assert hard.status == "failed" and 0 < hard.points < hard.max_points
    assert hard.passed_cases == 2 and "hidden case" in hard.reason


def test_retyped_answer_cell_is_graded_and_noted(graded):
    results, _ = graded
    assert results["retyped_markdown"].total == 10
    assert any("markdown cell" in n for n in results["retyped_markdown"].notes)


def test_regrading_skips_unchanged_submissions(graded, lab_context, monkeypatch):
    results, out = graded
    from course_utils.grading import grade as grade_module

    def boom(*_):
        raise AssertionError("re-graded an unchanged submission")

    monkeypatch.setattr(grade_module, "grade_one", boom)
    again = grade_submissions([Path(results["correct"].path)], lab_context, out, jobs=1)
    assert again[0].total == 10
