"""Host side of the sandbox: a pool of warm workers that run model-written programs.

Each worker slot is one bubblewrap sandbox (or, opt-in, one plain subprocess) running
``worker.py``, which has sympy and numpy imported and forks a fresh child per program, so a
program starts in milliseconds instead of paying the interpreter and the sympy import
(0.5-1 s) each time. Programs never run in this process.

A slot runs one program at a time; ``Sandbox(workers=N)`` runs N at once and queues the
rest. A worker that dies or stops answering (no reply within ``wall_seconds + 10`` s) is
killed and restarted: that program gets ``ExecResult(error=...)``, the next one runs
normally. A program's own failure (exception, crash, timeout, output flood) is never raised.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import dataclasses
import errno
import fcntl
import functools
import grp
import json
import logging
import os
import pwd
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import Literal

from ttscale.errors import ConfigError, SandboxError, SandboxUnavailable, describe
from ttscale.sandbox.isolation import (
    Isolation,
    bwrap_argv,
    detect_isolation,
    sandbox_env,
    tmp_mounts,
    worker_argv,
)
from ttscale.sandbox.worker import HEADER, MAX_MESSAGE
from ttscale.types import ExecResult

__all__ = [
    "ExecResult",
    "Limits",
    "Sandbox",
    "SharedSandbox",
    "close_default_sandbox",
    "default_sandbox",
]

log = logging.getLogger(__name__)

WEAK_FIX = (
    "install bubblewrap (apt-get install bubblewrap) or pass allow_weak=True / set "
    "TTSCALE_SANDBOX=rlimits to run with resource limits only (no network or filesystem "
    "isolation)"
)
START_SECONDS = 120.0
"""How long a worker may take to start (interpreter + preload) on a loaded host."""
REPLY_GRACE_SECONDS = 10.0
"""A worker that has not replied ``wall_seconds`` + this after a program started is dead."""
FIRST_UID = 61000
"""Program uids are claimed from here (Debian leaves 60000-64999 to local allocation)."""
LAST_UID = 64999
MAX_CODE_BYTES = 16 << 20
MAX_OUTPUT_BYTES = 32 << 20


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of one program."""

    cpu_seconds: float = 10.0
    """CPU time (``RLIMIT_CPU``, rounded up to whole seconds; SIGXCPU, then SIGKILL 1 s
    later). Counts as ``timed_out``."""
    wall_seconds: float = 20.0
    """Wall-clock time; then the program's process group and everything it started are
    killed (``timed_out``)."""
    memory_mb: int = 2048
    """Address space (``RLIMIT_AS``) the program may add to what it inherits at fork: the
    limit is the worker's size with sympy and numpy loaded (a few hundred MB of mostly
    shared mappings) plus this. Per process: a program may fork up to ``max_processes``."""
    max_processes: int = 32
    """Processes and threads (``RLIMIT_NPROC``; the slot's own uid, so it caps only this
    program)."""
    file_size_mb: int = 16
    """Largest file the program may write (``RLIMIT_FSIZE``)."""
    open_files: int = 64
    """Open file descriptors (``RLIMIT_NOFILE``)."""
    output_bytes: int = 65536
    """Bytes kept of stdout and of stderr each (at most 32 MiB); a program writing more is
    killed and ``output_truncated`` is set."""

    def __post_init__(self) -> None:
        if isinstance(self.output_bytes, int) and self.output_bytes > MAX_OUTPUT_BYTES:
            raise ConfigError(
                f"Limits.output_bytes must be <= {MAX_OUTPUT_BYTES} (32 MiB); "
                f"got {self.output_bytes}"
            )
        minimum = {
            "cpu_seconds": 0.001,
            "wall_seconds": 0.001,
            "memory_mb": 16,
            "max_processes": 1,
            "file_size_mb": 0,
            "open_files": 8,
            "output_bytes": 1,
        }
        for name, low in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
                raise ConfigError(f"Limits.{name} must be a number >= {low}; got {describe(value)}")

    def to_dict(self) -> dict[str, float | int]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _failure(error: str) -> ExecResult:
    return ExecResult("", "", None, None, False, False, 0.0, error)


class _WorkerDied(Exception):
    """The worker closed its pipe or stopped answering."""


