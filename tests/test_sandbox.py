"""The program sandbox: programs run, fail and get killed as data, never harming the host.

Each attack test checks that the host is unharmed *and* that the next program runs normally.
The attack tests need namespace isolation (bubblewrap) and skip with a reason where
``detect_isolation()`` finds resource limits only. One module-scoped ``Sandbox`` keeps the
suite fast (a worker costs one interpreter start + the sympy import, ~1 s); no assertion
depends on wall-clock luck: limits are small, waits for what must finish are generous.

    .venv/bin/python -m pytest tests/test_sandbox.py -q
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from ttscale.errors import ConfigError, SandboxError, SandboxUnavailable
from ttscale.sandbox import (
    ExecResult,
    Isolation,
    Limits,
    Sandbox,
    close_default_sandbox,
    default_sandbox,
    detect_isolation,
)
from ttscale.sandbox import sandbox as sandbox_module

ROOT = Path(__file__).resolve().parents[1]
SECRET = f"sk-secret-{uuid.uuid4().hex}"
ISOLATION = detect_isolation()
needs_namespaces = pytest.mark.skipif(
    ISOLATION.level != "namespaces",
    reason=f"no namespace isolation on this host: {ISOLATION.detail}",
)
needs_uid = pytest.mark.skipif(
    not (ISOLATION.level == "namespaces" and ISOLATION.uid_separation),
    reason="needs a uid per program (root with bubblewrap)",
)


@pytest.fixture(scope="module")
def box():
    # The secret is in the host environment before any worker starts.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPENAI_API_KEY", SECRET)
        mp.setenv("TTSCALE_SANDBOX", "")
        sandbox = Sandbox(workers=2, allow_weak=True)
        sandbox.warm()
        yield sandbox
        sandbox.close()


def assert_healthy(box: Sandbox) -> None:
    """The next program runs normally on every worker."""
    for _ in range(box.workers):
        r = box.run("print(6*7)")
        assert r.ok and r.stdout == "42\n", r


def processes() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, real uid) for every process on the host."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        out[int(p)] = (int(fields["PPid"].split()[0]), int(fields["Uid"].split()[0]))
    return out


def descendants(pid: int) -> list[int]:
    procs = processes()
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, (pp, _) in procs.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def wait_until(predicate, seconds: float = 30.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def assert_only_workers_left(box: Sandbox) -> None:
    """Each worker sandbox holds bwrap's init, the worker (zygote) and its idle runner, all
    the worker's own uid: nothing of any program."""
    own = os.getuid()

    def clean(pid: int) -> bool:
        procs = processes()
        kids = descendants(pid)
        return len(kids) <= 3 and all(procs[k][1] == own for k in kids if k in procs)

    for pid in box.worker_pids():
        assert pid is not None
        assert wait_until(lambda pid=pid: clean(pid)), [
            (k, processes().get(k)) for k in descendants(pid)
        ]


def program_uid(box: Sandbox) -> set[int]:
    return {int(box.run("import os; print(os.getuid())").stdout) for _ in range(box.workers)}


# ---- basics ------------------------------------------------------------------------------


def test_prints_and_sympy(box):
    assert box.run("print(6*7)").stdout == "42\n"
    r = box.run("from sympy import *; print(Rational(1,3)+Rational(1,6))")
    assert r.ok and r.stdout == "1/2\n"
    r = box.run("import numpy as np; print(int(np.arange(10).sum()))")
    assert r.stdout == "45\n"


def test_standard_library_beyond_the_preload_imports(box):
    r = box.run("import statistics, decimal, json; print(statistics.mean([1, 2, 6]))")
    assert r.ok and r.stdout == "3\n", r


def test_an_exception_exits_1_with_the_traceback(box):
    r = box.run("x = 1\nraise ValueError('boom')")
    assert r.exit_code == 1 and not r.ok and r.error is None
    assert 'File "<program>", line 2' in r.stderr
    assert "raise ValueError('boom')" in r.stderr  # the source line, as python shows it
    assert r.stderr.rstrip().endswith("ValueError: boom")
    assert "worker.py" not in r.stderr


def test_syntax_error_and_system_exit(box):
    r = box.run("print(1")
    assert r.exit_code == 1 and "SyntaxError" in r.stderr
    assert box.run("import sys; print('a'); sys.exit(3)").exit_code == 3
    r = box.run("raise SystemExit('bye')")
    assert r.exit_code == 1 and "bye" in r.stderr
    assert box.run("raise SystemExit").exit_code == 0


