"""The sandbox's child side: lock a fresh process down before untrusted code runs in it.

:func:`course_utils.sandbox.run_sandboxed` starts ``python -m course_utils.sandbox CONFIG``.
That process (the *supervisor*) calls :func:`confine`, which on Linux builds three processes::

    supervisor  (outside every new namespace; waits, then exits with the worker's status)
      init      (pid 1 of a new PID namespace; builds the file system view, reaps, dies with
                 the supervisor, and its death kills everything left in the namespace)
        worker  (drops every privilege, then returns from confine() to run the untrusted module)

What the worker gets, where the kernel allows it:

* new PID, mount, network, UTS and IPC namespaces (inside a user namespace when the grader is
  not root): it sees only its own processes, has no network interface, and no process it starts
  can outlive the run (the namespace dies with its init);
* a file system of its own: an empty root with read-only bind mounts of exactly the paths it
  needs (Python, site-packages, ``course_utils``, the asset cache, ``/usr``, ``/etc``), a few
  device nodes, a fresh ``/proc``, and a job folder that is a size-limited tmpfs (the disk quota),
  which disappears with the namespace so nothing is left to clean;
* no privileges: as root it becomes ``nobody`` (uid 65534); in every mode the capability
  bounding set is emptied, no capability stays effective or permitted, and ``no_new_privs`` is set.

Each step that the machine does not offer is skipped and reported; the report is built from
what the worker measures about itself (``/proc/self/status``), not from what was attempted.
"""

from __future__ import annotations

import ctypes
import os
import platform
import select
import signal
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SANDBOX_UID", "Confinement", "confine", "privileges_in_force"]

SANDBOX_UID = 65534  # "nobody": who student code runs as when the grader is root

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME = 1024, 2048, 1 << 21
_MNT_DETACH = 2
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_CAPBSET_DROP = 1, 4, 24
_PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "arm64": 41}
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")


