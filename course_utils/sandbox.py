"""Running untrusted Python (student code, model-written programs) in a separate, limited process.

The parent (:func:`run_sandboxed`) starts ``python -m course_utils.sandbox CONFIG``; before any
untrusted code runs, that process locks itself down (:mod:`course_utils.confinement` builds the
namespaces, the file system view and drops privileges; this module adds the rest):

============  =====================================================================
limit         mechanism
============  =====================================================================
processes     a PID namespace (no process outlives the run, others are invisible), and
              a cgroup ``pids.max`` when we may create one (root), else ``RLIMIT_NPROC``
memory        a cgroup memory limit for all the run's processes together (root), and
              ``RLIMIT_AS`` per process: big allocations raise MemoryError
CPU time      ``RLIMIT_CPU``; wall clock enforced by the parent, which kills the group
files         a private root with read-only binds of what Python needs; Landlock on
              top: read-write only the job's own folder, a size-limited tmpfs
file size     ``RLIMIT_FSIZE``; stdout/stderr are read by the parent and truncated
network       a new network namespace (no interfaces), and Landlock TCP rules
privileges    uid ``nobody`` when the grader is root, no capabilities, no_new_privs
============  =====================================================================

Each mechanism that is not available (another OS, an old kernel, no privileges) is skipped,
and the child reports exactly which limits were in force, so callers can say so. The child
talks to the parent over a dedicated pipe, one JSON object per line, each bounded in size and
depth; the parent never unpickles or executes anything the child sends.
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Limits", "ProgramRun", "SandboxRun", "StopRun", "decode_message", "remove_tree", "run_python",
           "run_sandboxed"]


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed run."""

    cell_timeout_s: float = 60.0  # enforced inside the child, per cell / per test case
    wall_timeout_s: float = 600.0  # whole run, enforced by the parent with SIGKILL
    memory_bytes: int = 4 << 30
    max_processes: int = 32
    max_output_bytes: int = 1 << 20  # stdout and stderr, each; the rest is discarded
    max_file_bytes: int = 64 << 20
    max_open_files: int = 256
    max_disk_bytes: int = 256 << 20  # the job folder, all files together (where a tmpfs can be made)
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
    malformed: list[str] = field(default_factory=list)  # why channel lines were refused
    out_of_memory: bool = False  # the cgroup's memory limit killed a process


class StopRun(Exception):
    """Raised by an ``on_message`` callback: kill the sandboxed run now."""


