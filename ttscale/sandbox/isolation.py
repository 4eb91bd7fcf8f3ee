"""What isolation this host allows for model-written programs, and the sandbox command line.

Three outcomes, best first:

- ``namespaces`` with a per-program uid (root and bubblewrap): each worker runs in private
  pid, network, ipc, uts (and cgroup) namespaces on a read-only view of ``/``; it keeps a few
  capabilities (never ``CAP_SYS_ADMIN``) only to drop each program to its own uid.
- ``namespaces`` through an unprivileged user namespace (bubblewrap as a normal user): the
  same namespaces, but programs run as the host user's uid inside them.
- ``rlimits`` (opt-in only): the same worker as a plain subprocess with resource limits; no
  network or filesystem isolation.

Each program also gets a seccomp filter (no new namespaces, mounts, ptrace, keyrings, bpf,
io_uring; sockets only of the internet families), no core dumps and ``PR_SET_NO_NEW_PRIVS``
(see ``worker.py``).

In namespaces mode the directories that usually hold secrets or sockets (``/root``,
``/home``, ``/run``, ``/tmp``, ``/var/tmp``, ``/mnt``, ``/media``, ``/srv``, ``$HOME``) are
replaced by empty tmpfs (read-only, except the private ``/tmp`` where the worker makes each
program's work directory), and only the Python installation and its site-packages inside
them are mounted back (read-only). Without that, a program dropped to its own uid could
not even read a Python installed under ``/root``, and a program could connect to a
world-writable unix socket under ``/run`` (unix sockets on disk are not covered by the
network namespace). Everything else world-readable on the host stays readable (read-only).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "WORKER_PATH",
    "Isolation",
    "bwrap_argv",
    "detect_isolation",
    "find_bwrap",
    "sandbox_env",
    "worker_argv",
]

log = logging.getLogger(__name__)

WORKER_PATH = str(Path(__file__).resolve().with_name("worker.py"))
"""The zygote, run by path (``python -P worker.py``): ``-m ttscale.sandbox.worker`` would
import the whole ``ttscale`` package (the api room, ~0.5 s and many modules) into it."""

HIDDEN_ROOTS = ("/tmp", "/var/tmp", "/root", "/home", "/run", "/mnt", "/media", "/srv")
"""Host directories replaced by empty tmpfs inside the sandbox (plus ``$HOME``)."""

TMP_MB = 512
"""Size of the sandbox's private ``/tmp`` (the programs' work directories live there)."""
SHM_MB = 64
"""Size of the sandbox's private ``/dev/shm``."""

# What the worker needs besides a namespace: drop each program to its uid (SETUID, SETGID,
# CHOWN its work dir), kill and sweep it (KILL), remove what it left (DAC_OVERRIDE, FOWNER).
_WORKER_CAPS = (
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_CHOWN",
    "CAP_KILL",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
)

_PROBE_UID = 65534  # nobody: the probe only checks that dropping to some uid works


@dataclass(frozen=True)
class Isolation:
    """What the sandbox actually uses on this host."""

    level: Literal["namespaces", "rlimits"]
    """``namespaces``: bubblewrap; ``rlimits``: resource limits only (weak, opt-in)."""
    uid_separation: bool
    """Each worker slot runs its programs under its own uid (needs root)."""
    network_isolated: bool
    """Programs get a private network namespace (no host services, not even 127.0.0.1)."""
    readonly_root: bool
    """Programs see a read-only ``/`` with secrets' usual places hidden."""
    pid_namespace: bool
    """Programs cannot see host processes, and a sweep kills everything they started."""
    tool: str | None
    """Path of ``bwrap`` when used."""
    detail: str
    """One human line (``ttscale doctor``)."""


def find_bwrap() -> str | None:
    """Path of bubblewrap, or ``None``."""
    return shutil.which("bwrap") or next(
        (p for p in ("/usr/bin/bwrap", "/usr/local/bin/bwrap") if os.access(p, os.X_OK)), None
    )


