"""A hostile class: one batch of 36 submissions of lab 00, honest ones mixed with every attack
that once earned points, leaked a hidden case or cost other students their rows. Graded in one
run with --jobs 2; every honest submission must keep exactly its score and every row must exist.
"""

import json
import os
import stat
from pathlib import Path

import pytest
from lab00_submissions import SOLUTION, solution_answers, submission

from course_utils.grading.grade import collect_submissions, grade_submissions
from course_utils.grading.run import _Conversation
from course_utils.grading.spec import parse_lab

SECRET = "grader-token-5f3a9c"  # set in the grader's environment while the class is graded
RIGHT = solution_answers()
WRONG_TOP_P = "def top_p_filter(probs, p):\n    return [0.0] * len(probs)\n"
WRITE_CHANNEL = "import os, sys\nos.write(int(sys.argv[1]), {payload})\n"

# What the answer cells of each attack hold (other questions keep the correct answer).
ATTACKS = {
    # --- messages forged on the result channel (the harness's pipe is reachable by its number)
    "forged_wrong_types": {"top-p": WRITE_CHANNEL.format(
        payload='b\'{"type": "results", "cells": "nope", "cases": [1, 2]}\\n\'')},
    "forged_missing_keys": {"top-p": WRITE_CHANNEL.format(payload="b'{\"type\": \"cells\"}\\n'")},
    "forged_case_out_of_turn": {"softmax-temperature": RIGHT["softmax-temperature"] + "\n" + WRITE_CHANNEL.format(
        payload='b\'{"type": "case", "id": "top-p/hidden/0", "status": "ok", "value": [1]}\\n\'')},
    "deeply_nested_message": {"top-p": WRITE_CHANNEL.format(payload="b'[' * 200_000 + b'\\n'")},
    "oversized_message": {"top-p": WRITE_CHANNEL.format(payload="b'\"' + b'x' * (17 << 20) + b'\"\\n'")},
    "not_an_object": {"top-p": WRITE_CHANNEL.format(payload="b'[1, 2, 3]\\n'")},
    # --- values the scorer must survive
    "huge_integer": {"softmax-temperature": "def softmax_with_temperature(logits, t):\n"
                                            "    return [10**400] * len(logits)\n"},
    "nan_and_inf": {"softmax-temperature": "def softmax_with_temperature(logits, t):\n"
                                           "    return [float('nan'), float('inf')][:len(logits)]\n"},
    # --- a job folder nobody could clean before: very deep, and an immutable file
    "deep_folders": {"top-p": (
        "import os, fcntl, struct, array\n"
        "base = os.getcwd()\n"
        "for _ in range(1500):\n"
        "    os.mkdir('d')\n"
        "    os.chdir('d')\n"
        "os.chdir(base)\n"
        "open('locked', 'w').write('x')\n"
        "try:\n"
        "    fd = os.open('locked', os.O_RDONLY)\n"
        "    fcntl.ioctl(fd, 0x40086602, struct.pack('l', 0x10))  # FS_IOC_SETFLAGS, FS_IMMUTABLE_FL\n"
        "except OSError:\n"
        "    pass\n" + RIGHT["top-p"])},
    # --- hidden arguments, fished for through every channel that reached the feedback
    "leaks_hidden_cases": {
        "softmax-temperature": (
            "SEEN = []\n"
            "def softmax_with_temperature(logits, temperature):\n"
            "    SEEN.append(repr(logits))\n"
            "    name = 'Leak_' + '_'.join(str(x).replace('.', 'p').replace('-', 'm') for x in logits)\n"
            "    raise type(name, (Exception,), {})(repr(logits))\n"),
        "top-p": ("import sys\ndef top_p_filter(probs, p):\n    sys.exit('the arguments were ' + repr(probs))\n"),
        "recent-messages": (
            "import gc, sys\n"
            "def recent_messages_within_budget(messages, budget):\n"
            "    found = []\n"
            "    frame = sys._getframe()\n"
            "    while frame is not None:\n"
            "        found += [repr(v)[:300] for v in frame.f_locals.values()]\n"
            "        frame = frame.f_back\n"
            "    found += [repr(o.get('args'))[:300] for o in gc.get_objects()\n"
            "              if isinstance(o, dict) and 'args' in o]\n"
            "    return [' | '.join(SEEN + found)]\n")},
    "reads_grader_secrets": {"recent-messages": (
        "import os\n"
        "STOLEN = []\n"
        "for pid in os.listdir('/proc'):\n"
        "    for name in ('environ', 'cmdline'):\n"
        "        try:\n"
        f"            if b'{SECRET}' in open(f'/proc/{{pid}}/{{name}}', 'rb').read():\n"
        "                STOLEN.append(pid)\n"
        "        except OSError:\n"
        "            pass\n"
        "for path in ('/etc/shadow', '/root/.bash_history'):\n"
        "    try:\n"
        "        STOLEN.append(open(path).read()[:50])\n"
        "    except OSError:\n"
        "        pass\n" + RIGHT["recent-messages"].replace("    return ", "    return STOLEN or ", 1))},
    "html_in_feedback": {"softmax-temperature": (
        "def softmax_with_temperature(logits, temperature):\n"
        "    raise ValueError('<script>alert(1)</script><img src=x onerror=alert(2)> [click](javascript:x)')\n")},
    "setsid_daemon": {"top-p": (
        "import os, subprocess\n"
        "subprocess.Popen(['sleep', '31.4159'], start_new_session=True)\n" + RIGHT["top-p"])},
}
# Honest work, each with the score it must keep (points: softmax 3, top-p 4, recent-messages 3).
HONEST = {f"honest_{i:02d}": ({}, 10) for i in range(12)} | {
    f"honest_wrong_top_p_{i}": ({"top-p": WRONG_TOP_P}, 6) for i in range(4)}


