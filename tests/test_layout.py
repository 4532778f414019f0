"""The package is the course's map: plumbing at the top, one folder per chapter, no import cycle, no stray module.

The import graph is read from the source with ``ast`` (nothing is imported), counting imports
inside functions too: a cycle that only a lazy import hides is still two modules that cannot be
understood one before the other.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "course_utils"
# modules more than one chapter (or the tooling) uses: they stay at the top
PLUMBING = {"assets", "chat", "cli", "confinement", "defaults", "environment", "evaluation", "ledger", "models",
            "notebooks", "program_runner", "sandbox", "stats", "tables", "tasks", "tokens"}
# one folder per chapter that has code, and the notebook that teaches it; grading is the labs' tooling
CHAPTERS = {"architecture": "01", "scaling": "02", "icl": "03", "serving": "04", "quantization": "05",
            "finetune": "06", "context": "07", "apps": "08", "safety": "09", "choosing": "10"}
TOOLING = {"grading"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(tree: ast.AST, current: str, is_package: bool) -> set[str]:
    """The course_utils modules that ``tree`` imports, resolved to modules (not names inside them).

    A string that is exactly a module's dotted name counts too: the sandbox starts its workers by
    name (``run_sandboxed("course_utils.grading.harness", ...)``).
    """
    found = set()
    package = current if is_package else current.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return {name for name in found if name in MODULES}


def _graph() -> dict[str, set[str]]:
    return {name: _imports(ast.parse(path.read_text()), name, path.name == "__init__.py") - {name}
            for name, path in MODULES.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def _notebook_imports(path: Path) -> set[str]:
    cells = json.loads(path.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
    return _imports(ast.parse(code), "__notebook__", False)


def test_the_cycle_finder_finds_cycles_and_resolves_relative_imports():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    tree = ast.parse("from .results import SubmissionResult\nfrom . import report\nimport course_utils.tables")
    assert _imports(tree, "course_utils.grading.grade", False) == {
        "course_utils.grading.results", "course_utils.grading.report", "course_utils.tables"}


def test_the_package_has_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_top_level_is_plumbing_plus_one_folder_per_chapter():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert modules == PLUMBING, f"top-level modules that are not plumbing: {sorted(modules - PLUMBING)}; " \
                                f"plumbing that is gone: {sorted(PLUMBING - modules)}"
    assert folders == set(CHAPTERS) | TOOLING


@pytest.mark.parametrize("folder", sorted(CHAPTERS))
def test_each_chapter_notebook_imports_its_folder(folder):
    notebook = next((ROOT / "notebooks").glob(f"{CHAPTERS[folder]}_*.ipynb"))
    used = {m for m in _notebook_imports(notebook) if m.startswith(f"course_utils.{folder}")}
    assert used, f"{notebook.name} imports nothing from course_utils/{folder}/"


def test_every_module_is_tied_to_a_notebook_a_lab_a_benchmark_or_the_command_line():
    graph = _graph()
    roots = {"course_utils.cli"}
    for path in [*(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "solutions").glob("*.ipynb")]:
        roots |= _notebook_imports(path)
    for path in (ROOT / "benchmarks").glob("*.py"):
        roots |= _imports(ast.parse(path.read_text()), "__benchmark__", False)
    reached, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in MODULES and name not in reached:
            reached.add(name)
            todo += graph[name]
            todo.append(name.rpartition(".")[0])  # importing a.b.c runs a.b's __init__ first
    stray = sorted(set(MODULES) - reached)
    assert not stray, f"modules nothing uses: {stray}"


def _string_constants(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_the_default_model_name_is_typed_once():
    from course_utils.defaults import DEFAULT_MODEL

    # assets.py registers the file under that name; everything else reads DEFAULT_MODEL
    typed = [p.relative_to(ROOT).as_posix() for p in [*MODULES.values(), *(ROOT / "benchmarks").glob("*.py")]
             if DEFAULT_MODEL in _string_constants(p)]
    assert typed == ["course_utils/assets.py", "course_utils/defaults.py"]


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").glob("*_bench.py")), ids=lambda p: p.name)
def test_every_benchmark_records_its_result_through_record_benchmark(path):
    tree = ast.parse(path.read_text())
    called = {node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
              for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert "record_benchmark" in called, f"{path.name} writes its JSON some other way"
    keys = {k.value for node in ast.walk(tree) if isinstance(node, ast.Dict)
            for k in node.keys if isinstance(k, ast.Constant)}
    assert not keys & {"machine", "date"}, f"{path.name} builds its own machine or date record"
