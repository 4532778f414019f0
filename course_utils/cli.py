"""The ``llm-course`` command.

    llm-course fetch [ASSET ...] [--force]   put the offline assets in place and verify them
    llm-course doctor                        versions, device, memory and asset status
    llm-course run [NOTEBOOK ...] [--full]   execute notebooks with papermill into build/
    llm-course lab                           start JupyterLab on the notebooks
    llm-course assign [--check]              write labs/ (student versions) from solutions/
    llm-course grade SUBMISSION... --lab NAME --out DIR [--jobs N] [--force]
    llm-course export gradescope --lab NAME [--out ZIP]   Gradescope autograder zip
    llm-course serve [--model M] [--port P]  OpenAI-compatible server on the course engine
    llm-course bench [--base-url URL]        load-test a server
    llm-course model-card [--model M] [--out PATH]   a Hugging Face model card, pre-filled from the course
    llm-course claims [--write PATH]         the article's claims beside the course's measurements

A failure prints one line saying what went wrong and what to do; ``--debug`` (or
``LLM_COURSE_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from course_utils.defaults import DEFAULT_MODEL
from course_utils.serving.config import EngineConfig
from course_utils.tables import format_table

__all__ = ["main"]


def _repo_root() -> Path:
    """The course checkout (where notebooks/ lives): the current folder or one above it."""
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "notebooks").is_dir() and (folder / "course_utils").is_dir():
            return folder
    return here


def _course_root() -> Path:
    """The course checkout, or ValueError when the command runs outside one."""
    root = _repo_root()
    if not (root / "solutions").is_dir():
        raise ValueError(f"{Path.cwd()} is not inside a course folder (one with notebooks/, course_utils/ and "
                         "solutions/); cd into the course checkout first")
    return root


def _solution_path(lab: str) -> Path:
    if lab.endswith(".ipynb"):
        if not Path(lab).is_file():
            raise ValueError(f"no solution notebook at {lab}")
        return Path(lab)
    root = _course_root()
    solution = root / "solutions" / f"{lab}.ipynb"
    if not solution.is_file():
        known = ", ".join(p.stem for p in sorted((root / "solutions").glob("*_lab.ipynb")))
        raise ValueError(f"no lab {lab!r} (looked for {solution}); labs: {known or 'none'}")
    return solution


def _limits(args: argparse.Namespace):
    from course_utils.sandbox import Limits

    return Limits(cell_timeout_s=args.cell_timeout, wall_timeout_s=args.timeout,
                  memory_bytes=int(args.memory_gb * 2**30), max_processes=args.max_processes,
                  max_disk_bytes=int(args.disk_mb * 2**20))


def _cmd_fetch(args: argparse.Namespace) -> int:
    from course_utils import assets
    from course_utils.models import convert_gguf
    from course_utils.tokens import seed_tiktoken_cache

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
        if assets.ASSETS[name].kind == "tiktoken-bpe":
            note = f" (tiktoken's own cache: {seed_tiktoken_cache()})"
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
    """JupyterLab on the course folder, offline; every argument after ``lab`` goes to Jupyter."""
    root = _repo_root()
    cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={root}", *args.jupyter_args]
    return subprocess.call(cmd, env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")})


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("llm-course")
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e . in the course folder)"


def _cmd_assign(args: argparse.Namespace) -> int:
    from course_utils.grading.assign import assign_all

    root = _course_root()
    if not any((root / "solutions").glob("*_lab.ipynb")):
        raise ValueError(f"no *_lab.ipynb solutions in {root / 'solutions'}: nothing to assign")
    stale = assign_all(root / "solutions", root / "labs", check_only=args.check)
    if args.check:
        if stale:
            print(f"out of date (run `llm-course assign`): {', '.join(stale)}", file=sys.stderr)
            return 1
        print("labs/ matches solutions/")
        return 0
    print(f"wrote {len(stale)} lab(s): {', '.join(stale) or 'nothing changed'}")
    return 0


def _limit_flags(p: argparse.ArgumentParser) -> None:
    from course_utils.sandbox import Limits

    d = Limits()
    p.add_argument("--cell-timeout", type=float, default=d.cell_timeout_s, help="seconds per cell and per test call")
    p.add_argument("--timeout", type=float, default=d.wall_timeout_s, help="seconds for a whole submission")
    p.add_argument("--memory-gb", type=float, default=d.memory_bytes / 2**30,
                   help="memory for a whole submission, all its processes together")
    p.add_argument("--max-processes", type=int, default=d.max_processes, help="process limit per submission")
    p.add_argument("--disk-mb", type=float, default=d.max_disk_bytes / 2**20,
                   help="disk space of a submission's job folder")


def _cmd_grade(args: argparse.Namespace) -> int:
    from course_utils.grading.grade import collect_submissions, grade_submissions, prepare_lab
    from course_utils.grading.report import summary_table

    solution = _solution_path(args.lab)
    limits = _limits(args)
    paths, warnings = collect_submissions([Path(p) for p in args.submissions])
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    start = time.perf_counter()
    print(f"preparing {solution.stem}: running the reference solution in the sandbox ...")
    ctx = prepare_lab(solution, limits)
    results = grade_submissions(paths, ctx, Path(args.out), jobs=args.jobs, force=args.force)
    reused = sum(r.reused for r in results)
    print()
    print(summary_table(results))
    print(f"\n{len(results)} submission(s) in {time.perf_counter() - start:.0f}s: {len(results) - reused} graded, "
          f"{reused} reused from an earlier run with the same lab and limits (--force re-grades them); "
          f"grades.csv, feedback/ and results/ in {args.out}")
    if results and results[0].limits_in_force:
        print("limits in force: " + "; ".join(f"{k}: {v}" for k, v in results[0].limits_in_force.items()))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from course_utils.grading.export import build_gradescope_zip

    solution = _solution_path(args.lab)
    out = Path(args.out or f"{solution.stem}_gradescope.zip")
    build_gradescope_zip(solution, out, _limits(args), args.hidden_visibility)
    print(f"wrote {out}: upload it as the autograder of {solution.stem} on Gradescope")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from course_utils.serving.server import serve

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host} exposes the model to your network, without authentication",
              file=sys.stderr)
    serve(args.model, host=args.host, port=args.port, device=args.device, num_blocks=args.num_blocks,
          block_size=args.block_size, max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len,
          max_num_batched_tokens=args.max_num_batched_tokens, enable_chunked_prefill=args.chunked_prefill,
          num_speculative_tokens=args.num_speculative_tokens, speculative_draft_layers=args.speculative_draft_layers,
          decode_kernel=args.decode_kernel)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import json
    import math
    from pathlib import Path

    from course_utils.serving.bench import run_benchmark
    from course_utils.tasks import load_task

    texts = [r["question"] for r in load_task("arithmetic")] + [r["text"] for r in load_task("sentiment")]
    prompts = [texts[i % len(texts)] for i in range(args.num_prompts)]
    rate = math.inf if args.request_rate == "inf" else float(args.request_rate)
    result = run_benchmark(args.base_url, args.model, prompts, args.output_len, rate, args.max_concurrency)
    shown = {k: v for k, v in result.items() if k != "requests"}
    print(json.dumps(shown, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results in {args.out}")
    if args.plot:
        _plot_bench(result, args.plot)
        print(f"plot in {args.plot}")
    return 0 if result["failed"] == 0 else 1


def _cmd_model_card(args: argparse.Namespace) -> int:
    from course_utils.choosing.model_card import load_answers, write_card

    answers = load_answers(args.answers) if args.answers else {}
    card = write_card(args.model, args.out, answers)
    results = len(card.data.eval_results or [])
    print(f"wrote {args.out}: model card for {args.model} with {results} evaluation result(s) in its model-index")
    return 0


def _cmd_claims(args: argparse.Namespace) -> int:
    from course_utils.ledger import ledger_markdown, load_claims

    page = ledger_markdown(load_claims(), _course_root() / "notebooks")
    if args.write:
        Path(args.write).write_text(page + "\n", encoding="utf-8")
        print(f"wrote {args.write}")
    else:
        print(page)
    return 0


def _plot_bench(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in result["requests"] if r["ok"]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].hist([r["ttft"] * 1000 for r in done], bins=20)
    axes[0].set(xlabel="time to first token (ms)", ylabel="requests")
    axes[1].hist([r["e2e"] * 1000 for r in done], bins=20, color="C1")
    axes[1].set(xlabel="end-to-end latency (ms)", ylabel="requests")
    fig.suptitle(f"{result['model']}: {result['completed']} requests, {result['output_tokens_per_s']:.1f} output tok/s")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-course", description="The LLM course's command line.")
    parser.add_argument("--version", action="version", version=f"llm-course {_version()}")
    parser.add_argument("--debug", action="store_true", default=_debug_from_env(),
                        help="show the traceback of a failure (also LLM_COURSE_DEBUG=1)")
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

    p = sub.add_parser("lab", help="start JupyterLab in the course folder (offline); other options go to Jupyter",
                       add_help=False)
    p.add_argument("jupyter_args", nargs=argparse.REMAINDER,
                   help="passed on to jupyter lab, e.g. --no-browser --port 8890 --ip 0.0.0.0")
    p.set_defaults(func=_cmd_lab)

    p = sub.add_parser("assign", help="generate the student labs/ from solutions/")
    p.add_argument("--check", action="store_true", help="only check that labs/ is up to date")
    p.set_defaults(func=_cmd_assign)

    p = sub.add_parser("grade", help="grade submissions in a sandbox")
    p.add_argument("submissions", nargs="+", help="submission notebooks or folders of them")
    p.add_argument("--lab", required=True, help="lab name (e.g. 00_getting_started_lab) or solution path")
    p.add_argument("--out", required=True, help="folder for grades.csv, feedback/ and results/")
    p.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel (default 1)")
    p.add_argument("--force", action="store_true", help="re-grade submissions already graded")
    _limit_flags(p)
    p.set_defaults(func=_cmd_grade)

    p = sub.add_parser("export", help="package a lab for another grading platform")
    p.add_argument("platform", choices=["gradescope"], help="where the lab will be graded")
    p.add_argument("--lab", required=True, help="lab name (e.g. 00_getting_started_lab) or solution path")
    p.add_argument("--out", help="the zip to write (default NAME_gradescope.zip here)")
    p.add_argument("--hidden-visibility", default="after_published",
                   help="when students see hidden-case results: hidden, after_due_date, after_published, visible")
    _limit_flags(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("serve", help="serve a model behind an OpenAI-compatible API (course engine)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="embedded model name or local folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    engine = EngineConfig()
    p.add_argument("--num-blocks", type=int, default=engine.num_blocks, help="KV-cache blocks in the pool")
    p.add_argument("--block-size", type=int, default=engine.block_size, help="tokens per KV block")
    p.add_argument("--max-num-seqs", type=int, default=engine.max_num_seqs, help="sequences decoded together at most")
    p.add_argument("--max-model-len", type=int, default=engine.max_model_len, help="prompt plus output tokens at most")
    p.add_argument("--max-num-batched-tokens", type=int, default=engine.max_num_batched_tokens,
                   help="new tokens per step at most (bounds the pause a long prompt causes)")
    p.add_argument("--chunked-prefill", action=argparse.BooleanOptionalAction, default=engine.enable_chunked_prefill,
                   help="split long prompts over several steps so running streams keep decoding")
    p.add_argument("--num-speculative-tokens", type=int, default=engine.num_speculative_tokens,
                   help="drafts checked per decode step (0: off; a request may ask for its own)")
    p.add_argument("--speculative-draft-layers", type=int, default=engine.speculative_draft_layers,
                   help="draft with the model's first N layers instead of prompt lookup (0: prompt lookup)")
    p.add_argument("--decode-kernel", action=argparse.BooleanOptionalAction, default=engine.decode_kernel,
                   help="decode attention reads the paged KV pool in place (a C kernel compiled on first use, CPU)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("bench", help="load-test an OpenAI-compatible server (ours or vLLM's)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="the server's /v1 address")
    p.add_argument("--model", default=DEFAULT_MODEL, help="model name the server knows")
    p.add_argument("--num-prompts", type=int, default=64, help="requests sent")
    p.add_argument("--output-len", type=int, default=64, help="tokens generated per request")
    p.add_argument("--request-rate", default="inf", help="requests per second (Poisson), or inf for all at once")
    p.add_argument("--max-concurrency", type=int, default=None, help="requests in flight at most")
    p.add_argument("--out", default=None, help="write the JSON results here")
    p.add_argument("--plot", default=None, help="write a latency histogram (PNG) here")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("model-card", help="write a Hugging Face model card, pre-filled with what the course measured")
    p.add_argument("--model", default=DEFAULT_MODEL, help="a model of course_utils/data/models.csv")
    p.add_argument("--out", default="MODEL_CARD.md", help="where to write the card (Markdown with YAML metadata)")
    p.add_argument("--answers", default=None,
                   help="YAML file of the form's answers (intended_use, out_of_scope_use, limitations, contact, ...)")
    p.set_defaults(func=_cmd_model_card)

    p = sub.add_parser("claims", help="the article's claims beside what the course measured (from the notebooks)")
    p.add_argument("--write", metavar="PATH", help="write the Markdown page there (docs/claims.md), not to the screen")
    p.set_defaults(func=_cmd_claims)
    return parser


def _debug_from_env() -> bool:
    return os.environ.get("LLM_COURSE_DEBUG", "").lower() in {"1", "true", "yes", "on"}


def _split_lab_arguments(argv: list[str]) -> list[str]:
    """Keep ``lab``'s arguments away from argparse, which would refuse options it does not know."""
    index = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if index is None or argv[index] != "lab":
        return argv
    return [*argv[: index + 1], "--", *argv[index + 1:]] if argv[index + 1:] else argv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(_split_lab_arguments(argv))
    if args.command == "lab" and args.jupyter_args[:1] == ["--"]:
        args.jupyter_args = args.jupyter_args[1:]
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # one line a person can act on; the traceback only when asked for
        if args.debug:
            raise
        known = isinstance(err, (ValueError, RuntimeError, OSError))  # ours carry the fix in their message
        text = " ".join(str(err).split()) if known else f"{type(err).__name__}: {' '.join(str(err).split())}"
        print(f"error: {text}" + ("" if known else " (this looks like a bug: run again with --debug and report "
                                  "the traceback)"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