def _build(folder: Path) -> dict[str, Path]:
    import nbformat

    files = {}
    for name, (answers, _) in HONEST.items():
        files[name] = folder / f"{name}.ipynb"
        nbformat.write(submission(answers), files[name])
    for name, answers in ATTACKS.items():
        files[name] = folder / f"{name}.ipynb"
        nbformat.write(submission(answers), files[name])
    # Names that map to the same id; each must get its own row.
    nbformat.write(submission(), folder / "a b.ipynb")
    nbformat.write(submission({"top-p": WRONG_TOP_P}), folder / "a_b.ipynb")
    # Not regular files inside the submission folder.
    links = {"link_to_solution": SOLUTION, "link_to_peer": files["honest_00"], "link_to_shadow": Path("/etc/shadow")}
    for name, target in links.items():
        (folder / f"{name}.ipynb").symlink_to(target)
    os.mkfifo(folder / "fifo.ipynb")
    if os.geteuid() == 0:
        os.mknod(folder / "zero_device.ipynb", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    (folder / "alice").mkdir()  # one folder per student works too
    nbformat.write(submission(), folder / "alice" / SOLUTION.name)
    (folder / "mallory").symlink_to(folder / "alice")  # a link where a student folder would be
    return files


@pytest.fixture(scope="module")
def class_graded(tmp_path_factory, lab_context):
    tmp = tmp_path_factory.mktemp("hostile_class")
    subs = tmp / "submissions"
    subs.mkdir()
    _build(subs)
    paths, warnings = collect_submissions([subs])
    with pytest.MonkeyPatch.context() as patch:  # the grader's own environment holds a secret
        patch.setenv("GRADER_API_TOKEN", SECRET)
        results = grade_submissions(paths, lab_context, tmp / "out", jobs=2)
    return {r.student: r for r in results}, tmp / "out", paths, warnings


def _feedback(out: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((out / "feedback").iterdir()) if p.suffix in (".md", ".html")) + \
        "\n".join(p.read_text() for p in sorted((out / "results").iterdir()))


def test_the_batch_is_large_and_every_submission_has_exactly_one_row(class_graded):
    results, out, paths, _ = class_graded
    assert len(paths) >= 30
    assert len(results) == len(paths)
    rows = (out / "grades.csv").read_text().splitlines()
    assert len(rows) == len(paths) + 1
    assert len({r.split(",")[0] for r in rows[1:]}) == len(paths)


def test_every_honest_submission_keeps_exactly_its_score(class_graded):
    results, *_ = class_graded
    for name, (_, score) in HONEST.items():
        assert results[name].total == score, (name, results[name].questions)
    assert results["alice"].total == 10


@pytest.mark.parametrize("name", ["forged_wrong_types", "forged_missing_keys", "forged_case_out_of_turn",
                                  "deeply_nested_message", "oversized_message", "not_an_object"])
def test_a_forged_result_message_is_that_students_error_only(class_graded, name):
    results, *_ = class_graded
    r = results[name]
    assert r.total == 0
    assert all(q.status == "error" and "result channel" in q.reason for q in r.questions), r.questions


def test_values_that_break_arithmetic_cost_only_their_question(class_graded):
    results, *_ = class_graded
    for name in ("huge_integer", "nan_and_inf"):
        softmax = next(q for q in results[name].questions if q.question == "softmax-temperature")
        assert softmax.points == 0 and softmax.status == "failed"
        assert results[name].total == 7


def test_a_folder_nobody_could_clean_does_not_stop_the_batch(class_graded):
    results, *_ = class_graded
    assert results["deep_folders"].total == 10
    assert not any("could not be removed" in n for n in results["deep_folders"].notes)


def test_names_that_collide_get_one_row_each(class_graded):
    results, *_ = class_graded
    pair = sorted((n, r.total) for n, r in results.items() if n.startswith("a_b"))
    assert len(pair) == 2 and pair[0][0] != pair[1][0]
    assert sorted(total for _, total in pair) == [6, 10]


@pytest.mark.parametrize("name", ["link_to_solution", "link_to_peer", "link_to_shadow"])
def test_a_symbolic_link_is_refused_not_followed(class_graded, name):
    results, out, *_ = class_graded
    r = results[name]
    assert r.total == 0 and r.sha256 == ""
    assert all("symbolic link" in q.reason for q in r.questions)
    assert "root:" not in (out / "feedback" / f"{name}.md").read_text()


def test_fifos_and_devices_are_refused_without_reading(class_graded):
    results, *_ = class_graded
    assert "a FIFO" in results["fifo"].notes[0] and results["fifo"].total == 0
    if os.geteuid() == 0:
        assert "a device" in results["zero_device"].notes[0] and results["zero_device"].total == 0


def test_a_linked_student_folder_is_skipped_with_a_warning(class_graded):
    *_, paths, warnings = class_graded
    assert not any("mallory" in str(p) for p in paths)
    assert any("mallory" in w and "link" in w for w in warnings)


def test_no_hidden_argument_reaches_any_feedback(class_graded, lab_context):
    results, out, *_ = class_graded
    text = _feedback(out)
    hidden = [case for case in lab_context.spec.cases if not case.public]
    needles = ["1000.0", "999.5", "4.5, 4.5", "0.25, 0.25", "0.05, 0.05", "Tokens are not words",
               "much longer message", "Leak_1000", "Leak_m3"]
    for needle in needles:
        assert needle not in text, needle
    assert len(hidden) == 15
    leak = {q.question: q for q in results["leaks_hidden_cases"].questions}
    assert leak["softmax-temperature"].points == 0 and leak["top-p"].points == 0
    # The public cases ran first, and the frames and heap they could search held no hidden case.
    assert "hidden" not in leak["recent-messages"].reason.split("public case")[0]


def test_the_graders_environment_and_secret_files_are_out_of_reach(class_graded):
    results, out, *_ = class_graded
    assert results["reads_grader_secrets"].total == 10  # STOLEN stayed empty: the answer came back right
    assert SECRET not in _feedback(out)


def test_markdown_feedback_carries_no_raw_html_or_links(class_graded):
    results, out, *_ = class_graded
    md = (out / "feedback" / "html_in_feedback.md").read_text()
    assert "alert" in md and "script" in md  # the text is shown ...
    for raw in ("<script", "<img", "](javascript"):  # ... but as text, not markup
        assert raw not in md
    html = (out / "feedback" / "html_in_feedback.html").read_text()
    assert "<script" not in html and "&lt;script&gt;" in html


def test_no_process_outlives_its_grading(class_graded):
    import psutil

    results, *_ = class_graded
    assert results["setsid_daemon"].total == 10
    left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and
            "31.4159" in p.info["cmdline"]]
    assert not left


