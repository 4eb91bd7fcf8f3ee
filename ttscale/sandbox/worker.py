"""The sandbox zygote: imports sympy and numpy once, then forks one child per program.

Run inside the sandbox by ``ttscale.sandbox.sandbox`` as ``python -P -B worker.py CONFIG``
(by path, so that nothing of ``ttscale`` is imported here: this file is self-contained,
stdlib plus the preloaded modules). It never runs model code itself.

Protocol, over the worker's stdin/stdout (moved to private fds at start; fd 1 then points
at stderr so a stray print cannot corrupt it): each message is a 4-byte big-endian length
and a UTF-8 JSON object.

- worker -> host ``{"type": "ready", ...}`` once the preload is done.
- host -> worker ``{"type": "run", "code": str, "limits": {...}}``.
- worker -> host ``{"type": "started", "pid": int}`` right after the fork (the host knows
  from it whether the program started at all), then ``{"type": "result", ...}`` with the
  ``ExecResult`` fields (plus ``restart: true`` when this worker should be replaced).

The zygote itself never reads a request nor a program's output: for each request it forks
a *runner* ahead of time, and the runner reads the request, forks the program from itself,
supervises it, replies and exits. So every program starts from the pristine preloaded image
plus its own request only: no bytes of an earlier program's code or output (a grading run's
hidden tests, another user's request) survive in memory a later program could scan. The
runner is forked while the slot is idle, so it costs no start-up time.

Per program, the child: gets its own session and process group, a fresh work directory
(mode 700, owned by the program uid; also its ``HOME`` and ``TMPDIR``), drops to the slot's
uid (setgroups, setresgid, setresuid) with ``PR_SET_NO_NEW_PRIVS``, no core dumps and a
seccomp filter (see below), keeps only fds 0 (``/dev/null``), 1 and 2 (pipes), gets its
rlimits and runs the code with ``exec`` in a fresh ``__main__`` namespace (exit code 0, 1
with the traceback on stderr for an uncaught exception, or ``SystemExit``'s). The worker
caps each stream at ``output_bytes`` and the wall time at ``wall_seconds`` (SIGKILL to the
group), then sweeps: every process left in the pid namespace (or of the program uid,
without one) is killed before the reply, and the work directory (plus everything in the
sandbox's private ``/tmp`` and ``/dev/shm``) is removed.

``RLIMIT_AS`` counts from the child's address space at fork (the preloaded modules and their
reservations, typically a few hundred MB): the limit is that size plus ``memory_mb``.
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import io
import json
import linecache
import math
import os
import resource
import select
import shutil
import signal
import struct
import sys
import time
import traceback

HEADER = struct.Struct(">I")
MAX_MESSAGE = 256 << 20
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
SWEEP_SECONDS = 10.0
"""How long the sweep may take before the worker asks to be replaced."""

_libc = ctypes.CDLL(None, use_errno=True)

# ---- seccomp ----------------------------------------------------------------------------
# A small syscall filter on top of the namespaces, installed in each program's process: no
# new namespaces (unshare, setns, namespace flags to clone), no mounts, no ptrace, no kernel
# keyrings, bpf, perf, userfaultfd or io_uring (rarely needed, often exploited), and sockets
# only of the internet families (a unix socket on disk is reachable across network
# namespaces; socketpair stays allowed for multiprocessing). x86_64 and aarch64 only.

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# name: (x86_64, aarch64); None where the call does not exist.
_DENIED = {
    "ptrace": (101, 117),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "unshare": (272, 97),
    "setns": (308, 268),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "keyctl": (250, 219),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "name_to_handle_at": (303, 264),
    "open_by_handle_at": (304, 265),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "acct": (163, 89),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "reboot": (169, 142),
    "syslog": (103, 116),
    "quotactl": (179, 60),
    "modify_ldt": (154, None),
}
_CLONE, _CLONE3, _SOCKET = (56, 220), (435, 435), (41, 198)
_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_AF_INET, _AF_INET6 = 2, 10


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _seccomp_program() -> list[tuple[int, str | int, str | int, int]] | None:
    """The filter as (code, jump-if-true, jump-if-false, k); labels resolved by the caller."""
    machine = os.uname().machine
    if machine not in _ARCH:
        return None
    col = 0 if machine == "x86_64" else 1
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    errno_eperm, errno_enosys = 0x00050000 | 1, 0x00050000 | 38
    prog: list[tuple[int, str | int, str | int, int]] = [
        (ld, 0, 0, 4),  # seccomp_data.arch
        (jeq, 0, "kill", _ARCH[machine]),
        (ld, 0, 0, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":
        prog.append((jge, "enosys", 0, 0x40000000))  # the x32 ABI
    prog += [
        (jeq, "clone", 0, _CLONE[col]),
        (jeq, "enosys", 0, _CLONE3[col]),  # flags unreadable here; libc falls back to clone
        (jeq, "socket", 0, _SOCKET[col]),
    ]
    prog += [(jeq, "eperm", 0, nrs[col]) for nrs in _DENIED.values() if nrs[col] is not None]
    prog += [
        (ret, 0, 0, allow),
        ("clone", 0, 0, 0),
        (ld, 0, 0, 16),  # args[0], low 32 bits: the clone flags
        (jset, "eperm", "allow", _NAMESPACE_FLAGS),
        ("socket", 0, 0, 0),
        (ld, 0, 0, 16),  # args[0]: the address family
        (jeq, "allow", 0, _AF_INET),
        (jeq, "allow", "eperm", _AF_INET6),
        ("allow", 0, 0, 0),
        (ret, 0, 0, allow),
        ("eperm", 0, 0, 0),
        (ret, 0, 0, errno_eperm),
        ("enosys", 0, 0, 0),
        (ret, 0, 0, errno_enosys),
        ("kill", 0, 0, 0),
        (ret, 0, 0, kill),
    ]
    return prog


def _assemble(prog: list) -> ctypes.Array | None:
    labels, code = {}, []
    for ins in prog:
        if isinstance(ins[0], str):
            labels[ins[0]] = len(code)
        else:
            code.append(ins)
    out = (_SockFilter * len(code))()
    for i, (op, jt, jf, k) in enumerate(code):
        jt = labels[jt] - i - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - i - 1 if isinstance(jf, str) else jf
        out[i] = _SockFilter(op, jt, jf, k)
    return out


_FILTER = None if (p := _seccomp_program()) is None else _assemble(p)


def install_seccomp() -> None:
    """Install the filter in this process (needs ``PR_SET_NO_NEW_PRIVS`` first)."""
    if _FILTER is None:
        raise OSError(0, f"no seccomp filter for {os.uname().machine}")
    prog = _SockFprog(len(_FILTER), _FILTER)
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def seccomp_works() -> bool:
    """Install the filter in a throwaway child and check that it denies what it should."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        ok = False
        try:
            _prctl(PR_SET_NO_NEW_PRIVS, 1)
            install_seccomp()
            import socket

            socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
            try:
                socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            except PermissionError:
                denied = _libc.unshare(0x10000000) == -1  # CLONE_NEWUSER
                ok = denied and ctypes.get_errno() == 1  # EPERM
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


