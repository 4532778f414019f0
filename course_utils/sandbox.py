"""Running untrusted Python (student code, model-written programs) in a separate, limited process.

The parent (:func:`run_sandboxed`) starts ``python -m course_utils.sandbox CONFIG``; before any
untrusted code runs, that child locks itself down with what the operating system offers:

============  =====================================================================
limit         mechanism
============  =====================================================================
memory        ``RLIMIT_AS`` (address space): big allocations raise MemoryError
CPU time      ``RLIMIT_CPU``; wall clock enforced by the parent, which kills the group
processes     a cgroup ``pids.max`` when we may create one (root), else ``RLIMIT_NPROC``
files         Landlock: read-only Python, site-packages, course_utils and the course
              cache; read-write only the job's own temporary folder
file size     ``RLIMIT_FSIZE``; stdout/stderr are read by the parent and truncated
network       a new network namespace (no interfaces), and Landlock TCP rules
============  =====================================================================

Each mechanism that is not available (another OS, an old kernel, no privileges) is skipped,
and the child reports exactly which limits were in force, so callers can say so. The child
talks to the parent over a dedicated pipe, one JSON object per line; the parent never unpickles
or executes anything the child sends.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Limits", "ProgramRun", "SandboxRun", "run_python", "run_sandboxed"]


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed run."""

    cell_timeout_s: float = 60.0  # enforced inside the child, per cell / per test case
    wall_timeout_s: float = 300.0  # whole run, enforced by the parent with SIGKILL
    memory_bytes: int = 4 << 30
    max_processes: int = 32
    max_output_bytes: int = 1 << 20  # stdout and stderr, each; the rest is discarded
    max_file_bytes: int = 64 << 20
    max_open_files: int = 256
    network: bool = False

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name != "network" and not value > 0:
                raise ValueError(f"Limits.{name} must be positive, got {value!r}")


