"""Grade a folder of submissions (``llm-course grade``), scoring in this trusted process.

For each submission:

1. **Rebuild, don't police.** Only the answer cells are taken from the submission (found by the
   question id in their metadata, or failing that by their cell id) and put into a fresh copy of
   the release notebook, built from the solution by :mod:`~course_utils.grading.assign`.
   Whatever else the student changed (test cells, metadata, points) has no effect; deleted,
   duplicated, retyped or re-ordered answer cells are noted in the feedback.
2. **Run in the sandbox.** The rebuilt cells run in a separate, limited process
   (:mod:`course_utils.sandbox`) in an empty temporary folder, which then calls the graded
   functions on every test case and hands back the return values as plain JSON.
3. **Score here.** Each value is compared with what the reference solution returned for the same
   arguments (computed once per run, in the same sandbox). Nothing the student's process prints
   or writes can change a score; it can only produce return values.
"""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from course_utils.grading.assign import make_student_version
from course_utils.grading.run import NotebookRun, run_cells
from course_utils.grading.spec import LabFormatError, LabSpec, course_meta, parse_lab
from course_utils.grading.values import compare
from course_utils.sandbox import Limits

__all__ = ["GradingContext", "QuestionResult", "SubmissionResult", "grade_one", "grade_submissions",
           "prepare_lab", "student_name"]

MAX_SUBMISSION_BYTES = 20 << 20
STATUSES = ("passed", "failed", "error", "timeout", "memory", "missing")


@dataclass
class QuestionResult:
    question: str
    points: float
    max_points: float
    status: str  # one of STATUSES
    reason: str
    passed_cases: int = 0
    total_cases: int = 0


@dataclass
class SubmissionResult:
    student: str
    path: str
    sha256: str
    questions: list[QuestionResult]
    notes: list[str] = field(default_factory=list)
    limits_in_force: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0
    exec_s: float = 0.0

    @property
    def total(self) -> float:
        return round(sum(q.points for q in self.questions), 2)

    @property
    def max_total(self) -> float:
        return sum(q.max_points for q in self.questions)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubmissionResult:
        data = dict(data)
        data["questions"] = [QuestionResult(**q) for q in data["questions"]]
        return cls(**data)


@dataclass
class GradingContext:
    """Everything about one lab that every submission is graded against."""

    name: str
    spec: LabSpec
    release: nbformat.NotebookNode
    reference: dict[str, Any]  # case id -> the reference solution's return value
    limits: Limits
    lab_sha256: str


def _runnable_cells(nb: nbformat.NotebookNode) -> list[tuple[int, dict]]:
    """Code cells that run when grading: all but the test cells (those only give feedback)."""
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code" and "tests" not in course_meta(c)]


def prepare_lab(solution_path: Path, limits: Limits) -> GradingContext:
    """Parse the solution, build the release, and run the reference on every case once."""
    raw = solution_path.read_bytes()
    solution = nbformat.reads(raw.decode("utf-8"), as_version=4)
    spec = parse_lab(solution, solution_path.name)
    release = make_student_version(solution, solution_path.name)
    run = run_cells([(i, c.source) for i, c in _runnable_cells(solution)], spec.cases, limits)
    if not run.finished:
        raise LabFormatError(f"{solution_path.name}: the reference solution did not run: {run.failure}")
    broken = [c for c in run.cells if c["status"] != "ok"]
    if broken:
        raise LabFormatError(f"{solution_path.name}: reference cell {broken[0]['index']} failed: {broken[0]['detail']}")
    reference = {}
    for case in spec.cases:
        got = run.cases.get(case.id, {})
        if got.get("status") != "ok":
            raise LabFormatError(f"{solution_path.name}: the reference failed on {case.id}: {got.get('detail')}")
        if case.public:
            ok, reason = compare(case.expected, got["value"], case.rtol, case.atol)
            if not ok:
                raise LabFormatError(
                    f"{solution_path.name}: public case {case.id} disagrees with the reference: {reason}")
        reference[case.id] = got["value"]
    return GradingContext(solution_path.stem, spec, release, reference, limits, hashlib.sha256(raw).hexdigest())


def student_name(path: Path, lab: str) -> str:
    """``alice.ipynb`` -> ``alice``; ``alice/00_x_lab.ipynb`` -> ``alice`` (folder per student)."""
    stem = path.stem if path.stem != lab else path.parent.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "submission"


