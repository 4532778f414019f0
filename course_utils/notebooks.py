"""Executing and linting the course notebooks (used by ``llm-course run`` and the tests).

The notebook contract (docs/contributing.md): the first code cell is tagged ``parameters`` and sets at
least QUICK, MODEL, SEED and DEVICE; the notebook runs top to bottom under papermill; it is
committed executed, in order, with no paths of the author's machine and no huge outputs.

Cells whose first line is ``# NBVAL_CHECK_OUTPUT`` (nbval's marker, kept so that tool reads it
too) must print exactly what the committed notebook shows:
:func:`changed_outputs` compares them after one execution, so the tests run each notebook once.
"""

from __future__ import annotations

import ast
import html
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "REQUIRED_PARAMETERS",
    "NotebookExecutionError",
    "RunResult",
    "CHECK_OUTPUT_MARK",
    "changed_outputs",
    "execute_notebook",
    "lint_notebook",
    "run_notebooks",
    "settle_progress_widgets",
    "KERNELSPEC",
]

REQUIRED_PARAMETERS = ("QUICK", "MODEL", "SEED", "DEVICE")
# The one kernel every course notebook names: ipykernel's own, which make setup installs in .venv
# under this display name. A notebook naming anything else is rewritten by JupyterLab on opening.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
MAX_OUTPUT_BYTES = 500_000  # one cell output (a plot PNG is ~50-150 KB)
MAX_NOTEBOOK_BYTES = 3_000_000  # the whole committed file
# Paths that only exist on the machine of whoever executed the notebook.
_MACHINE_PATH = re.compile(
    r"(?<![\w.])(/home/[\w.-]+/|/Users/[\w.-]+/|/root/|/work/|[A-Za-z]:\\\\Users\\\\|/site-packages/|/\.venv/)"
)


class NotebookExecutionError(RuntimeError):
    """A notebook failed (cell error, early exit, or timeout); the message names the cell."""


@dataclass
class RunResult:
    notebook: str
    status: str  # "ok" or "failed"
    seconds: float
    output: str
    error: str = ""


def _code_cells(nb: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in nb.get("cells", []) if c.get("cell_type") == "code" and "".join(c.get("source", "")).strip()]


def _joined(text: str | list[str]) -> str:
    """nbformat stores multi-line text as a string or as a list of lines."""
    return text if isinstance(text, str) else "".join(text)


def _source(cell: dict[str, Any]) -> str:
    return _joined(cell.get("source", ""))