def test_threads_and_atexit_finish_before_the_result(box):
    code = (
        "import atexit, threading, time\n"
        "atexit.register(lambda: print('atexit'))\n"
        "t = threading.Thread(target=lambda: (time.sleep(0.2), print('thread')))\n"
        "t.start()\n"
    )
    r = box.run(code)
    assert r.ok and r.stdout == "thread\natexit\n", r


def test_program_runs_in_a_fresh_namespace_each_time(box):
    box.run("leak = 1")
    r = box.run("print('leak' in globals(), __name__)")
    assert r.stdout == "False __main__\n"


HEAP_SCAN = """
import ctypes, re
needle = re.compile(("CROSS" + "TALK" + r"_[a-z]+_4711").encode())
found = set()
with open("/proc/self/maps") as f:
    for line in f.read().splitlines():
        span, perm = line.split()[:2]
        if not perm.startswith("rw") or "[v" in line:
            continue
        lo, hi = (int(x, 16) for x in span.split("-"))
        if hi - lo <= 1 << 28:
            data = ctypes.string_at(lo, hi - lo)
            found.update(m.group(0).decode() for m in needle.finditer(data))
print(sorted(found))
"""


def test_no_bytes_of_an_earlier_program_survive_in_a_later_ones_memory(box):
    """The zygote never reads requests or outputs (a runner forked per request does), so a
    later program scanning its whole heap finds neither an earlier program's code nor what
    it printed (another request's secrets, a grading run's hidden tests)."""
    for _ in range(box.workers * 2):
        r = box.run("secret = 'CROSSTALK_code_4711'\nprint('CROSSTALK_' + 'output_4711')")
        assert r.stdout == "CROSSTALK_output_4711\n"
    for _ in range(box.workers):
        r = box.run(HEAP_SCAN)
        assert r.ok and r.stdout == "[]\n", r
    # The scan is not blind: it finds the marker in its own program's memory.
    r = box.run("mine = 'CROSSTALK_' + 'self_4711'\n" + HEAP_SCAN)
    assert r.stdout == "['CROSSTALK_self_4711']\n", r


def test_result_round_trips_and_ok():
    r = ExecResult("1\n", "", 0, None, False, False, 0.01)
    assert r.ok and ExecResult.from_dict(r.to_dict()) == r
    assert not ExecResult("", "", None, 9, True, False, 1.0).ok
    assert not ExecResult("", "", 0, None, False, False, 0.0, error="worker died").ok


@pytest.mark.parametrize(
    "field, value",
    [
        ("cpu_seconds", 0),
        ("memory_mb", -1),
        ("open_files", 2),
        ("wall_seconds", "1"),
        ("output_bytes", 1 << 30),
    ],
)
def test_bad_limits_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=field):
        Limits(**{field: value})


def test_run_many_32_programs_in_order(box):
    codes = [f"import time; time.sleep(0.01 * ({i} % 3)); print({i})" for i in range(32)]
    results = asyncio.run(box.run_many(codes))
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(32)]
    assert all(r.ok for r in results)


def test_threads_share_the_sandbox(box):
    out: list[str] = [""] * 8

    def one(i: int) -> None:
        out[i] = box.run(f"print({i} * 2)").stdout

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert out == [f"{2 * i}\n" for i in range(8)]


# ---- opt-in and lifetime -----------------------------------------------------------------


def weak_isolation() -> Isolation:
    return Isolation("rlimits", False, False, False, False, None, "rlimits only (test)")


def test_no_isolation_refuses_without_opt_in(monkeypatch):
    monkeypatch.setattr(sandbox_module, "detect_isolation", weak_isolation)
    monkeypatch.delenv("TTSCALE_SANDBOX", raising=False)
    with pytest.raises(SandboxUnavailable) as e:
        Sandbox(workers=1)
    msg = str(e.value)
    assert "apt-get install bubblewrap" in msg and "allow_weak=True" in msg
    assert "TTSCALE_SANDBOX=rlimits" in msg
    with pytest.raises(SandboxUnavailable):
        Sandbox(workers=1, isolation="namespaces", allow_weak=True)
    with pytest.raises(SandboxUnavailable):
        Sandbox(workers=1, isolation="rlimits")


