"""What the grader writes: grades.csv, feedback/<student>.md and .html, results/<student>.json.

``results/<student>.json`` follows Gradescope's autograder format (``score``, ``tests`` with
``name``, ``score``, ``max_score``, ``status``, ``output``, ``visibility``): each question is two
tests, its public cases (visible) and its hidden cases (``after_published`` by default). Our own
record sits in ``extra_data`` (without any path of the instructor's), so a later run can skip
submissions that have not changed.

Everything a student could have influenced (reasons, notes, their name) is escaped: the
Markdown feedback carries no raw HTML and no live links, the HTML feedback is escaped.
"""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path
from typing import Any

from course_utils.grading.results import SubmissionResult
from course_utils.tables import format_table

__all__ = ["HIDDEN_VISIBILITY", "feedback_markdown", "gradescope_results", "load_previous", "markdown_text",
           "summary_table", "write_grades_csv", "write_submission"]

HIDDEN_VISIBILITY = "after_published"  # Gradescope shows hidden-case results once grades are published
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>-])")


def markdown_text(text: str) -> str:
    """Text that Markdown shows literally: HTML escaped, Markdown syntax backslash-escaped, one line."""
    one_line = " ".join(str(text).split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(one_line, quote=True))


def feedback_markdown(result: SubmissionResult, lab: str) -> str:
    lines = [f"# {markdown_text(lab)}: feedback for {markdown_text(result.student)}", "",
             f"**Score: {result.total:g} / {result.max_total:g}**", "",
             "| question | points | status | why |", "|---|---|---|---|"]
    for q in result.questions:
        lines.append(f"| {markdown_text(q.question)} | {q.points:g} / {q.max_points:g} | {markdown_text(q.status)} "
                     f"| {markdown_text(q.reason)} |")
    if result.notes:
        lines += ["", "## Notes on your notebook", ""] + [f"- {markdown_text(n)}" for n in result.notes]
    if result.limits_in_force:
        lines += ["", "## How it was run", "",
                  "Your answer cells ran in a fresh copy of the lab, in a separate process with these limits:", ""]
        lines += [f"- {markdown_text(k)}: {markdown_text(v)}" for k, v in result.limits_in_force.items()]
    return "\n".join(lines) + "\n"


def _feedback_html(result: SubmissionResult, lab: str) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(q.question)}</td><td>{q.points:g} / {q.max_points:g}</td>"
        f"<td>{html.escape(q.status)}</td><td>{html.escape(q.reason)}</td></tr>" for q in result.questions)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    limits = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in result.limits_in_force.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(lab)}: "
            f"{html.escape(result.student)}</title></head><body>"
            f"<h1>{html.escape(lab)}: feedback for {html.escape(result.student)}</h1>"
            f"<p><b>Score: {result.total:g} / {result.max_total:g}</b></p>"
            f"<table border='1' cellpadding='4'><tr><th>question</th><th>points</th><th>status</th><th>why</th></tr>"
            f"{rows}</table>" + (f"<h2>Notes on your notebook</h2><ul>{notes}</ul>" if notes else "")
            + (f"<h2>How it was run</h2><ul>{limits}</ul>" if limits else "") + "</body></html>\n")


def gradescope_results(result: SubmissionResult, grading_key: str,
                       hidden_visibility: str = HIDDEN_VISIBILITY) -> dict[str, Any]:
    """The submission in Gradescope's results.json format: per question a public and a hidden test."""
    tests = []
    for q in result.questions:
        public_points, hidden_points = q.split_points()
        for kind, points, passed, cases, visibility in (
                ("public", public_points, q.public_passed, q.public_cases, "visible"),
                ("hidden", hidden_points, q.passed_cases - q.public_passed, q.total_cases - q.public_cases,
                 hidden_visibility)):
            if not cases:
                continue
            if q.status == "missing" and not q.problems:  # not run at all: the reason is the whole story
                lines = [q.reason]
            else:
                own = (kind, "the answer") if kind == "public" else (kind,)  # answer-cell errors show with public
                lines = [p for p in q.problems if p.startswith(own)]
            tests.append({"name": f"{q.question} ({kind} cases)", "score": points,
                          "max_score": round(q.max_points * cases / q.total_cases, 2),
                          "status": "passed" if passed == cases else "failed",
                          "output": "\n".join([f"{passed}/{cases} {kind} cases passed", *lines]),
                          "visibility": visibility})
    return {
        "score": result.total,
        "execution_time": round(result.wall_s, 2),
        "output": "\n".join(result.notes),
        "tests": tests,
        "extra_data": {"grading_key": grading_key, "result": result.to_dict()},
    }


def write_submission(out_dir: Path, result: SubmissionResult, lab: str, grading_key: str) -> None:
    """Feedback (md, html) and results JSON for one student; each file written atomically."""
    text = feedback_markdown(result, lab)
    for sub, suffix, content in (("feedback", ".md", text),
                                 ("feedback", ".html", _feedback_html(result, lab)),
                                 ("results", ".json", json.dumps(gradescope_results(result, grading_key), indent=2))):
        folder = out_dir / sub
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{result.student}{suffix}.tmp"
        tmp.write_text(content)
        tmp.replace(folder / f"{result.student}{suffix}")


def load_previous(out_dir: Path, student: str, grading_key: str, path: Path) -> SubmissionResult | None:
    """The stored result of an earlier run with the same lab and limits, if there is one."""
    try:
        data = json.loads((out_dir / "results" / f"{student}.json").read_text())
        if data["extra_data"]["grading_key"] != grading_key:
            return None
        return SubmissionResult.from_dict(data["extra_data"]["result"], path)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_grades_csv(out_dir: Path, results: list[SubmissionResult], questions: list[str]) -> Path:
    path = out_dir / "grades.csv"
    tmp = out_dir / ".grades.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", *questions, "total", "max"])
        for r in results:
            points = {q.question: q.points for q in r.questions}
            writer.writerow([r.student, *(f"{points.get(q, 0):g}" for q in questions), f"{r.total:g}",
                             f"{r.max_total:g}"])
    tmp.replace(path)
    return path


def summary_table(results: list[SubmissionResult]) -> str:
    rows = []
    for r in results:
        row: dict[str, object] = {"student": r.student}
        row.update({q.question: f"{q.points:g} {q.status}" for q in r.questions})
        row["total"] = f"{r.total:g}/{r.max_total:g}"
        rows.append(row)
    return format_table(rows)
