"""Run model-written Python programs isolated from ttscale's process and the host.

    >>> from ttscale.sandbox import Sandbox
    >>> with Sandbox(workers=1) as box:
    ...     box.run("from sympy import *; print(Rational(1, 3) + Rational(1, 6))").stdout
    '1/2\\n'

Programs run only in warm pre-forked workers (sympy and numpy already imported) inside
bubblewrap namespaces, each as its own uid with resource limits; see ``Isolation`` for what
this host allows (``detect_isolation()``). Without bubblewrap, ``Sandbox`` refuses to run
unless weak mode (resource limits only) is chosen with ``allow_weak=True`` or
``TTSCALE_SANDBOX=rlimits``.
"""

from ttscale.sandbox.isolation import Isolation, detect_isolation
from ttscale.sandbox.sandbox import (
    ExecResult,
    Limits,
    Sandbox,
    SharedSandbox,
    close_default_sandbox,
    default_sandbox,
)

__all__ = [
    "ExecResult",
    "Isolation",
    "Limits",
    "Sandbox",
    "SharedSandbox",
    "close_default_sandbox",
    "default_sandbox",
    "detect_isolation",
]