def test_weak_mode_with_opt_in_warns_and_runs(monkeypatch, caplog):
    monkeypatch.setenv("TTSCALE_SANDBOX", "rlimits")
    with caplog.at_level(logging.WARNING, logger="ttscale.sandbox.sandbox"):
        with Sandbox(workers=1, isolation="rlimits") as weak:
            assert weak.isolation.level == "rlimits"
            r = weak.run("import os; print(6*7, 'OPENAI_API_KEY' in os.environ)")
            assert r.stdout == "42 False\n", r
            r = weak.run("while True: pass", limits=Limits(cpu_seconds=1, wall_seconds=10))
            assert r.timed_out
    assert "SANDBOX IS WEAK" in caplog.text


def test_closed_sandbox_raises():
    sb = Sandbox(workers=1, allow_weak=True)
    sb.close()
    with pytest.raises(SandboxError, match="closed"):
        sb.run("print(1)")
    sb.close()  # idempotent


def test_default_sandbox_is_shared_and_closable(monkeypatch):
    monkeypatch.setenv("TTSCALE_SANDBOX", "rlimits")  # constructible on any host
    a = default_sandbox()
    assert default_sandbox() is a
    close_default_sandbox()
    b = default_sandbox()
    assert b is not a
    close_default_sandbox()
    with pytest.raises(SandboxError):
        b.run("print(1)")


# ---- isolation ---------------------------------------------------------------------------


def test_detect_isolation_is_cached_and_described():
    assert detect_isolation() is detect_isolation()
    assert ISOLATION.detail
    if ISOLATION.level == "namespaces":
        assert ISOLATION.tool and ISOLATION.network_isolated and ISOLATION.pid_namespace


@needs_namespaces
def test_programs_see_no_host_processes_and_cannot_touch_the_worker(box):
    code = (
        "import os\n"
        "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "print(pids)\n"
        "try:\n"
        "    os.kill(2, 9); print('killed worker')\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)\n"
    )
    r = box.run(code)
    pids = eval(r.stdout.splitlines()[0])
    # init, the worker (zygote), its runner, the program: none of the host's many processes
    host = [p for p in os.listdir("/proc") if p.isdigit()]
    assert len(pids) <= 5 < len(host) and 2 in pids, r
    if ISOLATION.uid_separation:
        assert r.stdout.splitlines()[1] == "PermissionError"
    assert_healthy(box)


@needs_uid
def test_programs_run_unprivileged_under_their_own_uid(box):
    r = box.run(
        "import os\n"
        "print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups())\n"
        "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
    )
    ids, caps = r.stdout.splitlines()
    uid, euid, gid, groups = ids.split(" ", 3)
    assert int(uid) == int(euid) == int(gid) >= 60000 and groups == "[]"
    assert int(caps, 16) == 0


@needs_namespaces
def test_secrets_in_the_host_environment_never_reach_a_program(box):
    assert os.environ["OPENAI_API_KEY"] == SECRET  # the module fixture's environment
    code = f"""
import os
print(dict(os.environ))
for path in ("/proc/1/environ", "/proc/2/environ", "/proc/self/environ",
             "/proc/{os.getpid()}/environ", "/proc/{os.getppid()}/environ"):
    try:
        print(path, open(path, "rb").read())
    except OSError as e:
        print(path, type(e).__name__)
"""
    r = box.run(code)
    assert r.stdout and SECRET not in r.stdout and SECRET not in r.stderr
    assert "OPENAI_API_KEY" not in r.stdout
    assert_healthy(box)


@needs_namespaces
def test_no_network_not_even_the_hosts_loopback(box):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    port = server.getsockname()[1]
    code = f"""
import shutil
import socket
for host in ("127.0.0.1", "localhost"):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((host, {port}))
        print("connected")
    except OSError as e:
        print("failed", type(e).__name__)
"""
    try:
        r = box.run(code)
        assert r.stdout.count("failed") == 2 and "connected" not in r.stdout, r
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()
    assert_healthy(box)