class HostGone(Exception):
    """The host closed the protocol pipe: stop everything and exit."""


def read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        b = os.read(fd, n - got)
        if not b:
            return None
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def read_message(fd: int) -> dict | None:
    head = read_exact(fd, HEADER.size)
    if head is None:
        return None
    (size,) = HEADER.unpack(head)
    if size > MAX_MESSAGE:
        raise ValueError(f"message of {size} bytes")
    body = read_exact(fd, size)
    return None if body is None else json.loads(body)


def write_message(fd: int, obj: dict) -> None:
    data = json.dumps(obj).encode()
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option})")


def _vmsize_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _uid_of(pid: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _preload(names: list[str]) -> list[str]:
    """Import ``names`` and warm the paths a typical program takes first; return failures."""
    failed = []
    for name in names:
        try:
            __import__(name)
        except Exception as e:  # a missing optional module must not stop the worker
            failed.append(f"{name}: {type(e).__name__}: {e}")
    if "sympy" in sys.modules:
        try:
            import sympy

            x = sympy.Symbol("x")
            str(sympy.Rational(1, 3) + sympy.Rational(1, 6))
            sympy.solve(sympy.sympify("x**2 - 4"), x)
            sympy.simplify(sympy.sin(x) ** 2 + sympy.cos(x) ** 2)
            sympy.latex(sympy.sqrt(8) / 3)
        except Exception as e:
            failed.append(f"sympy warm-up: {type(e).__name__}: {e}")
    if "numpy" in sys.modules:
        import numpy

        str(numpy.linalg.solve(numpy.eye(2), numpy.ones(2)))
    return failed


class Worker:
    def __init__(self, config: dict) -> None:
        self.uid: int | None = config.get("uid")
        self.gid: int | None = config.get("gid", self.uid)
        self.pidns: bool = config["pidns"]
        self.workroot: str = config["workroot"]
        self.wipe: list[str] = config.get("wipe", [])
        self.keep: list[str] = [os.path.normpath(k) for k in config.get("keep", [])]
        """Mount points inside a wiped root (Python bound back under /tmp): never wiped."""
        self.roots = {os.path.normpath(d) for d in (self.workroot, *self.wipe)}
        self.on_way: set[str] = set()
        """Folders between a wiped root and a kept mount point: emptied, never removed."""
        for k in self.keep:
            d = os.path.dirname(k)
            while d not in self.roots and d != "/":
                self.on_way.add(d)
                d = os.path.dirname(d)
        self.count = 0
        self.seccomp = False
        self.zygote = os.getpid()
        """Never signalled by a sweep (the runners are its children)."""
        # The protocol moves to private fds; 0 becomes /dev/null and 1 goes to stderr.
        self.proto_in, self.proto_out = os.dup(0), os.dup(1)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(2, 1)
        os.close(null)

    # ---- one program -------------------------------------------------------------------

    def run(self, req: dict) -> dict:
        limits = req["limits"]
        self.count += 1
        # Unique per program: runners of different workers share pid numbers (each worker
        # has its own pid namespace) and each runner is a fresh fork (count restarts).
        wd = os.path.join(self.workroot, f"p{os.getpid()}-{self.count}-{os.urandom(6).hex()}")
        r_out, w_out = os.pipe()
        r_err, w_err = os.pipe()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 70
            try:
                code = self.child(req["code"], limits, wd, w_out, w_err)
            except BaseException:
                try:
                    os.write(2, b"sandbox: program setup failed\n")
                    traceback.print_exc()
                    sys.stderr.flush()
                except BaseException:
                    pass
            finally:
                os._exit(code)
        os.close(w_out)
        os.close(w_err)
        try:
            write_message(self.proto_out, {"type": "started", "pid": pid})
            reply = self.supervise(pid, r_out, r_err, limits, t0)
        except (HostGone, OSError):
            self.kill_all(pid)
            raise HostGone from None
        swept = self.sweep()
        intact = self.clean(wd)
        if not swept:
            reply["error"] = "processes of the program survived the sweep; worker replaced"
            reply["restart"] = True
        elif not intact:
            reply["restart"] = True  # a mount point is gone: the next program needs a fresh one
        return reply

    def supervise(self, pid: int, r_out: int, r_err: int, limits: dict, t0: float) -> dict:
        cap = int(limits["output_bytes"])
        deadline = t0 + float(limits["wall_seconds"])
        bufs = {r_out: bytearray(), r_err: bytearray()}
        poller = select.poll()
        for fd in bufs:
            poller.register(fd, select.POLLIN)
        poller.register(self.proto_in, select.POLLIN)
        try:
            pidfd = os.pidfd_open(pid)
            poller.register(pidfd, select.POLLIN)
        except (AttributeError, OSError):
            pidfd = None
        end = None
        timed_out = truncated = killed = False
        open_pipes = set(bufs)
        # The program is left a zombie (WNOWAIT) until the end: its pid, and the process
        # group named after it, cannot be reused by another process while we signal them.
        while end is None or open_pipes:
            if end is None:
                exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                if exited is not None:
                    end = time.monotonic()
                    if pidfd is not None:
                        poller.unregister(pidfd)
                        os.close(pidfd)
                        pidfd = None
                    # The program is over: whatever it left behind goes now, so the pipes
                    # its leftovers hold reach EOF.
                    self.kill_all(pid)
                    killed = True
                    continue
            now = time.monotonic()
            if not killed and now >= deadline:
                timed_out = killed = True
                self.kill_all(pid)
            if killed:
                self.kill_all(pid)  # cheap; a fork that raced the previous kill dies here
                wait_ms = 20 if end is None else 5
            elif pidfd is None:
                wait_ms = max(0, min(20, int((deadline - now) * 1000) + 1))
            else:
                wait_ms = max(0, int((deadline - now) * 1000) + 1)
            for fd, _ in poller.poll(wait_ms):
                if fd == self.proto_in:
                    raise HostGone
                if fd == pidfd:
                    continue
                data = os.read(fd, 1 << 16)
                if not data:
                    poller.unregister(fd)
                    os.close(fd)
                    open_pipes.discard(fd)
                    continue
                buf = bufs[fd]
                room = cap - len(buf)
                if len(data) > room:
                    buf += data[: max(room, 0)]
                    if not truncated:
                        truncated = True
                    if not killed:
                        killed = True
                        self.kill_all(pid)
                else:
                    buf += data
        _, status, rusage = os.wait4(pid, 0)
        seconds = end - t0
        exit_code = sig = None
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
        else:
            exit_code = os.WEXITSTATUS(status)
        cpu = rusage.ru_utime + rusage.ru_stime
        cpu_limit = math.ceil(float(limits["cpu_seconds"]))
        if sig == signal.SIGXCPU or (
            sig == signal.SIGKILL and not timed_out and not truncated and cpu >= cpu_limit
        ):
            timed_out = True
        return {
            "type": "result",
            "stdout": bufs[r_out].decode("utf-8", "replace"),
            "stderr": bufs[r_err].decode("utf-8", "replace"),
            "exit_code": exit_code,
            "signal": sig,
            "timed_out": timed_out,
            "output_truncated": truncated,
            "seconds": seconds,
            "error": None,
        }

    # ---- cleanup ---------------------------------------------------------------------

    def kill_all(self, pid: int) -> None:
        """SIGKILL the program's group and everything else it may have started."""
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        """Kill what is left of the program: with a uid of its own, every process of that
        uid at once (fork-bomb safe); else, in a pid namespace, every process but its init,
        the zygote and this runner (one slot runs one program at a time)."""
        if self.uid is not None:
            if self._uid_pids():
                self._kill_uid()
        elif self.pidns:
            for p in self._leftovers():
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass

    def _uid_pids(self) -> list[int]:
        return [p for p in _pids() if _uid_of(str(p)) == self.uid]

    def _kill_uid(self) -> None:
        """kill(-1) as the program uid: every process of that uid at once (fork-bomb safe)."""
        helper = os.fork()
        if helper == 0:  # pragma: no cover - runs in the helper
            try:
                os.setresgid(self.gid, self.gid, self.gid)
                os.setresuid(self.uid, self.uid, self.uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(helper, 0)

    def _leftovers(self) -> list[int]:
        keep = (1, self.zygote, os.getpid())
        if self.pidns:
            return [p for p in _pids() if p not in keep and _uid_of(str(p)) is not None]
        if self.uid is not None:
            return self._uid_pids()
        return []

    def sweep(self) -> bool:
        """Kill until nothing of the program is left; ``False`` if that did not happen."""
        give_up = time.monotonic() + SWEEP_SECONDS
        delay = 0.001
        while True:
            while True:  # reap our own children (the program, a helper)
                try:
                    if os.waitpid(-1, os.WNOHANG)[0] == 0:
                        break
                except ChildProcessError:
                    break
            left = self._leftovers()
            if not left:
                return True
            if time.monotonic() > give_up:
                print(f"sweep: processes left {left}", file=sys.stderr, flush=True)
                return False
            self._kill_leftovers()
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def clean(self, wd: str) -> bool:
        """Remove the program's work directory and empty the wiped roots (private tmpfs:
        nothing a program wrote may reach the next one), except the mount points in
        ``keep`` and the folders leading to them. False when a mount point is gone."""

        def force(func, path, _exc):  # a program may leave a 000 directory behind
            try:
                parent = os.path.normpath(os.path.dirname(path))
                if parent not in self.roots and parent not in self.on_way:  # never lock them
                    os.chmod(parent, 0o700)
                os.chmod(path, 0o700)
                func(path)
            except OSError:
                pass

        def empty(d: str) -> None:
            try:
                names = os.listdir(d)
            except OSError:
                return
            for name in names:
                path = os.path.join(d, name)
                if path in self.keep:
                    continue
                if path in self.on_way and os.path.isdir(path) and not os.path.islink(path):
                    try:
                        os.chmod(path, 0o755)  # as bwrap made it, whatever a program did
                    except OSError:
                        pass
                    empty(path)
                elif os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, onerror=force)
                else:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass

        shutil.rmtree(wd, onerror=force)
        for d in self.wipe:
            empty(os.path.normpath(d))
        return all(os.path.ismount(k) for k in self.keep)

    # ---- the child ---------------------------------------------------------------------

    def child(self, code: str, limits: dict, wd: str, w_out: int, w_err: int) -> int:
        """Set up the program's process and run it; the return value is its exit code."""
        os.setsid()
        os.dup2(w_out, 1)
        os.dup2(w_err, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.mkdir(wd, 0o700)
        if self.uid is not None:
            os.chown(wd, self.uid, self.gid)
        os.chdir(wd)
        if self.uid is not None:
            os.setgroups([])
            os.setresgid(self.gid, self.gid, self.gid)
            os.setresuid(self.uid, self.uid, self.uid)
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        _prctl(PR_SET_DUMPABLE, 0)  # no core dumps, no ptrace by the program's own uid
        if self.seccomp:
            install_seccomp()
        # Keep 0, 1, 2 only: the protocol fds must not reach the program. The Python
        # objects that own closed fds stay referenced until os._exit, so none is closed
        # twice.
        os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        for sig in signal.valid_signals():
            if sig in (signal.SIGKILL, signal.SIGSTOP):
                continue
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as in any Python process
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.environ.update(HOME=wd, TMPDIR=wd, PWD=wd)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8")
        sys.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False),
            encoding="utf-8",
            errors="backslashreplace",
            line_buffering=True,
        )
        sys.argv = ["<program>"]
        sys.path.insert(0, "")  # as `python -c`: the work directory is importable
        nproc = int(limits["max_processes"])
        if self.uid is None:
            # No uid of its own: RLIMIT_NPROC counts all of this user's processes, so the
            # program's allowance counts from those that already exist.
            me = os.getuid()
            nproc += sum(_uid_of(str(p)) == me for p in _pids())
        cpu = math.ceil(float(limits["cpu_seconds"]))
        for res, value in (
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_CPU, (cpu, cpu + 1)),
            (resource.RLIMIT_NPROC, nproc),
            (resource.RLIMIT_FSIZE, int(limits["file_size_mb"]) << 20),
            (resource.RLIMIT_NOFILE, int(limits["open_files"])),
            (resource.RLIMIT_AS, _vmsize_bytes() + (int(limits["memory_mb"]) << 20)),
        ):
            soft, hard = value if isinstance(value, tuple) else (value, value)
            resource.setrlimit(res, (soft, hard))
        linecache.cache["<program>"] = (len(code), None, code.splitlines(True), "<program>")
        g = {"__name__": "__main__", "__builtins__": __builtins__}
        atexit._clear()  # the worker's exit handlers are not the program's
        status = 0
        try:
            exec(compile(code, "<program>", "exec"), g)
        except SystemExit as e:
            status = _exit_status(e)
        except BaseException as e:
            tb = e.__traceback__
            # Drop this function's frame: the traceback reads as `python -c` would print it.
            traceback.print_exception(type(e), e, tb.tb_next if tb else None)
            status = 1
        # What interpreter shutdown would do: wait for non-daemon threads, run atexit.
        try:
            if "threading" in sys.modules:
                sys.modules["threading"]._shutdown()
            atexit._run_exitfuncs()
        except BaseException:
            pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                if status == 0:
                    status = 120  # as Python does when stdout cannot be flushed at exit
        return status


