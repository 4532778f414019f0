"""What the grader writes: grades.csv, feedback/<student>.md and .html, results/<student>.json.

``results/<student>.json`` follows Gradescope's autograder format (``score``, ``tests`` with
``name``, ``score``, ``max_score``, ``status``, ``output``), with our own record in
``extra_data`` so a later run can skip submissions that have not changed.
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

from course_utils.tables import format_table

if TYPE_CHECKING:
    from course_utils.grading.grade import GradingContext, SubmissionResult
    from course_utils.grading.spec import LabSpec

__all__ = ["feedback_markdown", "load_previous", "summary_table", "write_grades_csv", "write_submission"]


def feedback_markdown(result: SubmissionResult, lab: str) -> str:
    lines = [f"# {lab}: feedback for {result.student}", "",
             f"**Score: {result.total:g} / {result.max_total:g}**", "",
             "| question | points | status | why |", "|---|---|---|---|"]
    for q in result.questions:
        reason = q.reason.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {q.question} | {q.points:g} / {q.max_points:g} | {q.status} | {reason} |")
    if result.notes:
        lines += ["", "## Notes on your notebook", ""] + [f"- {n}" for n in result.notes]
    if result.limits_in_force:
        lines += ["", "## How it was run", "",
                  "Your answer cells ran in a fresh copy of the lab, in a separate process with these limits:", ""]
        lines += [f"- {k}: {v}" for k, v in result.limits_in_force.items()]
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


def _gradescope(result: SubmissionResult, ctx: GradingContext) -> dict:
    return {
        "score": result.total,
        "execution_time": round(result.wall_s, 2),
        "output": "\n".join(result.notes),
        "tests": [{"name": q.question, "score": q.points, "max_score": q.max_points, "status":
                   "passed" if q.status == "passed" else "failed", "output": f"{q.status}: {q.reason}",
                   "visibility": "visible"} for q in result.questions],
        "extra_data": {"lab_sha256": ctx.lab_sha256, "result": result.to_dict()},
    }


def write_submission(out_dir: Path, result: SubmissionResult, ctx: GradingContext) -> None:
    """Feedback (md, html) and results JSON for one student; written atomically."""
    text = feedback_markdown(result, ctx.name)
    for sub, suffix, content in (("feedback", ".md", text),
                                 ("feedback", ".html", _feedback_html(result, ctx.name)),
                                 ("results", ".json", json.dumps(_gradescope(result, ctx), indent=2))):
        folder = out_dir / sub
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{result.student}{suffix}.tmp"
        tmp.write_text(content)
        tmp.replace(folder / f"{result.student}{suffix}")


def load_previous(out_dir: Path, student: str, lab_sha256: str) -> SubmissionResult | None:
    """The stored result of an earlier run for the same lab version, if there is one."""
    from course_utils.grading.grade import SubmissionResult

    try:
        data = json.loads((out_dir / "results" / f"{student}.json").read_text())
        if data["extra_data"]["lab_sha256"] != lab_sha256:
            return None
        return SubmissionResult.from_dict(data["extra_data"]["result"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_grades_csv(out_dir: Path, results: list[SubmissionResult], spec: LabSpec) -> Path:
    path = out_dir / "grades.csv"
    questions = list(spec.questions)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", *questions, "total", "max"])
        for r in results:
            points = {q.question: q.points for q in r.questions}
            writer.writerow([r.student, *(f"{points.get(q, 0):g}" for q in questions), f"{r.total:g}",
                             f"{r.max_total:g}"])
    return path


def summary_table(results: list[SubmissionResult]) -> str:
    rows = []
    for r in results:
        row: dict[str, object] = {"student": r.student}
        row.update({q.question: f"{q.points:g} {q.status}" for q in r.questions})
        row["total"] = f"{r.total:g}/{r.max_total:g}"
        rows.append(row)
    return format_table(rows)
