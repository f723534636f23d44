"""evals.sandbox: each way a program can end is its own status, and nothing it does reaches the parent.

Every program here is harmless to the machine even if the sandbox were broken, except the ones that
test containment itself (the fork bomb runs only where the kernel caps its processes, and the signal to
the parent is SIGTERM to this test process: if the guard failed, the run would end loudly)."""

import json
import math
import os
import pickle
import signal
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from evals import sandbox
from evals.sandbox import run


def src(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


def test_a_program_that_exits_0_passes_and_its_output_is_captured():
    r = run(
        src("""
        import sys
        print("to stdout")
        print("to stderr", file=sys.stderr)
    """)
    )
    assert (r.status, r.returncode, r.finished) == ("passed", 0, True)
    assert (r.stdout, r.stderr) == ("to stdout\n", "to stderr\n")
    assert 0 < r.wall_s < 10


@pytest.mark.parametrize(
    "program, returncode, finished, status",
    [
        ("assert 1 + 1 == 3, 'arithmetic'", 1, False, "failed"),
        ("raise ValueError('bad')", 1, False, "failed"),
        ("def f(:\n    pass", 1, False, "failed"),  # a SyntaxError is the program's failure, not a crash
        ("import sys; sys.exit(3)", 3, False, "failed"),
        ("import sys; sys.exit(0)", 0, False, "passed"),  # exit 0 passes; `finished` says it left early
        ("import os; os._exit(0)", 0, False, "passed"),
    ],
)
def test_a_nonzero_exit_is_failed(program, returncode, finished, status):
    r = run(program)
    assert (r.status, r.returncode, r.finished) == (status, returncode, finished)


def test_the_failure_is_reported_on_stderr():
    r = run("assert 1 + 1 == 3, 'arithmetic'")
    assert "AssertionError: arithmetic" in r.stderr and r.reason == "exit status 1"


def test_an_infinite_loop_times_out():
    r = run("while True:\n    pass", timeout=1.0)
    assert (r.status, r.returncode) == ("timeout", -signal.SIGKILL)
    assert 1.0 <= r.wall_s < 6.0


def test_sigxcpu_from_rlimit_cpu_is_a_timeout():
    r = run("import os, signal; os.kill(os.getpid(), signal.SIGXCPU)")  # what RLIMIT_CPU's soft limit sends
    assert (r.status, r.returncode) == ("timeout", -signal.SIGXCPU)


def test_the_rlimits_are_set():
    program = src("""
        import json, resource as r
        print(json.dumps([r.getrlimit(getattr(r, f"RLIMIT_{n}")) for n in ("AS", "CPU", "FSIZE", "CORE")]))
    """)
    r = run(program, timeout=2.5, memory_mb=300, max_file_mb=3)
    assert r.status == "passed"
    assert json.loads(r.stdout) == [[300 << 20] * 2, [3, 4], [3 << 20] * 2, [0, 0]]


@pytest.mark.parametrize(
    "program",
    [
        "x = bytearray(10 * 2**30)",  # 10 GB at once
        "chunks = []\nwhile True:\n    chunks.append(bytearray(2**24))",  # 16 MB at a time
        "x = [0] * (10 * 2**30 // 8)",
    ],
)
def test_a_huge_allocation_is_memory(program):
    r = run(program, memory_mb=256)
    assert r.status == "memory" and "MemoryError" in r.stderr


def test_a_file_over_the_size_limit_fails_to_write():
    r = run("open('big', 'wb').write(b'x' * (2 << 20))", max_file_mb=1)
    assert r.status == "failed" and "File too large" in r.stderr


FORK_PROGRAMS = [
    "import os\nwhile True:\n    os.fork()",  # the fork bomb
    "import subprocess; subprocess.run(['true'])",
    "import os; os.system('true')",
    "import os; os.posix_spawn('/bin/true', ['true'], {})",
    "import os; os.execv('/bin/true', ['true'])",
    "import pty; pty.fork()",
    "import multiprocessing as mp\nif __name__ == '__main__':\n"
    "    mp.set_start_method('spawn'); p = mp.Process(target=print); p.start(); p.join()",
    "import ctypes; ctypes.CDLL(None).fork()",  # libc directly
]


@pytest.mark.parametrize("program", FORK_PROGRAMS)
def test_starting_a_process_is_forbidden(program):
    r = run(program, timeout=5)
    assert r.status == "forbidden", (r.reason, r.stderr)
    assert "sandbox: forbidden:" in r.stderr


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie is dead, waiting for init to reap it


def test_a_fork_bomb_without_the_guard_is_capped_and_killed():
    limits = sandbox.kernel_limits()
    if not {"RLIMIT_NPROC", "pids cgroup"} & set(limits):
        pytest.skip(f"root without a writable pids cgroup: nothing but the guard caps processes ({limits})")
    bomb = src("""
        import os
        print(os.getpid(), flush=True)
        while True:
            try:
                if os.fork() == 0:
                    print(os.getpid(), flush=True)
            except OSError:  # the cap: fork fails with EAGAIN, the bomb keeps trying until it is killed
                pass
    """)
    r = run(bomb, timeout=2.0, max_processes=8, guard=False)
    pids = {int(line) for line in r.stdout.split()}
    assert r.status == "timeout" and r.wall_s < 2.0 + 2 * sandbox.KILL_GRACE_S + 2
    assert 2 <= len(pids) <= 1 + 8  # it did fork, and no more than the cap allows
    deadline = time.monotonic() + 2
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_alive, pids))


