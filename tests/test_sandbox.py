"""The sandbox's limits, each shown to bite (where this operating system offers it)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

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


def _denied(detail: str) -> bool:
    """Refused by Landlock (PermissionError) or absent from the job's file system view."""
    return detail.startswith(("PermissionError", "FileNotFoundError"))


@pytest.mark.skipif(landlock_abi() < 1, reason="no Landlock on this kernel")
def test_files_outside_the_job_folder_cannot_be_read_or_written(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hidden test")
    _, cell = _run(f"open({str(secret)!r}).read()", tmp_path)
    assert cell["status"] == "error" and _denied(cell["detail"])
    _, cell = _run(f"open({str(tmp_path / 'new.txt')!r}, 'w').write('x')", tmp_path)
    assert _denied(cell["detail"]) and not (tmp_path / "new.txt").exists()
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
    assert not run.ok and _denied(run.error) and not target.exists()
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


def _probe(code: str, **limits) -> dict:
    """Run ``code`` (which sets RESULT) as a model-written program; its RESULT, as JSON."""
    run = run_python(code + "\nimport json\nprint(json.dumps(RESULT))", timeout_s=20, **limits)
    assert run.ok, run.error
    return json.loads(run.stdout.strip().splitlines()[-1])


def _namespaces_allowed() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    with tempfile.TemporaryDirectory() as job:
        return "PID" in run_sandboxed("this", b"", job, Limits(wall_timeout_s=30)).limits_in_force.get("namespaces", "")


NAMESPACES = _namespaces_allowed()
needs_namespaces = pytest.mark.skipif(not NAMESPACES, reason="this machine allows no PID and mount namespaces")


@needs_namespaces
def test_student_code_sees_no_other_process_and_holds_no_privilege(monkeypatch):
    monkeypatch.setenv("GRADER_API_TOKEN", "s3cret-token")
    result = _probe('''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
RESULT = {"pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), "uid": os.getuid()}
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
RESULT["caps"] = [int(status[k], 16) for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb")]
RESULT["no_new_privs"] = status["NoNewPrivs"].strip()
def fails(call):
    try:
        return call() != 0
    except OSError:
        return True
RESULT["sethostname"] = fails(lambda: libc.sethostname(b"owned", 5))
RESULT["nice"] = fails(lambda: os.nice(-10) and 1)
RESULT["klogctl"] = fails(lambda: libc.klogctl(3, ctypes.create_string_buffer(64), 64) < 0 and 1)
RESULT["chmod"] = fails(lambda: os.chmod("/etc/passwd", 0o777))
RESULT["chown"] = fails(lambda: os.chown("/etc/passwd", 0, 0))
RESULT["utime"] = fails(lambda: os.utime("/etc/passwd"))
RESULT["setxattr"] = fails(lambda: os.setxattr("/etc/passwd", "user.x", b"1"))
RESULT["shadow"] = fails(lambda: open("/etc/shadow").read() and 0)
found = []
for pid in RESULT["pids"]:
    try:
        if b"s3cret-token" in open(f"/proc/{pid}/environ", "rb").read():
            found.append(pid)
    except OSError:
        pass
RESULT["secret_found_in"] = found
''')
    assert len(result["pids"]) <= 3 and max(result["pids"]) < 10  # itself and its init, nothing of ours
    assert result["caps"] == [0, 0, 0, 0] and result["no_new_privs"] == "1"
    if os.geteuid() == 0:
        assert result["uid"] == 65534
    for operation in ("sethostname", "nice", "klogctl", "chmod", "chown", "utime", "setxattr", "shadow"):
        assert result[operation], operation
    assert result["secret_found_in"] == []


@needs_namespaces
def test_the_job_folder_has_a_disk_quota():
    result = _probe('''
written = 0
try:
    for i in range(12):
        with open(f"part{i}", "wb") as f:
            f.write(b"x" * (30 << 20))
        written += 30
except OSError as err:
    RESULT = {"written_mb": written, "error": type(err).__name__ + str(err.errno)}
else:
    RESULT = {"written_mb": written, "error": None}
''', memory_bytes=1 << 30)
    assert result["error"] == "OSError28" and result["written_mb"] <= 256  # ENOSPC at the 256 MiB quota


@needs_namespaces
def test_the_quota_reported_is_the_one_asked_for(tmp_path):
    run = run_sandboxed("this", b"", tmp_path, Limits(wall_timeout_s=30, max_disk_bytes=64 << 20))
    assert run.limits_in_force["disk"].startswith("job folder is a 64 MiB tmpfs")


@pytest.mark.skipif(not NAMESPACES or not os.access("/sys/fs/cgroup", os.W_OK),
                    reason="needs namespaces and a cgroup we may create (root)")
def test_memory_is_capped_for_all_processes_together(tmp_path):
    code = '''
import os, time
kids = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        block = b"x" * (400 << 20)
        time.sleep(2)
        os._exit(0)
    kids.append(pid)
RESULT = [os.waitstatus_to_exitcode(os.waitpid(k, 0)[1]) for k in kids]
'''
    run = run_sandboxed("course_utils.program_runner", (code + "\nprint(RESULT)").encode(), tmp_path / "job",
                        Limits(wall_timeout_s=60, memory_bytes=1 << 30))
    assert "together (cgroup)" in run.limits_in_force["memory"]
    codes = eval(run.stdout.strip().splitlines()[-1]) if run.stdout.strip() else None  # noqa: S307 - our own output
    # 1.6 GB of children in a 1 GiB group: the kernel kills at least one (SIGKILL), or the parent with them.
    assert run.out_of_memory and (codes is None or -9 in codes)


def test_a_job_folder_too_deep_for_rmtree_is_still_removed(tmp_path):
    from course_utils.sandbox import remove_tree

    root = tmp_path / "job"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    for _ in range(1500):
        os.mkdir("d", dir_fd=fd)
        new = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = new
    os.close(fd)
    (root / "readonly").mkdir()
    (root / "readonly" / "f").write_text("x")
    (root / "readonly").chmod(0o500)
    assert remove_tree(root) == "" and not root.exists()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("chattr"),
                    reason="needs root and chattr to make an immutable file")
