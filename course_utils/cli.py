"""The ``llm-course`` command.

    llm-course fetch [ASSET ...] [--force]   put the offline assets in place and verify them
    llm-course doctor                        versions, device, memory and asset status
    llm-course run [NOTEBOOK ...] [--full]   execute notebooks with papermill into build/
    llm-course lab                           start JupyterLab on the notebooks
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from course_utils.tables import format_table

__all__ = ["main"]


def _repo_root() -> Path:
    """The course checkout (where notebooks/ lives): the current folder or one above it."""
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "course_utils").is_dir():
            return folder
    return here


def _cmd_fetch(args: argparse.Namespace) -> int:
    from course_utils import assets
    from course_utils.models import convert_gguf

    names = args.assets or sorted(assets.ASSETS)
    for name in names:
        assets.get_asset(name)  # unknown names fail before any download
    for name in names:
        start = time.perf_counter()
        path = assets.fetch(name, force=args.force)
        note = ""
        if assets.ASSETS[name].kind == "gguf-model":
            folder = convert_gguf(name, force=args.force)
            note = f" (converted: {folder})"
        print(f"{name}: ok in {time.perf_counter() - start:.1f}s -> {path}{note}")
    return 0


def _cmd_doctor(_: argparse.Namespace) -> int:
    from course_utils.environment import asset_report, machine_info

    info = machine_info()
    versions = info.pop("versions")
    for key, value in info.items():
        print(f"{key:>14}: {value}")
    print()
    print(format_table([{"package": k, "version": v} for k, v in versions.items()]))
    print()
    report = asset_report()
    print(format_table(report))
    return 0 if all(r["status"] == "ok" for r in report) else 1


def _cmd_run(args: argparse.Namespace) -> int:
    from course_utils.notebooks import run_notebooks

    root = _repo_root()
    paths = [Path(p) for p in args.notebooks] or sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"error: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    if not paths:
        print(f"error: no notebooks found under {root / 'notebooks'}", file=sys.stderr)
        return 2
    parameters = {"QUICK": False} if args.full else {}
    start = time.perf_counter()
    results = run_notebooks(paths, Path(args.out), parameters, cell_timeout=args.cell_timeout,
                            in_place=args.in_place)
    print()
    print(format_table([{"notebook": r.notebook, "status": r.status, "seconds": f"{r.seconds:.1f}"} for r in results]))
    for r in results:
        if r.error:
            print(f"\n{r.error}", file=sys.stderr)
    failed = sum(r.status != "ok" for r in results)
    where = "place" if args.in_place else args.out
    mode = "full" if args.full else "QUICK"
    print(f"\n{len(results) - failed} passed, {failed} failed in {time.perf_counter() - start:.0f}s"
          f" ({mode} mode); executed copies in {where}")
    return 1 if failed else 0


def _cmd_lab(args: argparse.Namespace) -> int:
    root = _repo_root()
    cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={root}", *args.jupyter_args]
    return subprocess.call(cmd, env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-course", description="The LLM course's command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fetch", help="fetch and verify the offline assets (idempotent)")
    p.add_argument("assets", nargs="*", help="asset names (default: all)")
    p.add_argument("--force", action="store_true", help="fetch again even if a verified copy exists")
    p.set_defaults(func=_cmd_fetch)

    p = sub.add_parser("doctor", help="print versions, device, memory and asset status")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("run", help="execute notebooks with papermill (QUICK mode by default)")
    p.add_argument("notebooks", nargs="*", help="notebooks to run (default: every chapter in notebooks/)")
    p.add_argument("--full", action="store_true", help="run with QUICK=False (longer, fuller experiments)")
    p.add_argument("--out", default="build", help="folder for the executed copies (default: build/)")
    p.add_argument("--in-place", action="store_true", help="overwrite each notebook with its executed version")
    p.add_argument("--cell-timeout", type=int, default=600, help="seconds one cell may run (default 600)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("lab", help="start JupyterLab in the course folder (offline)")
    p.add_argument("jupyter_args", nargs=argparse.REMAINDER, help="passed on to jupyter lab")
    p.set_defaults(func=_cmd_lab)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError) as err:  # our errors carry the fix in their message
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
