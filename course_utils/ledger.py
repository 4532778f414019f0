"""The claims ledger: each figure of the source article beside what the course measured.

``data/claims.csv`` holds one row per quantitative or factual claim of the article: where it is
(the article's section), the claim in the course's own words, a status and where the course
shows it. The evidence is an executed notebook cell carrying the tag ``claim:<id>`` in its
metadata, and ``measured``, a regular expression whose first group picks the measured figure out
of that cell's printed output. So the ledger never states a measurement by hand: the table that
:func:`ledger_markdown` writes (``docs/claims.md``, ``llm-course claims``) reads the figure from
the committed notebook, and ``tests/test_ledger.py`` fails when a tag is missing, its cell failed,
or its output no longer shows the figure.

Statuses:

* ``reproduced``: the course measures or computes it and finds it holds;
* ``corrected``: the course finds it wrong, and shows by how much;
* ``qualified``: it holds only under conditions the article does not state, or the course cannot
  decide it at its scale (the measured line says which);
* ``not testable here``: no cell can check it offline on a CPU; the note says why and what would.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CLAIMS_CSV", "STATUSES", "Claim", "cell_output", "find_tagged_cell", "ledger_markdown", "load_claims",
           "measured_value"]

CLAIMS_CSV = Path(__file__).parent / "data" / "claims.csv"
STATUSES = ("reproduced", "corrected", "qualified", "not testable here")
COLUMNS = ("id", "chapter", "section", "article", "status", "notebook", "measured", "note")
TAG_PREFIX = "claim:"


@dataclass(frozen=True)
class Claim:
    id: str  # short, lowercase, hyphenated; the cell tag is "claim:<id>"
    chapter: str  # "00" to "10": the chapter that shows it
    section: str  # the article's section heading
    article: str  # the claim, in the course's words, with the article's figure
    status: str  # one of STATUSES
    notebook: str  # file name under notebooks/ ("" when not testable here)
    measured: str  # a regular expression; its first group is the measured figure in the tagged cell's output
    note: str  # what the measurement means for the claim; for "not testable here", why not

    @property
    def tag(self) -> str:
        return TAG_PREFIX + self.id


def load_claims(path: str | Path = CLAIMS_CSV) -> list[Claim]:
    """Every row of the ledger, checked: known columns, statuses and chapters, unique ids, evidence
    named for every testable claim and a reason for every untestable one."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: columns must be {', '.join(COLUMNS)}; got {reader.fieldnames}")
        claims = [Claim(**{k: (v or "").strip() for k, v in row.items()}) for row in reader]
    seen: set[str] = set()
    for line, c in enumerate(claims, start=2):
        where = f"{path}, line {line} ({c.id or 'no id'})"
        if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", c.id):
            raise ValueError(f"{where}: an id is lowercase words joined by hyphens")
        if c.id in seen:
            raise ValueError(f"{where}: the id is used twice")
        seen.add(c.id)
        if c.status not in STATUSES:
            raise ValueError(f"{where}: status must be one of {', '.join(STATUSES)}")
        if not re.fullmatch(r"(0\d|10)", c.chapter) or not c.section or not c.article:
            raise ValueError(f"{where}: needs a chapter 00-10, the article's section and the claim")
        testable = c.status != "not testable here"
        if testable and (not c.notebook.endswith(".ipynb") or not c.measured):
            raise ValueError(f"{where}: a testable claim names its notebook and the pattern of its measured figure")
        if testable and re.compile(c.measured).groups < 1:
            raise ValueError(f"{where}: the measured pattern needs a group around the figure")
        if not testable and (c.notebook or c.measured or not c.note):
            raise ValueError(f"{where}: an untestable claim has no notebook or pattern, and a note saying why")
    return claims


def find_tagged_cell(notebook: dict, tag: str) -> dict | None:
    """The one cell of a notebook (its JSON) carrying ``tag``; an error if several do."""
    cells = [c for c in notebook["cells"] if tag in c.get("metadata", {}).get("tags", [])]
    if len(cells) > 1:
        raise ValueError(f"{len(cells)} cells carry the tag {tag!r}; a claim is shown by one")
    return cells[0] if cells else None


def cell_output(cell: dict) -> str:
    """The text a code cell printed (streams and plain-text results); raises if it ran into an error
    or never ran."""
    if cell.get("cell_type") != "code" or cell.get("execution_count") is None:
        raise ValueError("the evidence of a claim is an executed code cell")
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            raise ValueError(f"the cell failed: {out.get('ename')}: {out.get('evalue')}")
        if out.get("output_type") == "stream":
            parts.append("".join(out.get("text", "")))
        elif "text/plain" in out.get("data", {}):
            parts.append("".join(out["data"]["text/plain"]))
    return "\n".join(parts)


def measured_value(claim: Claim, notebooks_dir: str | Path) -> str:
    """The figure the course measured for ``claim``, read from its tagged cell in the executed notebook."""
    path = Path(notebooks_dir) / claim.notebook
    cell = find_tagged_cell(json.loads(path.read_text(encoding="utf-8")), claim.tag)
    if cell is None:
        raise ValueError(f"{claim.notebook} has no cell tagged {claim.tag!r}")
    match = re.search(claim.measured, cell_output(cell))
    if match is None:
        raise ValueError(f"{claim.notebook}, cell tagged {claim.tag!r}: its output no longer shows "
                         f"{claim.measured!r}")
    return " ".join(match.group(1).split())


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def ledger_markdown(claims: list[Claim], notebooks_dir: str | Path) -> str:
    """The ledger as a Markdown page: one table per chapter, the article beside the measured figure."""
    lines = ["# The article's claims, checked", "",
             "Generated by `llm-course claims --write docs/claims.md` from `course_utils/data/claims.csv` and the "
             "committed notebooks: each measured figure is read from the output of the notebook cell tagged "
             "`claim:<id>`. Do not edit by hand.", ""]
    counts = {s: sum(c.status == s for c in claims) for s in STATUSES}
    lines += [f"{len(claims)} claims: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".", ""]
    for chapter in sorted({c.chapter for c in claims}):
        lines += [f"## Chapter {chapter}", "", "| claim (article section) | status | course | what it means |",
                  "|---|---|---|---|"]
        for c in (c for c in claims if c.chapter == chapter):
            shown = (f"{_escape(measured_value(c, notebooks_dir))} (`{c.notebook}`, `{c.tag}`)"
                     if c.notebook else "-")
            lines.append(f"| {_escape(c.article)} ({_escape(c.section)}) | {c.status} | {shown} | {_escape(c.note)} |")
        lines.append("")
    return "\n".join(lines)