def test_feedback_lists_the_limits_and_privileges_in_force(class_graded):
    results, out, *_ = class_graded
    limits = results["honest_00"].limits_in_force
    for key in ("memory", "processes", "network", "filesystem", "privileges", "disk"):
        assert key in limits, key
    md = (out / "feedback" / "honest_00.md").read_text()
    assert "privileges" in md and "uid" in md
    if os.geteuid() == 0 and "namespaces" in limits and "PID" in limits["namespaces"]:
        assert limits["privileges"].startswith("uid 65534") and "no capabilities" in limits["privileges"]


def test_results_json_holds_no_instructor_path_and_hides_hidden_cases(class_graded):
    results, out, paths, _ = class_graded
    data = json.loads((out / "results" / "honest_00.json").read_text())
    assert str(paths[0].parent) not in json.dumps(data)
    hidden = [t for t in data["tests"] if "hidden" in t["name"]]
    assert len(hidden) == 3 and {t["visibility"] for t in hidden} == {"after_published"}
    assert sum(t["score"] for t in data["tests"]) == pytest.approx(data["score"]) == 10
    assert all(t["max_score"] > 0 for t in data["tests"])


def test_regrading_with_other_limits_does_not_reuse_old_results(class_graded, lab_context):
    import dataclasses

    results, out, paths, _ = class_graded
    one = [p for p in paths if p.stem == "honest_03"]
    same = grade_submissions(one, lab_context, out, jobs=1)
    assert same[0].reused and same[0].total == 10
    looser = dataclasses.replace(lab_context, limits=dataclasses.replace(lab_context.limits, cell_timeout_s=4))
    again = grade_submissions(one, looser, out, jobs=1)
    assert not again[0].reused and again[0].total == 10