@dataclass
class SandboxRun:
    """What came back from a sandboxed process."""

    returncode: int | None
    timed_out: bool
    wall_s: float
    stdout: str
    stderr: str
    output_truncated: bool
    messages: list[dict[str, Any]] = field(default_factory=list)
    limits_in_force: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Landlock (Linux >= 5.13), through raw system calls: no third-party module needed.
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # same on x86_64 and arm64
_PR_SET_NO_NEW_PRIVS = 38
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_ABI1 = (1 << 13) - 1  # every filesystem right of ABI 1
_FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_FILE_ONLY_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, or 0 where Landlock is unavailable."""
    if not sys.platform.startswith("linux"):
        return 0
    version = _libc().syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(version), 0)


def _apply_landlock(read_only: list[str], read_write: list[str], deny_network: bool) -> str:
    abi = landlock_abi()
    if abi < 1:
        return "not available (filesystem not restricted)"
    libc = _libc()
    fs = _FS_ABI1 | (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0)
    fs |= _FS_IOCTL_DEV if abi >= 5 else 0
    net = (_NET_BIND_TCP | _NET_CONNECT_TCP) if (deny_network and abi >= 4) else 0
    scoped = (_SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL) if abi >= 6 else 0
    words = [fs] + ([net] if abi >= 4 else []) + ([scoped] if abi >= 6 else [])
    attr = (ctypes.c_uint64 * len(words))(*words)
    ruleset = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
                           ctypes.c_uint32(0))
    if ruleset < 0:
        return f"failed to create a ruleset (errno {ctypes.get_errno()})"
    read = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
    for paths, rights in ((read_only, read), (read_write, fs)):
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a path this machine does not have
            allowed = rights & (_FILE_ONLY_RIGHTS if not os.path.isdir(path) else fs)
            rule = _PathBeneath(allowed, fd)
            libc.syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(1), ctypes.byref(rule), ctypes.c_uint32(0))
            os.close(fd)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or libc.syscall(
        _SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)
    ) != 0:
        return f"failed to restrict (errno {ctypes.get_errno()})"
    os.close(ruleset)
    extra = ", TCP denied" if net else ""
    extra += ", signals and abstract sockets scoped" if scoped else ""
    return f"Landlock ABI {abi}: read-only Python and course files, read-write job folder only{extra}"


def _new_network_namespace() -> str:
    libc = _libc()
    clone_newnet, clone_newuser = 0x40000000, 0x10000000
    if libc.unshare(clone_newnet) == 0:
        return "off (empty network namespace)"
    if libc.unshare(clone_newuser | clone_newnet) == 0:
        return "off (empty network namespace inside a user namespace)"
    return "not isolated by namespace"


# --------------------------------------------------------------------------------------------
# Child side: lock down, then run the target module.


def _child_main(config: dict[str, Any]) -> None:
    report: dict[str, str] = {}
    limits = Limits(**config["limits"])
    if config.get("cgroup"):
        try:
            Path(config["cgroup"], "cgroup.procs").write_text(str(os.getpid()))
            report["processes"] = f"at most {limits.max_processes} (cgroup pids.max)"
        except OSError as err:
            report["processes"] = f"cgroup join failed: {err}"
    # CPU seconds may be used by several cores at once, so allow twice the wall clock.
    cpu = int(limits.wall_timeout_s * 2) + 5
    for name, value in (("RLIMIT_AS", limits.memory_bytes), ("RLIMIT_CPU", cpu),
                        ("RLIMIT_FSIZE", limits.max_file_bytes), ("RLIMIT_NOFILE", limits.max_open_files),
                        ("RLIMIT_CORE", 0)):
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError, AttributeError):
            report[name] = "could not be set"
    report["memory"] = f"{limits.memory_bytes / 2**30:.1f} GiB address space (RLIMIT_AS)"
    report["cpu"] = f"{cpu} s CPU (RLIMIT_CPU)"
    if "processes" not in report:
        if os.geteuid() != 0 and hasattr(resource, "RLIMIT_NPROC"):
            running = config.get("user_processes", 0)
            resource.setrlimit(resource.RLIMIT_NPROC, (running + limits.max_processes,) * 2)
            report["processes"] = f"at most {limits.max_processes} more (RLIMIT_NPROC)"
        else:
            report["processes"] = "not limited (running as root without a cgroup)"
    report["network"] = "allowed" if limits.network else _new_network_namespace()
    report["filesystem"] = _apply_landlock(config["read_only"], config["read_write"], not limits.network)
    channel = os.fdopen(config["channel_fd"], "w", buffering=1)
    channel.write(json.dumps({"type": "sandbox", "limits": report}) + "\n")
    channel.flush()
    os.chdir(config["workdir"])
    sys.argv = [config["module"], str(config["channel_fd"])]
    import runpy

    runpy.run_module(config["module"], run_name="__main__", alter_sys=True)


# --------------------------------------------------------------------------------------------
# Parent side.


def _read_capped(stream, cap: int, sink: list, truncated: list) -> None:
    total = 0
    for chunk in iter(lambda: stream.read(65536), b""):
        if total < cap:
            sink.append(chunk[: cap - total])
        total += len(chunk)
    truncated.append(total > cap)


def _make_cgroup(max_processes: int) -> Path | None:
    """A fresh pids cgroup (v1 or v2) where we are allowed to make one, else None."""
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if not (root / "cgroup.procs").exists() or not os.access(root, os.W_OK):
            continue
        group = root / f"llm-course-sandbox-{uuid.uuid4().hex[:12]}"
        try:
            group.mkdir()
            (group / "pids.max").write_text(str(max_processes))
            return group
        except OSError:
            shutil.rmtree(group, ignore_errors=True)
    return None


def _kill_everything(proc: subprocess.Popen, group: Path | None) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if group is None:
        return
    for _ in range(50):  # processes that left our process group are still in the cgroup
        pids = [int(p) for p in (group / "cgroup.procs").read_text().split()] if group.exists() else []
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
    try:
        group.rmdir()
    except OSError:
        pass


def _user_process_count() -> int:
    import psutil

    uid = os.getuid()
    return sum(1 for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid)


def _allowed_paths() -> list[str]:
    """Read-only locations a Python process needs, plus the course package and asset cache."""
    from course_utils.assets import cache_dir

    here = Path(__file__).resolve().parent
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable)),
             str(here), str(cache_dir()), "/usr", "/lib", "/lib64", "/bin", "/etc", "/proc", "/sys",
             "/dev/urandom", "/dev/random", "/dev/zero"}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        paths.add(sysconfig.get_paths()[key])
    return sorted(p for p in paths if p and os.path.exists(p))


def run_sandboxed(module: str, payload: bytes, workdir: Path, limits: Limits = Limits(),
                  extra_env: dict[str, str] | None = None) -> SandboxRun:
    """Run ``python -m module`` under ``limits`` with ``payload`` on its stdin.

    The module gets the number of a pipe as ``sys.argv[1]``; one JSON object per line written
    there comes back in :attr:`SandboxRun.messages`. ``workdir`` becomes the child's only
    writable folder and its HOME and TMPDIR.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    group = _make_cgroup(limits.max_processes)
    read_fd, write_fd = os.pipe()
    config = {
        "limits": asdict(limits), "module": module, "workdir": str(workdir), "channel_fd": write_fd,
        "cgroup": str(group) if group else None, "read_only": _allowed_paths(),
        "read_write": [str(workdir), "/dev/null"],
        "user_processes": _user_process_count() if os.geteuid() != 0 else 0,
    }
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), "TMPDIR": str(workdir),
        "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": str(workdir), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
        "LLM_COURSE_CACHE": os.environ.get("LLM_COURSE_CACHE", ""),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **(extra_env or {}),
    }
    env = {k: v for k, v in env.items() if v}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *(["-P"] if sys.version_info >= (3, 11) else []), "-m", "course_utils.sandbox",
         json.dumps(config)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir, env=env,
        pass_fds=(write_fd,), start_new_session=True,
    )
    os.close(write_fd)
    out, err, trunc = [], [], []
    readers = [threading.Thread(target=_read_capped, args=(s, limits.max_output_bytes, sink, trunc), daemon=True)
               for s, sink in ((proc.stdout, out), (proc.stderr, err))]
    for t in readers:
        t.start()
    channel: list[bytes] = []
    channel_reader = threading.Thread(target=_read_channel, args=(read_fd, channel), daemon=True)
    channel_reader.start()
    try:
        proc.stdin.write(payload)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    timed_out = False
    try:
        proc.wait(timeout=limits.wall_timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    _kill_everything(proc, group)  # also reaps anything the child left behind
    proc.wait()
    for t in (*readers, channel_reader):
        t.join(timeout=5)
    messages = []
    for line in b"".join(channel).splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict):
            messages.append(message)
    in_force = next((m.get("limits", {}) for m in messages if m.get("type") == "sandbox"), {})
    in_force = {**in_force, "wall clock": f"{limits.wall_timeout_s:g} s (parent kills the process group)",
                "per cell": f"{limits.cell_timeout_s:g} s", "output": f"{limits.max_output_bytes:,} bytes per stream"}
    return SandboxRun(
        returncode=proc.returncode, timed_out=timed_out, wall_s=time.perf_counter() - start,
        stdout=b"".join(out).decode("utf-8", "replace"), stderr=b"".join(err).decode("utf-8", "replace"),
        output_truncated=any(trunc), messages=messages, limits_in_force=in_force,
    )