def _assigned_names(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            if isinstance(target, ast.Name):
                names.add(target.id)
    return names


def lint_notebook(path: str | Path) -> list[str]:
    """Problems with a notebook against the contract, each starting with the notebook's name.

    An empty list means the notebook is fine.
    """
    path = Path(path)
    name = path.name
    raw = path.read_bytes()
    try:
        nb = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        return [f"{name}: not valid notebook JSON ({err})"]
    if nb.get("nbformat") != 4:
        return [f"{name}: nbformat {nb.get('nbformat')!r}; the course uses nbformat 4"]
    problems = []
    code = _code_cells(nb)
    if not code:
        return [f"{name}: has no code cells"]
    first = code[0]
    if "parameters" not in first.get("metadata", {}).get("tags", []):
        problems.append(f"{name}: the first code cell is not tagged 'parameters' (papermill needs it)")
    missing = [p for p in REQUIRED_PARAMETERS if p not in _assigned_names(_source(first))]
    if missing:
        problems.append(f"{name}: the parameters cell does not set {', '.join(missing)}")
    counts = [c.get("execution_count") for c in code]
    if any(c is None for c in counts):
        problems.append(f"{name}: {counts.count(None)} code cell(s) were never executed; commit it executed")
    elif counts != sorted(counts) or len(set(counts)) != len(counts) or counts[0] != 1:
        problems.append(f"{name}: cells were not executed top to bottom in one run (execution counts {counts})")
    if not any(c.get("outputs") for c in code):
        problems.append(f"{name}: no cell has outputs; commit the notebook executed")
    if nb.get("metadata", {}).get("kernelspec") != KERNELSPEC:
        problems.append(f"{name}: kernelspec {nb.get('metadata', {}).get('kernelspec')!r} is not the course's "
                        f"{KERNELSPEC!r} (JupyterLab would change it on opening)")
    for index, cell in enumerate(nb.get("cells", [])):
        for output in cell.get("outputs", []):
            if _WIDGET_VIEW in output.get("data", {}):
                problems.append(f"{name}: cell {index} keeps a widget output, which reads as a frozen "
                                f"{_joined(output['data'].get('text/plain', ''))[:40]!r} outside a live kernel")
            size = len(json.dumps(output))
            if size > MAX_OUTPUT_BYTES:
                problems.append(f"{name}: cell {index} has an output of {size:,} bytes (limit {MAX_OUTPUT_BYTES:,})")
            if output.get("output_type") == "error":
                problems.append(f"{name}: cell {index} was committed with an error output ({output.get('ename')})")
    if len(raw) > MAX_NOTEBOOK_BYTES:
        problems.append(f"{name}: the file is {len(raw):,} bytes (limit {MAX_NOTEBOOK_BYTES:,})")
    for match in sorted(set(_MACHINE_PATH.findall(raw.decode("utf-8", "replace")))):
        problems.append(f"{name}: contains a path of the author's machine ({match!r})")
    return problems


CHECK_OUTPUT_MARK = "# NBVAL_CHECK_OUTPUT"


def _text_output(cell: dict[str, Any]) -> str:
    """What a code cell printed or returned, as text (streams and text/plain results, in order)."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(_joined(out.get("text", "")))
        elif out.get("output_type") in ("execute_result", "display_data"):
            parts.append(_joined(out.get("data", {}).get("text/plain", "")))
        elif out.get("output_type") == "error":
            parts.append(f"{out.get('ename')}: {out.get('evalue')}")
    return "".join(parts)


def _line(text: str, index: int) -> str:
    lines = text.splitlines()
    return lines[index] if index < len(lines) else "<nothing>"


def changed_outputs(committed: str | Path, executed: str | Path) -> list[str]:
    """One line per ``# NBVAL_CHECK_OUTPUT`` cell of ``committed`` whose text output differs in ``executed``.

    Cells are paired by their source, so a parameters cell that papermill injected does not shift
    them; a marked cell missing from ``executed`` is reported too.
    """
    old, new = (json.loads(Path(p).read_text()) for p in (committed, executed))
    ran = {_source(cell): cell for cell in _code_cells(new)}
    problems = []
    for index, cell in enumerate(_code_cells(old)):
        source = _source(cell)
        if not source.lstrip().startswith(CHECK_OUTPUT_MARK):
            continue
        if source not in ran:
            problems.append(f"code cell {index}: not found in the executed notebook")
            continue
        expected, got = _text_output(cell), _text_output(ran[source])
        if expected != got:
            old_lines, new_lines = expected.splitlines(), got.splitlines()
            first = next((i for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=False)) if a != b),
                         min(len(old_lines), len(new_lines)))
            problems.append(f"code cell {index}: output line {first + 1} was {_line(expected, first)!r}, "
                            f"now {_line(got, first)!r}")
    return problems


def _check_completed(nb: Any, name: str) -> None:
    """papermill reports success after sys.exit(0); refuse that, and any cell left unexecuted."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" and output.get("ename") == "SystemExit":
                raise NotebookExecutionError(
                    f"{name}: cell {index} called sys.exit({output.get('evalue', '')}); the rest of the "
                    "notebook did not run. Notebooks must run top to bottom without exiting."
                )
        if cell.source.strip() and cell.get("execution_count") is None:
            raise NotebookExecutionError(f"{name}: cell {index} never ran (execution stopped early)")


def execute_notebook(
    path: str | Path,
    output_path: str | Path,
    parameters: dict[str, Any] | None = None,
    cell_timeout: int = 600,
    progress_bar: bool = False,
) -> Path:
    """Run a notebook with papermill into ``output_path``; raise NotebookExecutionError on failure.

    The kernel starts in the notebook's folder. ``parameters`` are injected after the
    ``parameters`` cell (papermill's rule).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    path, output_path = Path(path), Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        nb = papermill.execute_notebook(
            str(path), str(output_path), parameters=parameters or {}, cwd=str(path.parent.resolve()),
            execution_timeout=cell_timeout, progress_bar=progress_bar,
            kernel_name=KERNELSPEC["name"],
        )
    except PapermillExecutionError as err:
        raise NotebookExecutionError(
            f"{path.name}: cell {err.cell_index} failed with {err.ename}: {err.evalue}"
        ) from None
    except Exception as err:  # kernel death, timeout, bad JSON: all are a failed run
        raise NotebookExecutionError(f"{path.name}: {type(err).__name__}: {str(err)[:500]}") from None
    _check_completed(nb, path.name)
    _tidy_executed(output_path, path)
    return output_path


def _progress_line(model_id: str, models: dict[str, Any]) -> str | None:
    """The finished text of a tqdm notebook bar (an HBox of label, progress, stats), or None."""
    box = models.get(model_id, {}).get("state", {})
    parts = [models.get(child.removeprefix("IPY_MODEL_"), {}).get("state", {}) for child in box.get("children", [])]
    if len(parts) != 3 or parts[1].get("max") is None:
        return None
    label, stats = (html.unescape(p.get("value", "")).replace("\u2007", " ") for p in (parts[0], parts[2]))
    done = min(1.0, float(parts[1].get("value") or 0) / (float(parts[1]["max"]) or 1.0))
    return f"{label}|{'█' * round(10 * done):<10}|{stats}\n"


def settle_progress_widgets(nb: dict[str, Any]) -> int:
    """Replace each progress-bar widget output by the line it finished on; return how many were replaced.

    An executed notebook keeps a widget's text fallback from the moment it was created ("0% 0/6"),
    which is what GitHub and a kernel-less JupyterLab show. The widget state saved at the end of the
    run holds the final values: they become a plain stderr line, as tqdm writes in a terminal. A widget
    whose state is missing is dropped rather than shown frozen. The saved state is then removed.
    """
    models = nb.get("metadata", {}).get("widgets", {}).get(_WIDGET_STATE, {}).get("state", {})
    replaced = 0
    for cell in nb.get("cells", []):
        outputs = []
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(_WIDGET_VIEW)
            if view is None:
                outputs.append(output)
                continue
            replaced += 1
            line = _progress_line(view.get("model_id", ""), models)
            if line is not None:
                outputs.append({"name": "stderr", "output_type": "stream", "text": line})
        if "outputs" in cell:
            cell["outputs"] = outputs
    nb.get("metadata", {}).pop("widgets", None)
    return replaced


def _shown_path(path: Path) -> str:
    """``path`` relative to the working folder when it lies inside it, else only its name."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name


def _tidy_executed(output_path: Path, input_path: Path) -> None:
    """Make an executed copy fit to commit: progress bars as their final lines, and the paths papermill
    records relative, so no machine's folders are committed."""
    nb = json.loads(output_path.read_text())
    settle_progress_widgets(nb)
    record = nb.get("metadata", {}).get("papermill", {})
    if record:
        record["input_path"], record["output_path"] = _shown_path(input_path), _shown_path(output_path)
    output_path.write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n")


def run_notebooks(
    paths: list[Path], out_dir: Path, parameters: dict[str, Any] | None = None, cell_timeout: int = 600,
    in_place: bool = False,
) -> list[RunResult]:
    """Execute several notebooks one after another; failures are recorded, not raised.

    With ``in_place`` each notebook is overwritten by its executed version (for committing).
    """
    from tqdm.auto import tqdm

    results = []
    for path in tqdm(paths, desc="notebooks", unit="nb"):
        target = path if in_place else out_dir / path.name
        start = time.perf_counter()
        try:
            execute_notebook(path, target, parameters, cell_timeout=cell_timeout)
            results.append(RunResult(path.name, "ok", time.perf_counter() - start, str(target)))
        except NotebookExecutionError as err:
            results.append(RunResult(path.name, "failed", time.perf_counter() - start, str(target), str(err)))
    return results