@dataclass
class Confinement:
    """What :func:`confine` put in place, as the worker sees it."""

    report: dict[str, str] = field(default_factory=dict)  # for the feedback: mechanism -> what holds
    pid_namespace: bool = False  # others invisible, nothing outlives the run
    network_namespace: bool = False  # no interface but loopback


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(text: str | None) -> bytes | None:
        return None if text is None else text.encode()

    _check(_libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


def _preserved_flags(path: str) -> int:
    """Mount flags a read-only remount must repeat (a user namespace may not clear them)."""
    f = os.statvfs(path).f_flag
    flags = 0
    for st, ms in ((os.ST_NOSUID, _MS_NOSUID), (os.ST_NODEV, _MS_NODEV), (os.ST_NOEXEC, _MS_NOEXEC),
                   (os.ST_NOATIME, _MS_NOATIME), (os.ST_NODIRATIME, _MS_NODIRATIME),
                   (os.ST_RELATIME, _MS_RELATIME)):
        if f & st:
            flags |= ms
    return flags


def _bind(path: str, target: str, read_only: bool) -> None:
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        Path(target).touch()
    _mount(path, target, None, _MS_BIND | _MS_REC)
    if read_only:
        _mount(None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _preserved_flags(target))


def _outermost(paths: list[str]) -> list[str]:
    """Drop paths that lie inside another path of the list (their parent's bind covers them)."""
    kept: list[str] = []
    for path in sorted({os.path.normpath(p) for p in paths}):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def _build_root(config: dict[str, Any], job_uid: int, report: dict[str, str]) -> None:
    """In a new mount namespace: an empty root holding only what the job needs, then pivot into it."""
    workdir = config["workdir"]
    quota = int(config["limits"]["max_disk_bytes"])
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    new_root = workdir  # an empty folder the parent made; the tmpfs hides it from everyone else here
    _mount("tmpfs", new_root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=4m,mode=0755")
    skipped = []
    for path in _outermost([p for p in config["read_only"] if p not in ("/proc", "/dev") and
                            not p.startswith("/dev/")]):
        try:
            _bind(path, new_root + path, read_only=True)
        except OSError:
            skipped.append(path)
    for device in _DEVICES:
        if os.path.exists(device):
            _bind(device, new_root + device, read_only=False)
    job = new_root + workdir
    os.makedirs(job, exist_ok=True)
    _mount("tmpfs", job, "tmpfs", _MS_NOSUID | _MS_NODEV,
           f"size={quota},mode=0700,uid={job_uid},gid={job_uid}")
    os.makedirs(new_root + "/proc", exist_ok=True)
    try:  # before the old root goes: a user namespace may mount proc only while one is visible
        _mount("proc", new_root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
        proc = "a fresh /proc showing only the job's own processes"
    except OSError:
        proc = "no /proc (this kernel would not mount one here)"
    os.chdir(new_root)
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(f"pivot_root: unknown system call number on {platform.machine()}")
    _check(_libc().syscall(number, b".", b"."), "pivot_root")
    _check(_libc().umount2(b".", _MNT_DETACH), "detach the old root")
    os.chdir("/")
    report["filesystem view"] = (
        "an empty root with read-only binds of Python, site-packages, course_utils, the asset cache, "
        f"/usr and /etc only; {proc}" + (f"; could not bind {', '.join(skipped)}" if skipped else ""))
    report["disk"] = f"job folder is a {quota / 2**20:.0f} MiB tmpfs (the quota), gone when the run ends"


def _new_namespaces(report: dict[str, str]) -> tuple[str, bool]:
    """Unshare what this machine allows: (mode 'root', 'user' or 'none', whether the network is
    in a namespace of its own)."""
    libc = _libc()
    common = _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWUTS | _CLONE_NEWIPC
    if os.geteuid() == 0 and libc.unshare(common) == 0:
        report["namespaces"] = "own PID, mount, network, UTS and IPC namespaces"
        return "root", True
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(_CLONE_NEWUSER | common) == 0:
        try:
            Path("/proc/self/setgroups").write_text("deny")
            Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
            Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
        except OSError as err:
            report["namespaces"] = f"user namespace made but not mapped ({err.strerror})"
            return "none", True
        report["namespaces"] = "own user, PID, mount, network, UTS and IPC namespaces"
        return "user", True
    if libc.unshare(_CLONE_NEWNET) == 0 or libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:
        report["namespaces"] = "network namespace only (no PID or mount namespace allowed here)"
        return "none", True
    report["namespaces"] = "none allowed here (other processes visible, no file system view)"
    return "none", False


def _drop_privileges(mode: str) -> None:
    """Empty the capability bounding set, become nobody when root, and forbid regaining privileges."""
    libc = _libc()
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        last = 40
    if mode != "none" or os.geteuid() == 0:
        for cap in range(last + 1):
            libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    if os.geteuid() == 0 and mode != "user":
        os.setgroups([])
        os.setresgid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
        os.setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)  # clears every capability set
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = struct.pack("=Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = ctypes.create_string_buffer(24)  # two all-zero {effective, permitted, inheritable}
    libc.capset(ctypes.c_char_p(header), data)
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def privileges_in_force() -> str:
    """What this process may do, read back from the kernel (``/proc/self/status``)."""
    fields = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.split()
    except OSError:
        return f"uid {os.getuid()}, gid {os.getgid()} (capabilities unknown: no /proc)"
    caps = {k: int(fields.get(k, ["0"])[0], 16) for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb")}
    held = ", ".join(f"{k} {v:#x}" for k, v in caps.items() if v)
    return (f"uid {fields['Uid'][0]}, gid {fields['Gid'][0]}, "
            + ("no capabilities (effective, permitted, bounding and ambient sets empty)" if not held
               else f"capabilities held: {held}")
            + (", no_new_privs" if fields.get("NoNewPrivs", ["0"])[0] == "1" else ""))


def _supervise(child: int, status_pipe: int) -> None:
    """Outside the namespaces: wait for init, then end the way the worker ended."""
    _, status = os.waitpid(child, 0)
    data = os.read(status_pipe, 16)
    code = int(data) if data.strip().lstrip(b"-").isdigit() else os.waitstatus_to_exitcode(status)
    if code < 0:  # the worker was killed by a signal: end the same way, so the grader sees it
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


def _init(worker: int, status_pipe: int) -> None:
    """Pid 1 of the namespace: reap everything, report how the worker ended, then exit (which
    makes the kernel kill whatever the job left running)."""
    code = 1
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == worker:
            code = os.waitstatus_to_exitcode(status)
            break
    os.write(status_pipe, str(code).encode())
    os._exit(0)


def confine(config: dict[str, Any]) -> Confinement:
    """Lock this process down; returns, in the worker only, what is in force.

    The supervisor and init never return: they exit when the worker does.
    """
    confined = Confinement()
    report = confined.report
    if not sys.platform.startswith("linux"):
        report["namespaces"] = f"not available on {sys.platform}"
        return confined
    mode, confined.network_namespace = _new_namespaces(report)
    confined.pid_namespace = mode != "none"
    read_end, write_end = os.pipe()  # init -> supervisor: how the worker ended
    lifeline, held = os.pipe()  # the supervisor holds the write end until it dies
    libc = _libc()
    if confined.pid_namespace:
        pid = os.fork()  # the child is pid 1 of the new PID namespace
        if pid:
            os.close(write_end)
            os.close(lifeline)
            _supervise(pid, read_end)
        os.close(read_end)
        os.close(held)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if select.select([lifeline], [], [], 0)[0]:  # EOF: the supervisor died before we asked
            os._exit(1)
        os.close(lifeline)
        job_uid = SANDBOX_UID if mode == "root" else os.geteuid()
        try:
            _build_root(config, job_uid, report)
        except OSError as err:
            report["filesystem view"] = f"not built ({err}); Landlock rules still apply"
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
        worker = os.fork()
        if worker:
            _init(worker, write_end)
        os.close(write_end)
    else:
        for fd in (read_end, write_end, lifeline, held):
            os.close(fd)
        if os.geteuid() == 0:  # no namespaces as root: the job folder must belong to nobody
            os.chown(config["workdir"], SANDBOX_UID, SANDBOX_UID)
    _drop_privileges(mode)
    report["privileges"] = privileges_in_force()
    return confined