def _read_submission(path: Path) -> tuple[nbformat.NotebookNode | None, str]:
    try:
        size = path.stat().st_size
        if size > MAX_SUBMISSION_BYTES:
            return None, f"the file is {size:,} bytes; submissions over {MAX_SUBMISSION_BYTES:,} bytes are refused"
        text = path.read_bytes().decode("utf-8")
        nb = nbformat.reads(text, as_version=4)
        if not isinstance(nb.get("cells"), list):
            return None, "the file is JSON but has no list of cells"
        return nb, ""
    except Exception as err:  # not JSON, not a notebook, undecodable: all mean "not gradable"
        return None, f"the file is not a readable Jupyter notebook ({type(err).__name__}: {str(err)[:200]})"


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def rebuild(
    ctx: GradingContext, submission: nbformat.NotebookNode,
) -> tuple[list[tuple[int, str]], list[str], set[str]]:
    """(cells to run, notes for the feedback, questions with no answer cell)."""
    notes, missing = [], set()
    by_question: dict[str, list[tuple[int, dict]]] = {}
    by_id: dict[str, tuple[int, dict]] = {}
    for index, cell in enumerate(submission.cells):
        if not isinstance(cell, dict):
            continue
        qid = course_meta(cell).get("question")
        if isinstance(qid, str):
            by_question.setdefault(qid, []).append((index, cell))
        if isinstance(cell.get("id"), str):
            by_id[cell["id"]] = (index, cell)
    release_ids = {c.get("id") for c in ctx.release.cells}
    answer_ids = {q.cell_id for q in ctx.spec.questions.values()}
    positions = []
    sources = []
    for index, cell in _runnable_cells(ctx.release):
        qid = course_meta(cell).get("question")
        if qid is None:
            sources.append((index, cell.source))
            continue
        found = by_question.get(qid, [])
        if len(found) > 1:
            notes.append(f"{qid}: {len(found)} cells carry this question's id; graded the last one")
        chosen = found[-1] if found else None
        if chosen is None and cell.get("id") in by_id:
            chosen = by_id[cell["id"]]
            notes.append(f"{qid}: the answer cell's metadata was edited; found it by its cell id")
        if chosen is None:
            missing.add(qid)
            notes.append(f"{qid}: no answer cell found (deleted, or its metadata and id were changed)")
            continue
        if chosen[1].get("cell_type") != "code":
            notes.append(f"{qid}: the answer cell was turned into a {chosen[1].get('cell_type')} cell; "
                         "graded its text as code")
        positions.append(chosen[0])
        sources.append((index, _source(chosen[1])))
    if positions != sorted(positions):
        notes.append("answer cells were re-ordered; they were graded in the release order")
    extra = [i for i, c in enumerate(submission.cells) if isinstance(c, dict) and c.get("cell_type") == "code"
             and c.get("id") not in release_ids and c.get("id") not in answer_ids
             and not isinstance(course_meta(c).get("question"), str) and _source(c).strip()]
    if extra:
        notes.append(f"{len(extra)} code cell(s) you added were not run: only answer cells are graded, "
                     "so put helper code inside them")
    return sources, notes, missing