@dataclass(frozen=True)
class ProgramRun:
    """The outcome of :func:`run_python`: ``error`` is None exactly when the program ran to the end."""

    stdout: str
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def run_python(source: str, timeout_s: float = 5.0, memory_bytes: int = 512 << 20) -> ProgramRun:
    """Run a self-contained Python program (model output) in the sandbox, in a fresh temporary folder.

    A timeout, an exception or the memory cap comes back as ``error`` (the last line of the
    traceback, or the timeout); nothing the program does can crash the caller.
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a str of Python code, got {type(source).__name__}")
    limits = Limits(cell_timeout_s=timeout_s, wall_timeout_s=timeout_s, memory_bytes=memory_bytes, max_processes=8)
    with tempfile.TemporaryDirectory(prefix="program-") as tmp:
        run = run_sandboxed("course_utils.program_runner", source.encode(), Path(tmp), limits)
    if run.timed_out:
        return ProgramRun(run.stdout, f"timed out after {timeout_s:g} s")
    if run.returncode != 0:
        lines = run.stderr.strip().splitlines()
        return ProgramRun(run.stdout, lines[-1] if lines else f"exit status {run.returncode}")
    return ProgramRun(run.stdout, None)


_MAX_CHANNEL_BYTES = 64 << 20


def _read_channel(fd: int, sink: list[bytes]) -> None:
    total = 0
    with os.fdopen(fd, "rb") as stream:
        for chunk in iter(lambda: stream.read1(65536), b""):
            if total < _MAX_CHANNEL_BYTES:
                sink.append(chunk)
            total += len(chunk)


if __name__ == "__main__":
    _child_main(json.loads(sys.argv[1]))