@needs_namespaces
def test_writes_outside_the_work_dir_never_reach_the_host(box, tmp_path):
    token = uuid.uuid4().hex
    targets = [
        ROOT / f"escape-{token}",
        Path("/etc") / f"escape-{token}",
        Path("/tmp") / f"escape-{token}",
        Path("/var/tmp") / f"escape-{token}",
        Path("/dev/shm") / f"escape-{token}",
        tmp_path / f"escape-{token}",
        Path.home() / f"escape-{token}",
    ]
    code = "import os\n" + "".join(
        f"try:\n    open({str(t)!r}, 'w').write('x'); print('wrote')\n"
        f"except OSError as e:\n    print('denied', type(e).__name__)\n"
        for t in targets
    )
    code += "open('mine.txt', 'w').write('ok'); print(os.getcwd())\n"
    r = box.run(code)
    lines = r.stdout.splitlines()
    assert r.ok, r
    for t in targets:
        assert not t.exists(), t
    if ISOLATION.uid_separation:  # the sandbox's own /dev/shm is writable (and private)
        pairs = zip(targets, lines[:-1], strict=True)
        denied = [line for t, line in pairs if t.parent != Path("/dev/shm")]
        assert all(line.startswith("denied") for line in denied), lines
    assert_healthy(box)


@needs_namespaces
def test_nothing_a_program_writes_reaches_the_next_program(box):
    writer = (
        "import os\n"
        "open('note.txt', 'w').write('secret')\n"
        "for d in ('/tmp', '/dev/shm'):\n"
        "    try:\n"
        "        open(os.path.join(d, 'shared.txt'), 'w').write('x')\n"
        "    except OSError:\n"
        "        pass\n"
        "print(os.getcwd())\n"
    )
    reader = "import os\nprint(sorted(os.listdir('/tmp')), sorted(os.listdir('/dev/shm')))\n"
    for _ in range(box.workers):  # whichever worker runs what, nothing carries over
        first = box.run(writer).stdout.strip()
        r = box.run(reader)
        tmp, shm = r.stdout.split("] [")
        assert "note.txt" not in r.stdout and "shared.txt" not in r.stdout, r
        assert os.path.basename(first) not in tmp


@needs_namespaces
def test_no_new_namespaces_and_no_unix_sockets(box):
    code = (
        "import ctypes, socket\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "for flag in (0x10000000, 0x20000, 0x40000000):  # user, mount, net namespaces\n"
        "    print(libc.unshare(flag), ctypes.get_errno())\n"
        "try:\n"
        "    socket.socket(socket.AF_UNIX).connect('/run/dbus/system_bus_socket')\n"
        "    print('connected')\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)\n"
    )
    r = box.run(code)
    assert r.stdout.splitlines() == ["-1 1"] * 3 + ["PermissionError"], r
    assert_healthy(box)


@needs_namespaces
def test_multiprocessing_and_subprocesses_work(box):
    code = (
        "import subprocess, sys\n"
        "from multiprocessing import Pool\n"
        "with Pool(2) as pool:\n"
        "    print(pool.map(abs, [-1, -2, -3]))\n"
        "print(subprocess.run([sys.executable, '-c', 'print(5)'], capture_output=True).stdout)\n"
    )
    r = box.run(code, limits=Limits(wall_seconds=120))
    assert r.ok and r.stdout == "[1, 2, 3]\nb'5\\n'\n", r


@needs_namespaces
def test_infinite_loop_hits_the_cpu_limit(box):
    r = box.run("while True: pass", limits=Limits(cpu_seconds=1, wall_seconds=60))
    assert r.timed_out and r.signal in (signal.SIGXCPU, signal.SIGKILL) and not r.ok
    assert r.error is None
    assert_healthy(box)


@needs_namespaces
def test_sleeping_program_hits_the_wall_limit(box):
    r = box.run("import time; time.sleep(600)", limits=Limits(cpu_seconds=5, wall_seconds=1))
    assert r.timed_out and r.signal == signal.SIGKILL and r.exit_code is None
    assert_healthy(box)


@needs_namespaces
def test_fork_bomb_is_contained_and_swept(box):
    code = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    r = box.run(code, limits=Limits(cpu_seconds=2, wall_seconds=3, max_processes=16))
    assert r.timed_out and r.error is None
    assert_only_workers_left(box)
    if ISOLATION.uid_separation:
        uids = program_uid(box)
        assert not [p for p, (_, u) in processes().items() if u in uids]
    assert_healthy(box)


@needs_namespaces
def test_max_processes_caps_forks(box):
    code = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    for _ in range(100):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30); os._exit(0)\n"
        "        n += 1\n"
        "except OSError:\n"
        "    pass\n"
        "print(n)\n"
    )
    r = box.run(code, limits=Limits(max_processes=8, wall_seconds=60))
    assert r.ok and int(r.stdout) < 8, r
    assert_only_workers_left(box)  # the sleeping children were swept at once
    assert_healthy(box)