def _score(ctx: GradingContext, run: NotebookRun, missing: set[str]) -> list[QuestionResult]:
    results = []
    answer_cells = {course_meta(c).get("question"): i for i, c in enumerate(ctx.release.cells)}
    cell_status = {c["index"]: c for c in run.cells}
    for qid, question in ctx.spec.questions.items():
        cases = [c for c in ctx.spec.cases if c.question == qid]
        base = dict(question=qid, points=0.0, max_points=question.points, total_cases=len(cases))
        if qid in missing:
            results.append(QuestionResult(**base, status="missing", reason="no answer cell in the submission"))
            continue
        if not run.finished:
            results.append(QuestionResult(**base, status=run.failure_kind, reason=run.failure))
            continue
        cell = cell_status.get(answer_cells.get(qid), {})
        outcomes = [run.cases.get(c.id, {}) for c in cases]
        if all(str(o.get("detail", "")).startswith("NotImplementedError") for o in outcomes):
            results.append(QuestionResult(**base, status="missing",
                                          reason="not answered (the function still raises NotImplementedError)"))
            continue
        passed, problems = 0, []
        for case in cases:
            got = run.cases.get(case.id, {"status": "error", "detail": "no result"})
            label = f"{'public' if case.public else 'hidden'} case {case.id.rsplit('/', 1)[-1]}"
            if got.get("status") == "ok":
                ok, reason = compare(ctx.reference[case.id], got.get("value"), case.rtol, case.atol)
                if ok:
                    passed += 1
                else:
                    problems.append(("failed", f"{label}: {reason if case.public else 'wrong value'}"))
            else:
                status = got.get("status") if got.get("status") in STATUSES else "error"
                detail = str(got.get("detail", ""))
                # Hidden inputs stay hidden: for hidden cases show the exception type only.
                shown = detail if case.public else detail.split(":")[0]
                problems.append((status, f"{label}: {shown}"))
        if cell.get("status") not in (None, "ok"):
            first_line = (cell.get("detail") or "").splitlines()[:1]
            problems.insert(0, (cell["status"] if cell["status"] in STATUSES else "error",
                                f"the answer cell: {''.join(first_line)}"))
        points = round(question.points * passed / len(cases), 2)
        if passed == len(cases):
            status, reason = "passed", f"all {len(cases)} test cases passed"
        else:
            kinds = {k for k, _ in problems}
            status = next((k for k in ("timeout", "memory", "error", "missing") if k in kinds), "failed")
            if status == "missing":
                status = "error"
            reason = f"{passed}/{len(cases)} test cases passed; " + "; ".join(m for _, m in problems[:3])
        results.append(QuestionResult(**base | {"points": points}, status=status, reason=reason, passed_cases=passed))
    return results


def grade_one(path: Path, ctx: GradingContext) -> SubmissionResult:
    """Grade one submission file; never raises for anything the file contains."""
    name = student_name(path, ctx.name)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        digest = ""
        nb, problem = None, f"the file could not be read ({err})"
    else:
        nb, problem = _read_submission(path)
    if nb is None:
        questions = [QuestionResult(q.id, 0.0, q.points, "missing", problem,
                                    total_cases=sum(c.question == q.id for c in ctx.spec.cases))
                     for q in ctx.spec.questions.values()]
        return SubmissionResult(name, str(path), digest, questions, [problem])
    try:
        sources, notes, missing = rebuild(ctx, nb)
    except Exception as err:  # a structurally odd notebook: grade nothing, say why
        sources, notes, missing = [], [f"the notebook's structure could not be read ({type(err).__name__})"], set(
            ctx.spec.questions)
    run = run_cells(sources, ctx.spec.cases, ctx.limits)
    if run.output_truncated:
        notes.append("the notebook printed more than the output limit; the rest was discarded (no effect on score)")
    return SubmissionResult(name, str(path), digest, _score(ctx, run, missing), notes, run.limits_in_force,
                            run.wall_s, run.exec_s)


def grade_submissions(paths: list[Path], ctx: GradingContext, out_dir: Path, jobs: int = 1,
                      force: bool = False) -> list[SubmissionResult]:
    """Grade many submissions in parallel, writing every report file into ``out_dir``.

    A submission whose results file already records the same submission and lab hashes is
    not graded again unless ``force``.
    """
    from tqdm.auto import tqdm

    from course_utils.grading import report

    out_dir.mkdir(parents=True, exist_ok=True)
    names = [student_name(p, ctx.name) for p in paths]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"two submissions map to the same student name(s) {sorted(duplicates)}; "
                         "rename the files or use one folder per student")
    results: dict[str, SubmissionResult] = {}
    todo = []
    for path, name in zip(paths, names, strict=True):
        previous = None if force else report.load_previous(out_dir, name, ctx.lab_sha256)
        if previous is not None and previous.sha256 == hashlib.sha256(path.read_bytes()).hexdigest():
            results[name] = previous
        else:
            todo.append(path)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(grade_one, p, ctx): p for p in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"grading {ctx.name}", unit="nb"):
            result = future.result()
            report.write_submission(out_dir, result, ctx)
            results[result.student] = result
    ordered = [results[n] for n in names]
    report.write_grades_csv(out_dir, ordered, ctx.spec)
    return ordered