@pytest.mark.parametrize(
    "program",
    [
        "open({target!r}, 'w').write('x')",
        "open({target!r}, 'a').write('x')",
        "open({target!r}, 'r+').write('x')",
        "import os; os.open({target!r}, os.O_WRONLY | os.O_CREAT)",
        "import pathlib; pathlib.Path({target!r}).write_text('x')",
        "import os; os.symlink({target!r}, 'link'); open('link', 'w').write('x')",
        "import os; os.link({target!r}, 'hard')",
        "import os; os.remove({target!r})",
        "import os; os.rename({target!r}, 'moved')",
        "import os; os.chmod({target!r}, 0o777)",
        "import os; os.truncate({target!r}, 0)",
        "import shutil; shutil.rmtree({folder!r})",
        "import shutil; shutil.copyfile('/etc/hostname', {target!r})",
        "open('../escape.txt', 'w').write('x')",  # the sandbox's own folder, beside the working directory
    ],
)
def test_changing_files_outside_the_working_directory_is_forbidden(tmp_path, program):
    folder = tmp_path / "outside"
    folder.mkdir()
    target = folder / "keep.txt"
    target.write_text("original")
    r = run(program.format(target=str(target), folder=str(folder)))
    assert r.status == "forbidden", (r.reason, r.stderr)
    assert target.read_text() == "original" and sorted(p.name for p in tmp_path.rglob("*")) == [
        "keep.txt",
        "outside",
    ]


def test_changing_files_inside_the_working_directory_is_allowed():
    r = run(
        src("""
        import os, shutil, tempfile
        open("a.txt", "w").write("x")
        os.makedirs("d/e")
        os.rename("a.txt", "d/b.txt")
        os.symlink("d/b.txt", "link")
        open("link", "a").write("y")
        shutil.copyfile("d/b.txt", "c.txt")
        print(open("c.txt").read())
        os.remove("link")
        shutil.rmtree("d")
        fd, path = tempfile.mkstemp()
        os.write(fd, b"z")
        print(sorted(os.listdir(".")) == sorted(["c.txt", os.path.basename(path)]))
    """)
    )
    assert (r.status, r.stdout) == ("passed", "xy\nTrue\n"), r.stderr


@pytest.mark.parametrize(
    "program",
    [
        "import socket; socket.socket()",
        "import socket; socket.create_connection(('127.0.0.1', 9))",
        "import socket; socket.getaddrinfo('localhost', 80)",
        "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9')",
    ],
)
def test_opening_a_socket_is_forbidden(program):
    r = run(program)
    assert r.status == "forbidden" and r.reason.startswith("socket."), (r.reason, r.stderr)


def test_the_network_namespace_has_only_loopback():
    if "network namespace" not in sandbox.kernel_limits():
        pytest.skip("`unshare --net` is not available here")
    program = "print([line.split(':')[0].strip() for line in open('/proc/self/net/dev').readlines()[2:]])"
    r = run(program, guard=False)  # no guard: the kernel's view of the network
    assert (r.status, r.stdout) == ("passed", "['lo']\n")


@pytest.mark.parametrize(
    "program",
    [
        "import os, signal; os.kill(os.getppid(), signal.SIGTERM)",  # the parent: this test process
        "import os; os.kill(-1, 0)",  # every process we may signal (signal 0 only asks)
        "import os; os.kill(1, 0)",
        "import os; os.killpg(os.getpgid(os.getppid()), 0)",
        "import signal; signal.pidfd_send_signal(0, 0)",
        "import ctypes; ctypes.CDLL(None).kill",
    ],
)
def test_signalling_another_process_is_forbidden(program):
    r = run(program)
    assert r.status == "forbidden", (r.reason, r.stderr)