def sandbox_env() -> dict[str, str]:
    """The whole environment of a worker: nothing from the host but ``PYTHONPATH``.

    API keys and tokens in the host's environment never reach a program. Numeric libraries
    are kept single-threaded (forking a process that has BLAS threads is unsafe).
    """
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if os.path.isabs(p)]
    if extra:
        env["PYTHONPATH"] = os.pathsep.join(extra)
    return env


def worker_argv(config: str) -> list[str]:
    """The worker's command line (``-P``: the worker's own folder is not on ``sys.path``)."""
    return [sys.executable, "-P", "-B", WORKER_PATH, config]


@functools.cache
def _bwrap_version(tool: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10)
        return tuple(int(x) for x in out.stdout.split()[-1].split("."))
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return (0,)


def _needed_paths() -> list[str]:
    """Host paths the worker and programs must read: Python, its site-packages, the worker.

    Not ``sys.path`` as a whole: its first entry is the host script's folder (often under
    ``/tmp`` or a home directory), which must stay hidden.
    """
    paths = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(WORKER_PATH),
        os.path.dirname(os.path.realpath(sys.executable)),
        os.path.dirname(os.path.abspath(sys.executable)),
        *site.getsitepackages(),
        *sandbox_env().get("PYTHONPATH", "").split(os.pathsep),
    }
    if site.ENABLE_USER_SITE:
        paths.add(site.getusersitepackages())
    for name in ("sympy", "numpy", "mpmath"):  # wherever the preloaded modules come from
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            paths.add(os.path.dirname(os.path.dirname(spec.origin)))
    out = set()
    for p in paths:
        if p and os.path.isdir(p):
            out.update({os.path.abspath(p), os.path.realpath(p)})
    return sorted(out)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _hidden_roots() -> list[str]:
    roots = [*HIDDEN_ROOTS, os.path.expanduser("~")]
    out: list[str] = []
    for r in sorted({os.path.abspath(r) for r in roots}, key=len):
        if r == "/" or os.path.islink(r) or not os.path.isdir(r):
            continue
        if not any(_under(r, o) for o in out):
            out.append(r)
    return out


def _bound_back(hidden: list[str]) -> list[str]:
    """The needed paths mounted back (read-only) below a hidden root, outermost only.

    A needed path that *is* a hidden root (Python installed as /srv) would unhide all of it:
    only what lies strictly below a hidden root is mounted back.
    """
    needed = [p for p in _needed_paths() if any(_under(p, h) and p != h for h in hidden)]
    kept: list[str] = []
    for p in sorted(needed, key=len):
        if not any(_under(p, k) for k in kept):
            kept.append(p)
    return kept


def tmp_mounts() -> list[str]:
    """The paths mounted back inside the worker's private ``/tmp`` (a checkout or a venv under
    ``/tmp``): the worker's wipe of ``/tmp`` after each program must leave them, and the
    folders leading to them, in place."""
    return [p for p in _bound_back(_hidden_roots()) if _under(p, "/tmp") and p != "/tmp"]