class _Slot:
    """One worker process (one bwrap sandbox). Used by one thread at a time."""

    def __init__(self, index: int, argv: list[str], env: dict[str, str] | None, **info) -> None:
        self.index = index
        self.argv = argv
        self.env = env
        self.uid: int | None = info.get("uid")
        self.proc: subprocess.Popen | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self.program_pgid: int | None = None  # rlimits mode: the running program's group
        self.pidns: bool = info["pidns"]
        self.lock = threading.Lock()
        self.closed = False
        self.seccomp = False

    # ---- process -----------------------------------------------------------------------

    def start(self, spawn: ThreadPoolExecutor) -> None:
        # Started from the sandbox's long-lived spawner thread: bwrap's --die-with-parent
        # (and the rlimits worker's PDEATHSIG) fire when the *thread* that forked them ends.
        if self.closed:
            raise SandboxError("the sandbox is closed")
        self.stderr_tail.clear()
        try:
            future = spawn.submit(
                subprocess.Popen,
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                start_new_session=True,
                cwd="/",
            )
        except RuntimeError as e:  # the spawner was shut down by close()
            raise SandboxError("the sandbox is closed") from e
        proc = future.result()
        self.proc = proc
        assert proc.stdin is not None
        os.set_blocking(proc.stdin.fileno(), False)  # see _send
        threading.Thread(
            target=self._drain_stderr, args=(proc,), daemon=True, name=f"sandbox-{self.index}"
        ).start()
        try:
            ready = self._read(proc, time.monotonic() + START_SECONDS)
        except _WorkerDied as e:
            self.kill()
            tail = "\n".join(self.stderr_tail) or "(nothing on stderr)"
            raise SandboxError(f"sandbox worker {self.index} did not start ({e}):\n{tail}") from e
        if ready.get("type") != "ready":
            self.kill()
            raise SandboxError(f"sandbox worker {self.index} sent {describe(ready)} at start")
        if ready.get("preload_failed"):
            log.warning("sandbox worker could not preload: %s", "; ".join(ready["preload_failed"]))
        if not ready.get("seccomp"):
            log.warning(
                "sandbox worker %d: the seccomp filter does not work here (%s); programs run "
                "with namespaces and rlimits only",
                self.index,
                os.uname().machine,
            )
        self.seccomp = bool(ready.get("seccomp"))
        log.debug("sandbox worker %d ready: %s", self.index, ready)

    def _drain_stderr(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(line)
            log.debug("sandbox worker %d: %s", self.index, line)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """Kill the worker (its whole sandbox) and, in rlimits mode, the program it ran."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        # The pipes are left to the Popen object: a thread may still be reading them (it
        # sees EOF now), and closing an fd under it could hand its number to another file.
        if not self.pidns:
            # Without a pid namespace the program outlives its worker: kill it too.
            if self.uid is not None:
                _kill_uid(self.uid)
            elif self.program_pgid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.program_pgid, signal.SIGKILL)
        self.program_pgid = None

    # ---- protocol ----------------------------------------------------------------------

    def _read_exact(self, fd: int, n: int, deadline: float) -> bytes:
        chunks, got = [], 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise _WorkerDied("no reply in time")
            b = os.read(fd, min(n - got, 1 << 20))
            if not b:
                raise _WorkerDied("the worker exited")
            chunks.append(b)
            got += len(b)
        return b"".join(chunks)

    def _read(self, proc: subprocess.Popen, deadline: float) -> dict:
        assert proc.stdout is not None
        try:
            fd = proc.stdout.fileno()
        except ValueError as e:  # closed under us by close()
            raise _WorkerDied("the worker was closed") from e
        try:
            (size,) = HEADER.unpack(self._read_exact(fd, HEADER.size, deadline))
            if size > MAX_MESSAGE:
                raise _WorkerDied(f"message of {size} bytes")
            return json.loads(self._read_exact(fd, size, deadline))
        except (OSError, ValueError) as e:  # includes a reply that is not JSON
            raise _WorkerDied(f"unreadable reply ({e})") from e

    def _send(self, proc: subprocess.Popen, obj: dict, deadline: float) -> None:
        """Write one message; a worker that stops reading cannot block us past ``deadline``."""
        assert proc.stdin is not None
        data = json.dumps(obj).encode()
        view = memoryview(HEADER.pack(len(data)) + data)
        try:
            fd = proc.stdin.fileno()
            while view:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([], [fd], [], left)[1]:
                    raise _WorkerDied("the worker stopped reading")
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    continue
        except (ValueError, OSError) as e:  # closed under us, or a broken pipe
            raise _WorkerDied(f"could not send ({e})") from e

    def run(self, code: str, limits: Limits, spawn: ThreadPoolExecutor) -> ExecResult:
        request = {"type": "run", "code": code, "limits": limits.to_dict()}
        for attempt in range(2):
            if not self.alive():
                if self.proc is not None:
                    self.kill()
                self.start(spawn)
            proc = self.proc
            assert proc is not None
            deadline = time.monotonic() + limits.wall_seconds + REPLY_GRACE_SECONDS
            try:
                self._send(proc, request, deadline)
                started = self._read(proc, deadline)
            except _WorkerDied as e:
                # The program never started: a worker that died while idle. Replace it and
                # try once more.
                log.warning("sandbox worker %d was dead (%s); restarting it", self.index, e)
                self.kill()
                if attempt:
                    return _failure(f"sandbox worker failed twice: {e}")
                continue
            self.program_pgid = started.get("pid") if not self.pidns else None
            try:
                reply = self._read(proc, deadline)
            except _WorkerDied as e:
                tail = "; ".join(list(self.stderr_tail)[-3:])
                self.kill()
                log.warning("sandbox worker %d died during a program: %s %s", self.index, e, tail)
                return _failure(f"sandbox worker died or hung during the program ({e}); restarted")
            self.program_pgid = None
            if reply.pop("restart", False):
                self.kill()
            return ExecResult.from_dict(reply)
        raise AssertionError("unreachable")


def _kill_uid(uid: int) -> None:
    """Kill every process of ``uid`` at once: ``kill -9 -1`` run as that uid.

    (Not a Python: the program uid may not be able to read an interpreter installed under
    a private home.)
    """
    kill = shutil.which("kill") or "/bin/kill"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [kill, "-9", "-1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=uid,
            group=uid,
            extra_groups=[],
            env={},
            timeout=30,
            check=False,
        )


def _uids_in_use() -> set[int]:
    """Real, effective, saved and filesystem uids of every process on the host."""
    used = set()
    for p in os.listdir("/proc"):
        if p.isdigit():
            with contextlib.suppress(OSError, ValueError), open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        used.update(int(x) for x in line.split()[1:])
                        break
    return used


def _claim_uids(n: int) -> tuple[list[int], list[int]]:
    """``n`` uids no account, group, process or other sandbox on this host uses.

    Returns the uids and the lock fds that hold them (released by closing the fds).
    """
    lock_dir = Path("/run/ttscale-sandbox")
    try:
        lock_dir.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        lock_dir = Path(tempfile.gettempdir()) / "ttscale-sandbox-uids"
        lock_dir.mkdir(mode=0o700, exist_ok=True)
    used = _uids_in_use()
    uids, fds = [], []
    for uid in range(FIRST_UID, LAST_UID + 1):
        if len(uids) == n:
            break
        if uid in used:
            continue
        with contextlib.suppress(KeyError):
            pwd.getpwuid(uid)
            continue
        with contextlib.suppress(KeyError):
            grp.getgrgid(uid)
            continue
        fd = os.open(lock_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                continue
            raise
        uids.append(uid)
        fds.append(fd)
    if len(uids) < n:
        for fd in fds:
            os.close(fd)
        raise SandboxError(f"no free program uid in {FIRST_UID}-{LAST_UID} for {n} workers")
    return uids, fds


def _shutdown(
    slots: list[_Slot],
    lock_fds: list[int],
    executors: list[ThreadPoolExecutor],
    workroot: str,
    owner: int,
) -> None:
    if os.getpid() != owner:
        return  # a forked copy: the workers belong to the parent process
    for slot in slots:
        slot.closed = True
        slot.kill()
    for fd in lock_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    lock_fds.clear()
    for ex in executors:
        ex.shutdown(wait=False, cancel_futures=True)
    if workroot:
        shutil.rmtree(workroot, ignore_errors=True)


class Sandbox:
    """Runs model-written Python programs isolated from this process and the host.

    Args:
        workers: Programs that run at once (one warm worker each, started on first use).
        limits: Default limits of each program (``run(..., limits=)`` overrides).
        isolation: ``auto`` (the best this host allows), ``namespaces`` (bubblewrap, or
            raise ``SandboxUnavailable``) or ``rlimits`` (resource limits only; needs the
            weak-mode opt-in below).
        allow_weak: Accept resource limits only (no network or filesystem isolation) when
            that is all the host allows. The environment variable ``TTSCALE_SANDBOX=rlimits``
            does the same. Never a downgrade where namespaces work, unless ``isolation`` is
            ``rlimits``.
        preload: Modules the workers import once, so programs import them instantly.

    Raises:
        SandboxUnavailable: Namespaces are required or weak mode was not opted into.

    Performance contract: programs start in milliseconds (a fork of a warm worker); give
    ``run_many`` all programs at once and they run over the workers concurrently.
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        limits: Limits = Limits(),
        isolation: Literal["auto", "namespaces", "rlimits"] = "auto",
        allow_weak: bool = False,
        preload: tuple[str, ...] = ("sympy", "numpy", "math", "fractions", "itertools"),
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be an integer >= 1; got {describe(workers)}")
        if isolation not in ("auto", "namespaces", "rlimits"):
            raise ConfigError(
                f"isolation must be 'auto', 'namespaces' or 'rlimits'; got {describe(isolation)}"
            )
        if not isinstance(limits, Limits):
            raise ConfigError(f"limits must be a Limits; got {describe(limits)}")
        self.limits = limits
        weak_ok = allow_weak or os.environ.get("TTSCALE_SANDBOX", "").lower() == "rlimits"
        found = detect_isolation()
        if isolation != "rlimits" and found.level == "namespaces":
            self.isolation = found
        elif isolation == "namespaces":
            raise SandboxUnavailable(
                f"namespaces isolation is not available here ({found.detail}); install "
                "bubblewrap (apt-get install bubblewrap)"
            )
        elif not weak_ok:
            raise SandboxUnavailable(
                f"this host cannot isolate programs ({found.detail}); {WEAK_FIX}"
            )
        else:
            self.isolation = _weak(found)
            log.warning(
                "SANDBOX IS WEAK: programs run with resource limits only, no network or "
                "filesystem isolation (%s)",
                self.isolation.detail,
            )
        self._owner = os.getpid()
        self._lock_fds: list[int] = []
        uids: list[int | None] = [None] * workers
        if self.isolation.uid_separation:
            claimed, self._lock_fds = _claim_uids(workers)
            uids = list(claimed)
        namespaces = self.isolation.level == "namespaces"
        self._workroot = ""
        if not namespaces:
            self._workroot = tempfile.mkdtemp(prefix="ttscale-sandbox-")
            os.chmod(self._workroot, 0o711)  # program uids reach their own dirs only
        self._slots: list[_Slot] = []
        for i, uid in enumerate(uids):
            config = {
                "uid": uid,
                "gid": uid,
                "pidns": namespaces,
                "workroot": "/tmp" if namespaces else self._workroot,
                "wipe": ["/tmp", "/dev/shm"] if namespaces else [],
                "keep": tmp_mounts() if namespaces else [],
                "preload": list(preload),
                "host_pid": os.getpid(),
            }
            argv = worker_argv(json.dumps(config))
            if namespaces:
                assert self.isolation.tool is not None
                user_ns = not self.isolation.uid_separation
                argv, env = bwrap_argv(self.isolation.tool, argv, user_namespace=user_ns), {}
            else:
                env = sandbox_env()
            self._slots.append(_Slot(i, argv, env, uid=uid, pidns=namespaces))
        self._idle: Queue[_Slot] = Queue()
        for slot in self._slots:
            self._idle.put(slot)
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="ttscale-sandbox-spawn")
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="ttscale-sandbox")
        self._closed = False
        self._finalizer = weakref.finalize(
            self,
            _shutdown,
            self._slots,
            self._lock_fds,
            [self._executor, self._spawner],
            self._workroot,
            self._owner,
        )

    # ---- running -----------------------------------------------------------------------

    def run(self, code: str, *, limits: Limits | None = None) -> ExecResult:
        """Run one program and wait for it. Thread-safe; blocks while all workers are busy.

        Raises:
            SandboxError: The sandbox is closed, or a worker cannot start at all.
        """
        if not isinstance(code, str):
            raise ConfigError(f"code must be a str; got {describe(code)}")
        if len(code.encode("utf-8", "surrogatepass")) > MAX_CODE_BYTES:
            raise ConfigError(f"code is over {MAX_CODE_BYTES >> 20} MB")
        limits = self.limits if limits is None else limits
        if not isinstance(limits, Limits):
            raise ConfigError(f"limits must be a Limits; got {describe(limits)}")
        if self._closed:
            raise SandboxError("the sandbox is closed")
        if os.getpid() != self._owner:
            raise SandboxError(
                "this Sandbox was created in another process (before a fork); create one "
                "here, or call default_sandbox() in this process"
            )
        slot = self._idle.get()
        try:
            if self._closed:
                raise SandboxError("the sandbox is closed")
            try:
                with slot.lock:
                    result = slot.run(code, limits, self._spawner)
            except SandboxError:
                if self._closed:
                    return _failure("the sandbox was closed during the program")
                raise
            if self._closed:
                return _failure("the sandbox was closed during the program")
            return result
        finally:
            self._idle.put(slot)

    async def arun(self, code: str, *, limits: Limits | None = None) -> ExecResult:
        """``run`` without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(self.run, code, limits=limits)
        )

    async def run_many(
        self, codes: Sequence[str], *, limits: Limits | None = None
    ) -> list[ExecResult]:
        """Run all programs concurrently over the workers; results in the order given."""
        return list(await asyncio.gather(*(self.arun(c, limits=limits) for c in codes)))

    def warm(self) -> None:
        """Start every worker now (in parallel) instead of at first use."""
        if self._closed:
            raise SandboxError("the sandbox is closed")

        def start(slot: _Slot) -> None:
            with slot.lock:
                if not slot.alive():
                    slot.kill()
                    slot.start(self._spawner)

        for f in [self._executor.submit(start, s) for s in self._slots]:
            f.result()

    @property
    def workers(self) -> int:
        return len(self._slots)

    def worker_pids(self) -> list[int | None]:
        """Host pids of the worker processes (bwrap's, in namespaces mode); for tests."""
        return [s.proc.pid if s.proc is not None else None for s in self._slots]

    # ---- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        """Kill the workers (and any program still running). Idempotent."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Sandbox(workers={len(self._slots)}, isolation={self.isolation.level!r})"


def _weak(found: Isolation) -> Isolation:
    """The isolation of rlimits mode (also when namespaces exist but were declined)."""
    if found.level == "rlimits":
        return found
    root = os.geteuid() == 0
    return Isolation(
        "rlimits",
        root,
        False,
        False,
        False,
        None,
        "rlimits only (chosen): "
        + ("a uid per worker slot and resource limits" if root else "resource limits only")
        + "; programs share the host's network and filesystem",
    )


class SharedSandbox:
    """One process-wide ``Sandbox`` (default settings): created on first ``get()``, closed
    at exit or by ``close()`` (the next ``get()`` starts a new one). One inherited through a
    fork is the parent's: the child gets its own."""

    def __init__(self) -> None:
        self._box: Sandbox | None = None
        self._lock = threading.Lock()
        self._atexit = False

    def get(self) -> Sandbox:
        with self._lock:
            if self._box is not None and self._box._owner != os.getpid():
                self._box = None  # inherited through a fork: the parent's, not ours to use
            if self._box is None:
                self._box = Sandbox()
                if not self._atexit:
                    atexit.register(self.close)
                    self._atexit = True
            return self._box

    def close(self) -> None:
        with self._lock:
            box, self._box = self._box, None
        if box is not None:
            box.close()


_DEFAULT = SharedSandbox()


def default_sandbox() -> Sandbox:
    """The process's shared sandbox (default settings), created on first use, closed at exit."""
    return _DEFAULT.get()


def close_default_sandbox() -> None:
    """Close the shared sandbox; the next ``default_sandbox()`` starts a new one."""
    _DEFAULT.close()
