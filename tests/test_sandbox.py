"""The sandbox's limits, each shown to bite (where this operating system offers it)."""

import json
import socket
import sys
import threading

import pytest

from course_utils.sandbox import Limits, landlock_abi, run_python, run_sandboxed

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox's limits are Linux's")


def _run(code: str, tmp_path, **limits):
    """Run ``code`` through the grading harness and return (sandbox run, cell statuses)."""
    from course_utils.grading.run import run_cells

    run = run_cells([(0, code)], [], Limits(cell_timeout_s=5, wall_timeout_s=30, **limits))
    return run, run.cells[0] if run.cells else None


def test_limits_in_force_are_reported(tmp_path):
    run, cell = _run("x = 1", tmp_path)
    assert cell["status"] == "ok"
    for key in ("memory", "processes", "network", "filesystem", "wall clock", "per cell", "output"):
        assert key in run.limits_in_force


@pytest.mark.skipif(landlock_abi() < 1, reason="no Landlock on this kernel")
def test_files_outside_the_job_folder_cannot_be_read_or_written(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hidden test")
    _, cell = _run(f"open({str(secret)!r}).read()", tmp_path)
    assert cell["status"] == "error" and "PermissionError" in cell["detail"]
    _, cell = _run(f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')", tmp_path)
    assert "PermissionError" in cell["detail"] and not (tmp_path / "new.txt").exists()
    _, cell = _run("open('inside.txt', 'w').write('fine')", tmp_path)
    assert cell["status"] == "ok"


def test_network_is_off(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    _, cell = _run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)", tmp_path)
    server.close()
    assert cell["status"] == "error" and not accepted


def test_memory_cap_turns_a_huge_allocation_into_memory_error(tmp_path):
    _, cell = _run("block = bytearray(20 * 2**30)", tmp_path, memory_bytes=2 << 30)
    assert cell["status"] == "memory"


def test_wall_clock_kills_a_runaway_that_ignores_the_cell_timer(tmp_path):
    code = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass"
    from course_utils.grading.run import run_cells

    run = run_cells([(0, code)], [], Limits(cell_timeout_s=1, wall_timeout_s=4))
    assert not run.finished and "wall-clock" in run.failure and run.wall_s < 15


def test_environment_is_minimal_and_home_is_the_job_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADER_SECRET_TOKEN", "s3cret")
    _, cell = _run("import os\nassert 'GRADER_SECRET_TOKEN' not in os.environ\n"
                      "assert os.environ['HOME'] == os.getcwd()", tmp_path)
    assert cell["status"] == "ok", cell["detail"]


def test_a_model_written_program_that_misbehaves_comes_back_as_an_error(tmp_path):
    """run_python, the path for model output (program-of-thought, HumanEval): each attack is a result."""
    loop = run_python("while True:\n    pass", timeout_s=1)
    assert not loop.ok and "timed out" in loop.error
    bomb = run_python("block = bytearray(8 * 2**30)\nprint('allocated')", memory_bytes=512 << 20)
    assert not bomb.ok and "MemoryError" in bomb.error and "allocated" not in bomb.stdout
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    call = run_python(f"import socket\nsocket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=2)")
    server.close()
    assert not call.ok and call.error.split(":")[0].endswith("Error") and not accepted  # the exception, reported
    fine = run_python("print(6 * 7)")
    assert fine.ok and fine.stdout.strip() == "42"


@pytest.mark.skipif(landlock_abi() < 1, reason="no Landlock on this kernel")
def test_a_model_written_program_cannot_write_outside_its_folder(tmp_path):
    target = tmp_path / "escaped.txt"
    run = run_python(f"open({str(target)!r}, 'w').write('x')")
    assert not run.ok and "PermissionError" in run.error and not target.exists()
    inside = run_python("open('scratch.txt', 'w').write('x')\nprint(open('scratch.txt').read())")
    assert inside.ok and inside.stdout.strip() == "x"


def test_run_sandboxed_passes_stdin_and_captures_capped_output(tmp_path):
    run = run_sandboxed("this", b"", tmp_path / "job", Limits(wall_timeout_s=30, max_output_bytes=100))
    assert run.returncode == 0 and run.output_truncated and len(run.stdout) == 100
    assert run.stdout.startswith("The Zen of Python")
    assert json.dumps(run.limits_in_force)


def test_bad_limits_are_rejected():
    with pytest.raises(ValueError, match="memory_bytes"):
        Limits(memory_bytes=0)