@needs_namespaces
def test_memory_bomb_fails_inside_the_program(box):
    r = box.run("x = bytearray(10**12)")
    assert r.exit_code == 1 and "MemoryError" in r.stderr
    grow = "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))\n"
    r = box.run(grow, limits=Limits(memory_mb=256, wall_seconds=60))
    assert not r.ok and ("MemoryError" in r.stderr or r.signal is not None), r
    r = box.run("import numpy as np; a = np.ones((4096, 4096, 64))", limits=Limits(memory_mb=256))
    assert r.exit_code == 1 and "MemoryError" in r.stderr
    assert_healthy(box)


@needs_namespaces
def test_daemonised_grandchild_does_not_outlive_the_program(box):
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.closerange(0, 3)\n"
        "        while True:\n"
        "            time.sleep(0.1)\n"
        "            try:\n"
        "                open('/tmp/daemon-was-here', 'w').write('x')\n"
        "            except OSError:\n"
        "                pass\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "print('parent done')\n"
    )
    r = box.run(code, limits=Limits(wall_seconds=60))
    assert r.ok and r.stdout == "parent done\n", r
    assert_only_workers_left(box)
    if ISOLATION.uid_separation:
        uids = program_uid(box)
        assert not [p for p, (_, u) in processes().items() if u in uids]
    assert not Path("/tmp/daemon-was-here").exists()
    assert_healthy(box)


@needs_namespaces
def test_output_flood_is_truncated(box):
    limits = Limits(output_bytes=65536, wall_seconds=60)
    r = box.run("import sys\nsys.stdout.write('x' * 10**8)\nsys.stdout.flush()", limits=limits)
    assert r.output_truncated and len(r.stdout) == 65536 and r.signal == signal.SIGKILL
    r = box.run("import sys\nwhile True:\n    print('e' * 1000, file=sys.stderr)", limits=limits)
    assert r.output_truncated and len(r.stderr) == 65536
    assert_healthy(box)


@needs_namespaces
def test_segfault_is_reported_as_a_signal(box):
    r = box.run("import ctypes; ctypes.string_at(0)")
    assert r.signal == signal.SIGSEGV and r.exit_code is None and r.error is None
    assert_healthy(box)


@needs_namespaces
def test_file_size_limit(box):
    r = box.run("open('big', 'wb').write(b'x' * (32 << 20))", limits=Limits(file_size_mb=1))
    assert not r.ok and (r.signal == signal.SIGXFSZ or "File too large" in r.stderr), r
    assert_healthy(box)


@needs_namespaces
def test_a_killed_worker_is_restarted(box):
    python_workers = []  # the zygotes (their idle runners die with them)
    for pid in box.worker_pids():
        procs = processes()
        for p in descendants(pid):
            if p not in procs or procs[p][0] not in procs:
                continue  # a runner that came or went since the snapshot
            argv = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
            parent = Path(f"/proc/{procs[p][0]}/cmdline").read_bytes().split(b"\0")
            is_worker = os.path.basename(argv[0]) != b"bwrap" and any(
                b"worker.py" in a for a in argv
            )
            if is_worker and os.path.basename(parent[0]) == b"bwrap":  # a zygote, not a runner
                python_workers.append(p)
    assert len(python_workers) == box.workers
    for p in python_workers:
        os.kill(p, signal.SIGKILL)
    for _ in range(box.workers):  # it died while idle: the program runs on a fresh worker
        r = box.run("print(6*7)")
        assert r.ok and r.stdout == "42\n" and r.error is None, r
    assert_healthy(box)


@needs_namespaces
def test_a_worker_killed_during_a_program_gives_an_error_result(box):
    before = set(box.worker_pids())
    result: list[ExecResult] = []
    t = threading.Thread(
        target=lambda: result.append(
            box.run("import time; print('start', flush=True); time.sleep(60)")
        )
    )
    t.start()

    def busy_worker() -> int | None:
        for pid in box.worker_pids():
            if pid is not None and len(descendants(pid)) > 3:  # init, zygote, runner, program
                return pid
        return None

    assert wait_until(lambda: busy_worker() is not None, 60)
    os.killpg(busy_worker(), signal.SIGKILL)
    t.join(timeout=120)
    assert result and result[0].error and not result[0].ok
    assert_healthy(box)
    assert set(box.worker_pids()) != before