def _exit_status(e: SystemExit) -> int:
    code = e.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    config = json.loads(argv[1])
    worker = Worker(config)
    if not config["pidns"]:
        # A plain subprocess of the host (rlimits mode): die with it.
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != config.get("host_pid"):
            return 0
    failed = _preload(config.get("preload", []))
    worker.seccomp = seccomp_works()
    gc.collect()
    gc.freeze()  # the children fork from here: keep the preloaded objects' pages shared
    _prctl(PR_SET_DUMPABLE, 0)
    write_message(
        worker.proto_out,
        {
            "type": "ready",
            "pid": os.getpid(),
            "vmsize_mb": _vmsize_bytes() >> 20,
            "preload_failed": failed,
            "seccomp": worker.seccomp,
            "python": sys.version.split()[0],
        },
    )
    while True:
        ask_r, ask_w = os.pipe()
        ack_r, ack_w = os.pipe()
        runner = os.fork()
        if runner == 0:  # pragma: no cover - runs in the runner
            os.close(ask_r)
            os.close(ack_w)
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # no orphan runner serves a request
            if os.getppid() != worker.zygote:
                os._exit(RUNNER_DONE)
            os._exit(serve_one(worker, ask_w, ack_r))
        os.close(ask_w)
        os.close(ack_r)
        # The runner asks before it starts a program; a zygote killed meanwhile never
        # answers (its end closes as it dies), so the runner gives up and the host sees the
        # worker die before the program started, and retries it on a fresh worker.
        if os.read(ask_r, 1):
            os.write(ack_w, b"1")
        os.close(ask_r)
        os.close(ack_w)
        _, status = os.waitpid(runner, 0)
        code = os.waitstatus_to_exitcode(status)
        if code == RUNNER_NEXT:
            continue
        if code != RUNNER_DONE:
            print(f"runner failed (exit status {code})", file=sys.stderr, flush=True)
        return 0 if code == RUNNER_DONE else 1


RUNNER_NEXT, RUNNER_DONE = 0, 3
"""Runner exit codes: served one request (fork the next runner); the host is gone."""


def serve_one(worker: Worker, ask: int, ack: int) -> int:
    """The runner: one request, read here and never by the zygote (see the module doc)."""
    try:
        req = read_message(worker.proto_in)
    except (OSError, ValueError) as e:
        print(f"protocol error: {e}", file=sys.stderr, flush=True)
        return 1
    if req is None:
        return RUNNER_DONE
    try:  # is the zygote still alive? (see main)
        os.write(ask, b"?")
        alive = os.read(ack, 1) == b"1"
    except OSError:
        alive = False
    if not alive:
        return RUNNER_DONE
    os.close(ask)
    os.close(ack)
    try:
        reply = worker.run(req)
    except HostGone:
        return RUNNER_DONE
    try:
        write_message(worker.proto_out, reply)
    except OSError:
        return RUNNER_DONE
    return RUNNER_NEXT


if __name__ == "__main__":
    sys.exit(main(sys.argv))
