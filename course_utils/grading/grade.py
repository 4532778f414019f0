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

import errno
import hashlib
import json
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nbformat

from course_utils.grading import report
from course_utils.grading.assign import make_student_version
from course_utils.grading.results import STATUSES, QuestionResult, SubmissionResult
from course_utils.grading.run import NotebookRun, run_cells
from course_utils.grading.spec import LabFormatError, LabSpec, course_meta, parse_lab
from course_utils.grading.values import clip, compare
from course_utils.sandbox import Limits

__all__ = ["GradingContext", "collect_submissions", "grade_one",
           "grade_submissions", "prepare_lab", "read_submission_file", "student_name", "unique_names"]

MAX_SUBMISSION_BYTES = 20 << 20


@dataclass
class GradingContext:
    """Everything about one lab that every submission is graded against."""

    name: str
    spec: LabSpec
    release: nbformat.NotebookNode
    reference: dict[str, Any]  # case id -> the reference solution's return value
    limits: Limits
    lab_sha256: str

    @property
    def grading_key(self) -> str:
        """What a stored result must match to be reused: the lab's bytes and every limit."""
        text = json.dumps({"lab": self.lab_sha256, "limits": asdict(self.limits)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


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
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).lstrip(".") or "submission"


def unique_names(paths: list[Path], lab: str) -> list[str]:
    """One name per submission: names that collide (``a b`` and ``a_b``) each get a suffix made
    from their own path, so the result does not depend on the order of the list."""
    names = [student_name(p, lab) for p in paths]
    taken = {n for n in names if names.count(n) > 1}
    return [f"{n}-{hashlib.sha256(str(p).encode()).hexdigest()[:8]}" if n in taken else n
            for p, n in zip(paths, names, strict=True)]


def collect_submissions(items: list[Path]) -> tuple[list[Path], list[str]]:
    """The submissions under the given files and folders, and warnings about what was skipped.

    Folders are walked without following links; every ``.ipynb`` entry that is not a folder is a
    submission (links, FIFOs and devices are refused when read, each with its own row).
    """
    files, warnings = [], []
    for item in items:
        if item.is_symlink() or not item.is_dir():
            if not os.path.lexists(item):
                raise ValueError(f"no such submission file or folder: {item}")
            files.append(item)
            continue
        for folder, dirs, names in os.walk(item, followlinks=False):
            links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
            warnings += [f"skipped {os.path.join(folder, d)}: a link to a folder, not a submission folder"
                         for d in links]
            dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints" and d not in links)
            files += [Path(folder, n) for n in sorted(names) if n.endswith(".ipynb")]
    if not files:
        raise ValueError("no .ipynb submissions found in the given paths")
    return files, warnings


def read_submission_file(path: Path) -> tuple[bytes | None, str]:
    """A submission's bytes, or why it is refused: only a regular file that is not a link, and
    not over MAX_SUBMISSION_BYTES. Opened without following links and without blocking, and
    checked on the open file, so nothing can be swapped in between the check and the read."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as err:
        if err.errno == errno.ELOOP:  # what O_NOFOLLOW answers for a link
            return None, "the submission is a symbolic link, not a file; submit the notebook itself"
        return None, f"the file could not be opened ({err.strerror})"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((k for test, k in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                                           (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"),
                                           (stat.S_ISDIR, "a folder")) if test(info.st_mode)), "not a file")
            return None, f"the submission is {kind}, not a regular file"
        if info.st_size > MAX_SUBMISSION_BYTES:
            return None, (f"the file is {info.st_size:,} bytes; submissions over {MAX_SUBMISSION_BYTES:,} bytes "
                          "are refused")
        chunks, total = [], 0
        while total <= MAX_SUBMISSION_BYTES:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > MAX_SUBMISSION_BYTES:
            return None, f"the file grew past {MAX_SUBMISSION_BYTES:,} bytes while it was read; refused"
        return b"".join(chunks), ""
    except OSError as err:
        return None, f"the file could not be read ({err.strerror})"
    finally:
        os.close(fd)


def _parse_submission(raw: bytes) -> tuple[nbformat.NotebookNode | None, str]:
    try:
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
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
        passed, public_passed, problems = 0, 0, []
        for case in cases:
            got = run.cases.get(case.id, {"status": "error", "detail": "no result"})
            label = f"{'public' if case.public else 'hidden'} case {case.id.rsplit('/', 1)[-1]}"
            if got.get("status") == "ok":
                ok, reason = compare(ctx.reference[case.id], got.get("value"), case.rtol, case.atol)
                if ok:
                    passed += 1
                    public_passed += case.public
                else:  # hidden cases say pass or fail only: their values could carry anything
                    problems.append(("failed", f"{label}: {clip(reason) if case.public else 'wrong value'}"))
            else:
                status = got.get("status") if got.get("status") in STATUSES else "error"
                # Hidden inputs stay hidden: for a hidden case the status is all the feedback says.
                shown = clip(str(got.get("detail", ""))) if case.public else status
                problems.append((status, f"{label}: {shown}"))
        if cell.get("status") not in (None, "ok"):
            first_line = (cell.get("detail") or "").splitlines()[:1]
            problems.insert(0, (cell["status"] if cell["status"] in STATUSES else "error",
                                f"the answer cell: {clip(''.join(first_line))}"))
        points = round(question.points * passed / len(cases), 2)
        if passed == len(cases):
            status, reason = "passed", f"all {len(cases)} test cases passed"
        else:
            kinds = {k for k, _ in problems}
            status = next((k for k in ("timeout", "memory", "error", "missing") if k in kinds), "failed")
            if status == "missing":
                status = "error"
            reason = f"{passed}/{len(cases)} test cases passed; " + "; ".join(m for _, m in problems[:3])
        results.append(QuestionResult(**base | {"points": points}, status=status, reason=reason, passed_cases=passed,
                                      public_passed=public_passed, public_cases=sum(c.public for c in cases),
                                      problems=[m for _, m in problems]))
    return results


def _refused(ctx: GradingContext, name: str, path: Path, digest: str, status: str, why: str) -> SubmissionResult:
    """A row for a submission that was not run: every question scores 0 with the reason."""
    questions = [QuestionResult(q.id, 0.0, q.points, status, why,
                                total_cases=sum(c.question == q.id for c in ctx.spec.cases),
                                public_cases=sum(c.question == q.id and c.public for c in ctx.spec.cases))
                 for q in ctx.spec.questions.values()]
    return SubmissionResult(name, str(path), digest, questions, [why])


def grade_one(path: Path, ctx: GradingContext, name: str | None = None) -> SubmissionResult:
    """Grade one submission file; never raises, whatever the file is or contains."""
    name = name or student_name(path, ctx.name)
    try:
        raw, problem = read_submission_file(path)
        if raw is None:
            return _refused(ctx, name, path, "", "missing", problem)
        digest = hashlib.sha256(raw).hexdigest()
        nb, problem = _parse_submission(raw)
        if nb is None:
            return _refused(ctx, name, path, digest, "missing", problem)
        try:
            sources, notes, missing = rebuild(ctx, nb)
        except Exception as err:  # a structurally odd notebook: grade nothing, say why
            sources, notes, missing = [], [f"the notebook's structure could not be read ({type(err).__name__})"], set(
                ctx.spec.questions)
        run = run_cells(sources, ctx.spec.cases, ctx.limits)
        if run.output_truncated:
            notes.append("the notebook printed more than the output limit; the rest was discarded (no effect on score)")
        return SubmissionResult(name, str(path), digest, _score(ctx, run, missing), notes + run.notes,
                                run.limits_in_force, run.wall_s, run.exec_s)
    except Exception as err:  # a fault of the grader's own, on this submission only
        return _refused(ctx, name, path, "", "error",
                        f"the grader failed on this submission ({type(err).__name__}); ask your instructor")


def _previous(out_dir: Path, path: Path, name: str, ctx: GradingContext) -> SubmissionResult | None:
    """The stored result for this very submission, lab and limits; the file is read only if one exists."""
    previous = report.load_previous(out_dir, name, ctx.grading_key, path)
    if previous is None:
        return None
    raw, _ = read_submission_file(path)
    return previous if raw is not None and previous.sha256 == hashlib.sha256(raw).hexdigest() else None


def grade_submissions(paths: list[Path], ctx: GradingContext, out_dir: Path, jobs: int = 1,
                      force: bool = False) -> list[SubmissionResult]:
    """Grade many submissions in parallel, writing every report file into ``out_dir``.

    Always one result per path, in the order given: a submission whose grading fails in any way
    gets a row with the reason. A submission whose stored result records the same submission,
    lab and limits (:attr:`GradingContext.grading_key`) is not graded again unless ``force``;
    such results have ``reused`` set.
    """
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    names = unique_names(paths, ctx.name)
    results: dict[str, SubmissionResult] = {}
    todo = []
    for path, name in zip(paths, names, strict=True):
        previous = None if force else _previous(out_dir, path, name, ctx)
        if previous is not None:
            results[name] = previous
        else:
            todo.append((path, name))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(grade_one, p, ctx, n): (p, n) for p, n in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"grading {ctx.name}", unit="nb"):
            path, name = futures[future]
            try:
                result = future.result()
            except Exception as err:  # grade_one does not raise; this is the last line of defence
                result = _refused(ctx, name, path, "", "error", f"the grader failed ({type(err).__name__})")
            try:
                report.write_submission(out_dir, result, ctx.name, ctx.grading_key)
            except Exception as err:
                result.notes.append(f"the feedback files could not be written ({type(err).__name__}: {err})")
            results[name] = result
    ordered = [results[n] for n in names]
    report.write_grades_csv(out_dir, ordered, list(ctx.spec.questions))
    return ordered