def test_hidden_arguments_are_not_in_the_process_before_their_call(tmp_path):
    """The harness holds no later case: a function looking through the whole heap for the next
    hidden case's arguments does not find them, nor does a cell looking for any case's."""
    from course_utils.grading.run import run_cells
    from course_utils.grading.spec import Case
    from course_utils.sandbox import Limits

    look = ("import gc\n"
            "def anywhere(needle):\n"
            "    return any(isinstance(o, (list, dict, str, bytes)) and needle in repr(o)[:10000]\n"
            "               for o in gc.get_objects())\n"
            "IN_CELL = anywhere('SECRET_' + 'LATER')\n"
            "def probe(x):\n"
            "    return [IN_CELL, anywhere('SECRET_' + 'LATER')]\n")
    cases = [Case("q/hidden/0", "q", "probe", ["first"], False), Case("q/hidden/1", "q", "probe", ["SECRET_LATER"],
                                                                      False)]
    run = run_cells([(0, look)], cases, Limits(cell_timeout_s=10, wall_timeout_s=60))
    assert run.finished, run.failure
    assert run.cases["q/hidden/0"]["value"] == [False, False]
    assert run.cases["q/hidden/1"]["value"][1] is True  # the probe works: its own argument is there


def test_public_cases_are_sent_before_hidden_ones():
    import nbformat

    spec = parse_lab(nbformat.read(str(SOLUTION), as_version=4), SOLUTION.name)
    order = [c.public for c in _Conversation([], spec.cases).todo]
    assert order == sorted(order, reverse=True) and order[0] and not order[-1]