MAX_MESSAGE_BYTES = 16 << 20  # one line on the channel
MAX_MESSAGE_DEPTH = 64  # nesting of lists and objects in one message
_MAX_CHANNEL_BYTES = 64 << 20  # everything the channel may carry in one run


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, level)
            if level > MAX_MESSAGE_DEPTH:
                return level
            stack += [(v, level + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


def decode_message(line: bytes) -> dict[str, Any]:
    """One channel line as a JSON object; ValueError (with the reason) for anything else."""
    if len(line) > MAX_MESSAGE_BYTES:
        raise ValueError(f"a message of {len(line):,} bytes (at most {MAX_MESSAGE_BYTES:,})")
    try:
        message = json.loads(line)
    except RecursionError:
        raise ValueError("a message nested too deeply to parse") from None
    except ValueError as err:
        raise ValueError(f"a message that is not JSON ({str(err)[:80]})") from None
    if not isinstance(message, dict):
        raise ValueError(f"a message that is a JSON {type(message).__name__}, not an object")
    if _depth(message) > MAX_MESSAGE_DEPTH:
        raise ValueError(f"a message nested deeper than {MAX_MESSAGE_DEPTH} levels")
    return message


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


# --------------------------------------------------------------------------------------------
# Child side: lock down, then run the target module.


def _child_main(config: dict[str, Any]) -> None:
    from course_utils.confinement import confine

    limits = Limits(**config["limits"])
    capped: set[str] = set()  # what the cgroups we joined cap: "pids", "memory"
    for group in config.get("cgroups", []):
        try:
            Path(group["path"], "cgroup.procs").write_text(str(os.getpid()))
            capped.update(group["caps"])
        except OSError:
            pass
    confined = confine(config)  # from here on this is the worker: namespaces made, privileges gone
    report = confined.report
    # CPU seconds may be used by several cores at once, so allow twice the wall clock.
    cpu = int(limits.wall_timeout_s * 2) + 5
    for name, value in (("RLIMIT_AS", limits.memory_bytes), ("RLIMIT_CPU", cpu),
                        ("RLIMIT_FSIZE", limits.max_file_bytes), ("RLIMIT_NOFILE", limits.max_open_files),
                        ("RLIMIT_CORE", 0)):
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError, AttributeError):
            report[name] = "could not be set"
    gib = limits.memory_bytes / 2**30
    report["memory"] = (f"{gib:.1f} GiB for all the run's processes together (cgroup) and per process "
                        "(RLIMIT_AS)" if "memory" in capped else f"{gib:.1f} GiB address space per process (RLIMIT_AS)")
    report["cpu"] = f"{cpu} s CPU (RLIMIT_CPU)"
    if "pids" in capped:
        report["processes"] = f"at most {limits.max_processes} (cgroup pids.max)"
    elif os.geteuid() != 0 and hasattr(resource, "RLIMIT_NPROC"):
        running = 0 if confined.pid_namespace else config.get("user_processes", 0)
        resource.setrlimit(resource.RLIMIT_NPROC, (running + limits.max_processes,) * 2)
        report["processes"] = f"at most {limits.max_processes} more (RLIMIT_NPROC)"
    else:
        report["processes"] = "not limited (no cgroup could be made)"
    if confined.pid_namespace:
        report["processes"] += "; none outlives the run (PID namespace)"
    report.setdefault("disk", f"no quota on the job folder; {limits.max_file_bytes / 2**20:.0f} MiB per file "
                              "(RLIMIT_FSIZE)")
    if limits.network:
        report["network"] = "allowed"
    else:
        report["network"] = "off (empty network namespace)" if confined.network_namespace else \
            "not isolated by namespace"
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


_SWAP_FILES = ("memory.swap.max", "memory.memsw.limit_in_bytes")  # best effort: swap accounting is often off


def _cgroup_roots(limits: Limits) -> list[tuple[Path, dict[str, str]]]:
    """Where a cgroup may be made, with the limit files to write there: v2, else v1's hierarchies."""
    memory, pids = str(limits.memory_bytes), str(limits.max_processes)
    v2 = Path("/sys/fs/cgroup")
    try:
        controllers = set((v2 / "cgroup.subtree_control").read_text().split())
    except OSError:
        controllers = set()
    if controllers & {"pids", "memory"}:
        return [(v2, {"pids.max": pids, "memory.max": memory, "memory.swap.max": "0"})]
    # v1's memsw counts memory plus swap, so the memory limit again allows no swap.
    return [(v2 / "pids", {"pids.max": pids}),
            (v2 / "memory", {"memory.limit_in_bytes": memory, "memory.memsw.limit_in_bytes": memory})]


def _make_cgroups(limits: Limits) -> list[tuple[Path, list[str]]]:
    """Fresh cgroups for one run, each with what it caps ("pids", "memory"), where we may make them."""
    made = []
    for root, files in _cgroup_roots(limits):
        if not (root / "cgroup.procs").exists() or not os.access(root, os.W_OK):
            continue
        group = root / f"llm-course-sandbox-{uuid.uuid4().hex[:12]}"
        try:
            group.mkdir()
            caps = []
            for name, value in files.items():
                if not (group / name).exists():
                    continue
                try:
                    (group / name).write_text(value)
                except OSError:
                    if name in _SWAP_FILES:
                        continue
                    raise
                if name not in _SWAP_FILES:
                    caps.append(name.split(".")[0])
            made.append((group, caps))
        except OSError:
            _remove_cgroup(group)
    return made


def _remove_cgroup(group: Path) -> None:
    try:
        group.rmdir()
    except OSError:
        pass


def _cgroup_pids(group: Path) -> list[int]:
    try:
        return [int(p) for p in (group / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _out_of_memory(groups: list[Path]) -> bool:
    """Whether the memory cgroup killed a process (v2 memory.events, v1 memory.oom_control)."""
    for group in groups:
        for name in ("memory.events", "memory.oom_control"):
            try:
                lines = (group / name).read_text().splitlines()
            except OSError:
                continue
            counts = dict(line.split()[:2] for line in lines if len(line.split()) >= 2)
            if int(counts.get("oom_kill", "0")) > 0:
                return True
    return False


def _kill_everything(proc: subprocess.Popen, groups: list[Path]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for _ in range(50):  # processes that left our process group are still in the cgroups
        pids = {pid for group in groups for pid in _cgroup_pids(group)}
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


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


class _Channel:
    """Reads the child's messages as they arrive, bounded, and answers them through its stdin."""

    def __init__(self, fd: int, proc: subprocess.Popen, on_message: Callable[[dict], bytes | None] | None,
                 kill: Callable[[], None]) -> None:
        self.fd, self.proc, self.on_message, self.kill = fd, proc, on_message, kill
        self.messages: list[dict[str, Any]] = []
        self.malformed: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _handle(self, line: bytes) -> None:
        try:
            message = decode_message(line)
        except ValueError as err:
            self.malformed.append(str(err))
            if self.on_message is not None:
                raise StopRun(str(err)) from None
            return
        self.messages.append(message)
        if self.on_message is None:
            return
        reply = self.on_message(message)
        if reply is None:
            self._close_stdin()
        elif reply:
            try:
                self.proc.stdin.write(reply)
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass

    def _close_stdin(self) -> None:
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def _run(self) -> None:
        total, pending = 0, b""
        try:
            with os.fdopen(self.fd, "rb") as stream:
                for chunk in iter(lambda: stream.read1(65536), b""):
                    total += len(chunk)
                    if total > _MAX_CHANNEL_BYTES:
                        raise StopRun(f"more than {_MAX_CHANNEL_BYTES:,} bytes on the result channel")
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            self._handle(line)
                    if len(pending) > MAX_MESSAGE_BYTES:
                        self._handle(pending)  # refused as too long
                        pending = b""
                if pending.strip():
                    self._handle(pending)
        except StopRun as err:
            if str(err) not in self.malformed:
                self.malformed.append(str(err))
            self.kill()
        finally:
            if self.on_message is not None:
                self._close_stdin()


def remove_tree(path: Path) -> str:
    """Remove a job folder however the job left it: "" once it is gone, else why it stayed.

    Never raises: a tree too deep for ``shutil.rmtree`` (RecursionError) or with read-only
    folders goes to ``chmod -R`` and ``rm -rf``, which walk any depth without following links.
    """
    if not os.path.lexists(path):
        return ""
    try:
        shutil.rmtree(path)
        return ""
    except (OSError, RecursionError) as err:
        first = f"{type(err).__name__}: {err}"
    for command in (["chmod", "-R", "u+rwx", "--", str(path)], ["rm", "-rf", "--", str(path)]):
        try:
            subprocess.run(command, capture_output=True, timeout=120, check=False)
        except (OSError, subprocess.SubprocessError):
            pass
    return f"{path} ({first})"[:300] if os.path.lexists(path) else ""


def run_sandboxed(module: str, payload: bytes, workdir: Path, limits: Limits = Limits(),
                  extra_env: dict[str, str] | None = None,
                  on_message: Callable[[dict[str, Any]], bytes | None] | None = None) -> SandboxRun:
    """Run ``python -m module`` under ``limits`` with ``payload`` on its stdin.

    The module gets the number of a pipe as ``sys.argv[1]``; one JSON object per line written
    there comes back in :attr:`SandboxRun.messages`. ``workdir`` becomes the child's only
    writable folder and its HOME and TMPDIR (where the machine allows, a tmpfs of
    ``limits.max_disk_bytes`` mounted over it that only the child sees).

    With ``on_message``, stdin stays open after ``payload``: each message is passed to it as it
    arrives, and what it returns is written to the child's stdin (``None`` closes stdin; raising
    :class:`StopRun` kills the run). A line that is not a bounded JSON object also kills it, and
    its reason lands in :attr:`SandboxRun.malformed`.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    made = _make_cgroups(limits)
    groups = [group for group, _ in made]
    read_fd, write_fd = os.pipe()
    config = {
        "limits": asdict(limits), "module": module, "workdir": str(workdir), "channel_fd": write_fd,
        "cgroups": [{"path": str(g), "caps": caps} for g, caps in made], "read_only": _allowed_paths(),
        "read_write": [str(workdir), "/dev/null"],
        "user_processes": _user_process_count() if os.geteuid() != 0 else 0,
    }
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), "TMPDIR": str(workdir),
        "USER": "sandbox", "LOGNAME": "sandbox",
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
    channel = _Channel(read_fd, proc, on_message, lambda: _kill_everything(proc, groups))
    try:
        proc.stdin.write(payload)
        proc.stdin.flush()
        if on_message is None:
            proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass
    channel.thread.start()
    timed_out = False
    try:
        proc.wait(timeout=limits.wall_timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    _kill_everything(proc, groups)  # also reaps anything the child left behind
    proc.wait()
    for t in (*readers, channel.thread):
        t.join(timeout=5)
    out_of_memory = _out_of_memory(groups)
    for group in groups:
        _remove_cgroup(group)
    in_force = next((m.get("limits") for m in channel.messages if m.get("type") == "sandbox"), None)
    in_force = {str(k): str(v)[:300] for k, v in in_force.items()} if isinstance(in_force, dict) else {}
    in_force = {**in_force, "wall clock": f"{limits.wall_timeout_s:g} s (parent kills the process group)",
                "per cell": f"{limits.cell_timeout_s:g} s", "output": f"{limits.max_output_bytes:,} bytes per stream"}
    return SandboxRun(
        returncode=proc.returncode, timed_out=timed_out, wall_s=time.perf_counter() - start,
        stdout=b"".join(out).decode("utf-8", "replace"), stderr=b"".join(err).decode("utf-8", "replace"),
        output_truncated=any(trunc), messages=channel.messages, limits_in_force=in_force,
        malformed=channel.malformed, out_of_memory=out_of_memory,
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
    workdir = Path(tempfile.mkdtemp(prefix="program-"))
    try:
        run = run_sandboxed("course_utils.program_runner", source.encode(), workdir, limits)
    finally:
        remove_tree(workdir)
    if run.timed_out:
        return ProgramRun(run.stdout, f"timed out after {timeout_s:g} s")
    if run.returncode != 0:
        lines = run.stderr.strip().splitlines()
        return ProgramRun(run.stdout, lines[-1] if lines else f"exit status {run.returncode}")
    return ProgramRun(run.stdout, None)


if __name__ == "__main__":
    _child_main(json.loads(sys.argv[1]))