def test_the_sandboxed_program_is_a_child_of_the_caller():  # so the kill above was aimed at this process
    r = run("import os; print(os.getppid(), os.getpgid(0) == os.getpid() == os.getsid(0))")
    assert r.stdout.split() == [str(os.getpid()), "True"]


def test_a_program_may_signal_itself():
    r = run("import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert (r.status, r.returncode) == ("crashed", -signal.SIGTERM)


def test_raising_a_limit_is_forbidden():
    r = run("import resource as r; r.setrlimit(r.RLIMIT_AS, (r.RLIM_INFINITY, r.RLIM_INFINITY))")
    assert r.status == "forbidden" and r.reason == "resource.setrlimit"


def test_a_segfault_is_crashed():
    r = run("import ctypes; ctypes.string_at(0)")
    assert (r.status, r.returncode) == ("crashed", -signal.SIGSEGV) and "SIGSEGV" in r.reason


def test_huge_output_is_cut_and_the_parent_keeps_reading():
    r = run("import sys\nfor _ in range(200):\n    sys.stdout.write('x' * 100_000)", max_output=1000)
    assert (r.status, r.stdout) == ("passed", "x" * 1000)


def test_the_working_directory_is_fresh_empty_and_removed():
    program = "import os; print(os.getcwd(), os.listdir('.'), os.environ['HOME'], os.environ['TMPDIR'])"
    first, second = run(program + "; open('f', 'w')"), run(program)
    cwd, listing, home, tmp = first.stdout.split()
    assert listing == "[]" and home == tmp == cwd
    assert second.stdout.split()[1] == "[]" and second.stdout.split()[0] != cwd
    assert not os.path.exists(cwd) and not os.path.exists(os.path.dirname(cwd))


def test_the_environment_is_minimal(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("SECRET_TOKEN", "do-not-leak")
    r = run("import json, os; print(json.dumps(dict(os.environ)))")
    env = json.loads(r.stdout)
    python = {"PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "OMP_NUM_THREADS"}
    assert set(env) == {"PATH", "HOME", "TMPDIR", "LC_ALL", *python}
    assert env["PYTHONHASHSEED"] == "0" and env["PATH"] == os.defpath


def test_string_hashes_are_the_same_every_run():
    runs = {run("print(hash('sandbox'))").stdout for _ in range(2)}
    assert len(runs) == 1


def test_stdin_is_empty():
    r = run("import sys; print(repr(sys.stdin.read()))")
    assert r.stdout == "''\n"


def test_the_program_runs_as_main():
    r = run(
        src("""
        import pickle
        class Point:
            pass
        if __name__ == "__main__":
            print(type(pickle.loads(pickle.dumps(Point()))).__name__)
    """)
    )
    assert (r.status, r.stdout) == ("passed", "Point\n"), r.stderr


def test_concurrent_runs_are_independent():
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: run(f"print({i} * {i})"), range(8)))
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(8)]


def test_no_zombie_is_left_behind():
    pids = []
    for then in ("pass", "while True:\n    pass", "os.fork()", "os.kill(os.getpid(), 9)"):
        r = run(f"import os\nprint(os.getpid(), flush=True)\n{then}", timeout=0.5)
        pids.append(int(r.stdout))
    assert [os.path.exists(f"/proc/{pid}") for pid in pids] == [False] * 4  # reaped, not zombies


def test_results_are_plain_frozen_data():
    r = run("pass")
    assert pickle.loads(pickle.dumps(r)) == r and r.status in sandbox.STATUSES
    with pytest.raises(AttributeError):
        r.status = "failed"


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(program=b"print(1)"), TypeError, "program"),
        (dict(program="pass", timeout=0), ValueError, "timeout"),
        (dict(program="pass", timeout=-1), ValueError, "timeout"),
        (dict(program="pass", timeout=math.nan), ValueError, "timeout"),
        (dict(program="pass", timeout=math.inf), ValueError, "timeout"),
        (dict(program="pass", memory_mb=sandbox.MIN_MEMORY_MB - 1), ValueError, "memory_mb"),
        (dict(program="pass", memory_mb=512.0), ValueError, "memory_mb"),
        (dict(program="pass", max_processes=0), ValueError, "max_processes"),
        (dict(program="pass", max_file_mb=0), ValueError, "max_file_mb"),
        (dict(program="pass", max_output=-1), ValueError, "max_output"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, name):
    with pytest.raises(error, match=name):
        run(**kwargs)