def test_a_job_folder_that_cannot_be_removed_is_reported_not_raised(tmp_path):
    from course_utils.sandbox import remove_tree

    root = tmp_path / "job"
    root.mkdir()
    (root / "locked").write_text("x")
    if subprocess.run(["chattr", "+i", str(root / "locked")], capture_output=True).returncode != 0:
        pytest.skip("this file system has no immutable flag")
    try:
        why = remove_tree(root)
        assert why and "job" in why and root.exists()
    finally:
        subprocess.run(["chattr", "-i", str(root / "locked")], check=True)


@pytest.mark.parametrize("line, reason", [
    (b"[" * 100_000, "nested"), (b'{"a": ' * 100 + b"1" + b"}" * 100, "nested deeper"),
    (b"[1, 2]", "not an object"), (b"{nope", "not JSON"), (b'"' + b"x" * (17 << 20) + b'"', "bytes"),
])
def test_channel_messages_are_bounded_in_size_and_depth(line, reason):
    from course_utils.sandbox import decode_message

    with pytest.raises(ValueError, match=reason):
        decode_message(line)
    assert decode_message(b'{"type": "case", "value": [[1]]}') == {"type": "case", "value": [[1]]}


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                    reason="needs root, to start a grader as another user")
def test_a_grader_that_is_not_root_confines_student_code_the_same_way(tmp_path):
    """The grader itself runs as nobody: student code gets a user namespace, no capabilities, its own
    PID namespace and file system view. Skipped where nobody cannot run this Python (e.g. under /root)."""
    tmp_path.chmod(0o777)
    code = ("import json; from course_utils.sandbox import run_python\n"
            "r = run_python(\"import os, subprocess; print(sorted(p for p in os.listdir('/proc') if p.isdigit()))\\n"
            "subprocess.Popen(['sleep', '27.1828'], start_new_session=True)\\n"
            "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\")\n"
            "print(json.dumps([r.stdout, r.error]))\n")
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", ""), "LLM_COURSE_CACHE": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    try:
        done = subprocess.run([sys.executable, "-c", code], user=65534, group=65534, extra_groups=[], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    except PermissionError:
        pytest.skip(f"nobody cannot run {sys.executable}")
    if done.returncode != 0 and "Permission denied" in done.stderr:
        pytest.skip(f"nobody cannot read this Python's files: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    stdout, error = json.loads(done.stdout.strip().splitlines()[-1])
    assert error is None
    pids, cap_eff = stdout.strip().splitlines()
    assert len(eval(pids)) <= 3 and int(cap_eff, 16) == 0  # noqa: S307 - our own output
    import psutil

    assert not [p for p in psutil.process_iter(["cmdline"]) if "27.1828" in (p.info["cmdline"] or [])]
