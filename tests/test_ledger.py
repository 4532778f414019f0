"""The claims ledger: every row valid, every measured figure still shown by its executed cell, the
generated page current, and the ledger's checks able to fail."""

import json
from pathlib import Path

import pytest

from course_utils.ledger import (
    COLUMNS,
    STATUSES,
    cell_output,
    find_tagged_cell,
    ledger_markdown,
    load_claims,
    measured_value,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CLAIMS = load_claims()


def test_the_ledger_covers_the_article_across_the_chapters():
    assert len(CLAIMS) >= 60
    chapters = {c.chapter for c in CLAIMS}
    assert {"08", "09", "10"} <= chapters and len(chapters) >= 10
    statuses = {c.status for c in CLAIMS}
    assert {"reproduced", "corrected", "qualified", "not testable here"} == statuses == set(STATUSES)


@pytest.mark.parametrize("claim", [c for c in CLAIMS if c.notebook], ids=lambda c: c.id)
def test_each_claim_is_shown_by_its_executed_cell(claim):
    value = measured_value(claim, NOTEBOOKS)  # raises if the tag, the run or the figure is missing
    assert value.strip()


def test_no_notebook_carries_a_claim_tag_the_ledger_does_not_know():
    known = {c.tag for c in CLAIMS}
    for path in NOTEBOOKS.glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            for tag in cell.get("metadata", {}).get("tags", []):
                assert not tag.startswith("claim:") or tag in known, f"{path.name}: {tag} is not in claims.csv"


def test_the_generated_page_is_current():
    page = (ROOT / "docs" / "claims.md").read_text(encoding="utf-8")
    assert page == ledger_markdown(CLAIMS, NOTEBOOKS) + "\n", "run: llm-course claims --write docs/claims.md"


def _write(tmp_path, rows):
    path = tmp_path / "claims.csv"
    path.write_text(",".join(COLUMNS) + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


GOOD = ["x-claim", "04", "Some section", "A claim", "reproduced", "nb.ipynb", "(\\d+) tok/s", "a note"]


@pytest.mark.parametrize(("change", "message"), [
    ({0: "Bad Id"}, "lowercase words"),
    ({4: "probably"}, "status must be one of"),
    ({1: "11"}, "chapter 00-10"),
    ({5: ""}, "names its notebook"),
    ({6: "\\d+ tok/s"}, "needs a group"),
    ({4: "not testable here"}, "untestable claim has no notebook"),
])
def test_a_malformed_row_is_refused_with_its_line(tmp_path, change, message):
    row = [change.get(i, v) for i, v in enumerate(GOOD)]
    with pytest.raises(ValueError, match=message) as err:
        load_claims(_write(tmp_path, [row]))
    assert "line 2" in str(err.value)
    with pytest.raises(ValueError, match="used twice"):
        load_claims(_write(tmp_path, [GOOD, GOOD]))


def _notebook(outputs, tags=("claim:x-claim",), count=1):
    return {"cells": [{"cell_type": "code", "execution_count": count, "metadata": {"tags": list(tags)},
                       "outputs": outputs, "source": []}]}


def test_a_claim_whose_cell_failed_changed_or_lost_its_tag_fails(tmp_path):
    claim = load_claims(_write(tmp_path, [GOOD]))[0]
    stream = {"output_type": "stream", "name": "stdout", "text": ["engine 173 tok/s\n"]}
    (tmp_path / "nb.ipynb").write_text(json.dumps(_notebook([stream])))
    assert measured_value(claim, tmp_path) == "173"
    (tmp_path / "nb.ipynb").write_text(json.dumps(_notebook([{"output_type": "stream", "text": ["no figure\n"]}])))
    with pytest.raises(ValueError, match="no longer shows"):
        measured_value(claim, tmp_path)
    error = {"output_type": "error", "ename": "AssertionError", "evalue": "boom", "traceback": []}
    (tmp_path / "nb.ipynb").write_text(json.dumps(_notebook([stream, error])))
    with pytest.raises(ValueError, match="the cell failed"):
        measured_value(claim, tmp_path)
    (tmp_path / "nb.ipynb").write_text(json.dumps(_notebook([stream], tags=())))
    with pytest.raises(ValueError, match="no cell tagged"):
        measured_value(claim, tmp_path)
    with pytest.raises(ValueError, match="executed code cell"):
        cell_output(_notebook([stream], count=None)["cells"][0])
    twice = {"cells": _notebook([stream])["cells"] * 2}
    with pytest.raises(ValueError, match="2 cells carry"):
        find_tagged_cell(twice, "claim:x-claim")
