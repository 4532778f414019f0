"""What grading produces, as plain data: one result per question, one per submission.

Kept apart from :mod:`~course_utils.grading.grade` (which makes them) and
:mod:`~course_utils.grading.report` (which writes them), so neither imports the other's internals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["STATUSES", "QuestionResult", "SubmissionResult"]

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
    public_passed: int = 0  # of the passed cases, how many were public
    public_cases: int = 0
    problems: list[str] = field(default_factory=list)  # one line per failing case, "public case 1: ..."

    def split_points(self) -> tuple[float, float]:
        """(points from public cases, points from hidden cases): each case is worth the same."""
        if not self.total_cases:
            return self.points, 0.0
        public = round(self.max_points * self.public_passed / self.total_cases, 2)
        return public, round(self.points - public, 2)


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
    reused: bool = False  # taken from an earlier run with the same submission, lab and limits

    @property
    def total(self) -> float:
        return round(sum(q.points for q in self.questions), 2)

    @property
    def max_total(self) -> float:
        return sum(q.max_points for q in self.questions)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the instructor's path and the reuse flag (what results/*.json keeps)."""
        data = asdict(self)
        del data["path"], data["reused"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path) -> SubmissionResult:
        data = {k: v for k, v in data.items() if k not in ("path", "reused")}
        data["questions"] = [QuestionResult(**q) for q in data["questions"]]
        return cls(**data, path=str(path), reused=True)