@needs_namespaces
def test_a_hung_worker_is_replaced(box, monkeypatch):
    monkeypatch.setattr(sandbox_module, "REPLY_GRACE_SECONDS", 1.0)

    def pythons(pid: int) -> list[int]:  # the zygote, then its idle runner
        return [
            p
            for p in descendants(pid)
            if os.path.basename(Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0]) != b"bwrap"
        ]

    stopped = []
    for pid in box.worker_pids():
        # Wait for the idle runner, stop the zygote first (it forks no runner after that),
        # then everything under it: the whole slot is frozen, none of it in transit.
        assert wait_until(lambda pid=pid: len(pythons(pid)) == 2), descendants(pid)
        zygote = pythons(pid)[0]
        os.kill(zygote, signal.SIGSTOP)
        stopped.append(zygote)
        for p in descendants(zygote):
            os.kill(p, signal.SIGSTOP)
            stopped.append(p)
    assert len(stopped) == 2 * box.workers  # each zygote and its runner
    for _ in range(box.workers):  # no answer: each hung worker is killed and replaced
        r = box.run("print(6*7)", limits=Limits(wall_seconds=1))
        assert r.ok and r.stdout == "42\n", r

    def gone(p: int) -> bool:  # exited (a zombie not yet reaped counts as gone)
        try:
            return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    assert wait_until(lambda: all(gone(p) for p in stopped)), [p for p in stopped if not gone(p)]
    assert_healthy(box)


@needs_namespaces
def test_host_files_in_private_places_are_hidden(box, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    secret.chmod(0o644)
    code = (
        "import os\n"
        f"for path in ({str(secret)!r}, '/run', '/home', '/root'):\n"
        "    try:\n"
        "        print(path, open(path).read() if os.path.isfile(path) else os.listdir(path))\n"
        "    except OSError as e:\n"
        "        print(path, type(e).__name__)\n"
    )
    r = box.run(code)
    assert r.ok and SECRET not in r.stdout, r
    lines = r.stdout.splitlines()
    assert lines[0] == f"{secret} FileNotFoundError"
    assert lines[1] == "/run []"


def test_stdin_is_empty(box):
    r = box.run("input()")
    assert r.exit_code == 1 and "EOFError" in r.stderr


def test_a_forked_copy_neither_uses_nor_kills_the_parents_workers(box):
    box.run("print(1)")
    pid = os.fork()
    if pid == 0:  # the child: refuses to use the parent's workers, and close() spares them
        code = 1
        try:
            try:
                box.run("print(1)")
            except SandboxError:
                box.close()
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert_healthy(box)


@needs_namespaces
def test_python_bound_back_under_tmp_survives_the_wipe_and_attacks(monkeypatch):
    """A checkout or venv under /tmp is mounted back inside the worker's private /tmp: the
    wipe after each program, and a program that tries to delete, lock or litter the folders
    leading to it, must leave it reachable for the next program (a CI clone under /tmp once
    broke ``import numpy`` for every program after the first)."""
    top = Path(tempfile.mkdtemp(dir="/tmp", prefix="ttscale-keep-"))
    try:
        lib = top / "deep" / "lib"
        lib.mkdir(parents=True)
        (lib / "keepmod.py").write_text("VALUE = 7\n")
        monkeypatch.setenv("PYTHONPATH", str(lib))
        monkeypatch.setenv("TTSCALE_SANDBOX", "")
        attack = (
            "import os, shutil\n"
            f"top, deep = {str(top)!r}, {str(top / 'deep')!r}\n"
            "for d in (deep, top):\n"
            "    try: open(os.path.join(d, 'stray'), 'w').close()\n"
            "    except OSError: pass\n"
            "shutil.rmtree('/tmp', ignore_errors=True)\n"
            "for d in (deep, top):\n"
            "    try: os.chmod(d, 0)\n"
            "    except OSError: pass\n"
            "print('done')\n"
        )
        probe = (
            "import os, keepmod\n"
            f"print(keepmod.VALUE, sorted(os.listdir({str(top)!r})),"
            f" sorted(os.listdir({str(top / 'deep')!r})))\n"
        )
        with Sandbox(workers=1) as sandbox:
            for _ in range(2):
                first = sandbox.run(attack)
                assert first.ok and first.stdout == "done\n", first
                r = sandbox.run(probe)
                assert r.ok and r.stdout == "7 ['deep'] ['lib']\n", r
    finally:
        shutil.rmtree(top, ignore_errors=True)