def bwrap_argv(tool: str, command: list[str], *, user_namespace: bool) -> list[str]:
    """The bubblewrap command line that runs ``command`` as a sandboxed worker.

    Args:
        tool: Path of ``bwrap``.
        command: What to run inside (the worker).
        user_namespace: ``False`` when running as root: no user namespace (with one, only
            uid 0 is mapped and dropping to a program uid fails), and the worker keeps only
            the capabilities it needs to drop each program to its uid. ``True`` for a
            normal user: ``--unshare-all`` (user namespace included).
    """
    argv = [tool, "--ro-bind", "/", "/"]
    hidden = _hidden_roots()
    for root in hidden:
        if root == "/tmp":
            argv += ["--size", str(TMP_MB << 20)]
        argv += ["--tmpfs", root]
    made: set[str] = set()
    for p in _bound_back(hidden):
        # bwrap would create the folders between the tmpfs and the mount point with mode
        # 700: a program uid could not reach the Python mounted back there.
        root = next(h for h in hidden if _under(p, h))
        parts = Path(p).relative_to(root).parts[:-1]
        for i in range(1, len(parts) + 1):
            d = os.path.join(root, *parts[:i])
            if d not in made:
                made.add(d)
                argv += ["--perms", "0755", "--dir", d]
        argv += ["--ro-bind", p, p]
    for root in hidden:
        if root != "/tmp":
            argv += ["--remount-ro", root]
    # /dev/shm: private to the worker, writable (POSIX semaphores: multiprocessing needs
    # it), emptied after every program.
    argv += ["--dev", "/dev", "--perms", "1777", "--size", str(SHM_MB << 20)]
    argv += ["--tmpfs", "/dev/shm", "--remount-ro", "/dev", "--proc", "/proc"]
    if user_namespace:
        argv += ["--unshare-all", "--unshare-user"]
        if _bwrap_version(tool) >= (0, 8):
            argv += ["--disable-userns"]  # no nested user namespaces for programs
    else:
        argv += [
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-net",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--cap-drop",
            "ALL",
        ]
        for cap in _WORKER_CAPS:
            argv += ["--cap-add", cap]
    argv += ["--hostname", "sandbox", "--die-with-parent", "--new-session", "--chdir", "/tmp"]
    argv += ["--clearenv"]
    for key, value in sandbox_env().items():
        argv += ["--setenv", key, value]
    return [*argv, "--", *command]


_PROBE = f"""
import os, sys
if sys.argv[1] == "drop":
    os.setgroups([]); os.setresgid({_PROBE_UID}, {_PROBE_UID}, {_PROBE_UID})
    os.setresuid({_PROBE_UID}, {_PROBE_UID}, {_PROBE_UID})
open(os.__file__).close()  # the standard library is readable by the program uid
sys.path.insert(0, {os.path.dirname(WORKER_PATH)!r})
import worker
print("ok", worker.seccomp_works())
"""


def _probe(argv: list[str]) -> tuple[bool, str]:
    try:
        p = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{type(e).__name__}: {e}"
    out = p.stdout.split()
    if p.returncode == 0 and out[:1] == ["ok"]:
        return True, "seccomp filter" if out[1:] == ["True"] else "no seccomp filter"
    return False, (p.stderr.strip().splitlines() or [f"exit code {p.returncode}"])[-1]


def _probe_user_namespace(tool: str) -> tuple[bool, str]:
    cmd = [sys.executable, "-I", "-S", "-c", _PROBE, "keep"]
    return _probe(bwrap_argv(tool, cmd, user_namespace=True))


@functools.cache
def detect_isolation() -> Isolation:
    """What this host allows, probed once per process by starting a tiny sandbox."""
    root = os.geteuid() == 0
    tool = find_bwrap()
    why = "bubblewrap (bwrap) is not installed"
    if tool:
        if root:
            cmd = [sys.executable, "-I", "-S", "-c", _PROBE, "drop"]
            ok, why = _probe(bwrap_argv(tool, cmd, user_namespace=False))
            if ok:
                return Isolation(
                    "namespaces",
                    True,
                    True,
                    True,
                    True,
                    tool,
                    f"namespaces via {tool}: private pid/net/ipc/uts namespaces, read-only "
                    f"root with /root,/home,/run,/tmp hidden, a uid per worker slot, {why}, "
                    "rlimits",
                )
        ok, why_userns = _probe_user_namespace(tool)
        if ok:
            return Isolation(
                "namespaces",
                False,
                True,
                True,
                True,
                tool,
                f"namespaces via {tool} (user namespace): private pid/net/ipc/uts "
                f"namespaces, read-only root with /home,/run,/tmp hidden, {why_userns}, "
                "rlimits; programs run as this user's uid inside (run as root for a uid per "
                "program)",
            )
        why = f"{why}; {why_userns}" if root else why_userns
    if root:
        detail = (
            f"rlimits only ({why}): a uid per worker slot and resource limits, but programs "
            "share the host's network and filesystem; install bubblewrap"
        )
    else:
        detail = (
            f"rlimits only ({why}): resource limits and process-group cleanup only; programs "
            "run as this user with its network and files, and a program that leaves its "
            "process group outlives it; install bubblewrap"
        )
    return Isolation("rlimits", root, False, False, False, None, detail)
