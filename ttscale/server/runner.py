"""Run the app under uvicorn: in the foreground (``ttscale serve``) or in a background
thread (tests, benchmarks, notebooks)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ttscale.errors import BackendUnavailable

__all__ = ["import_uvicorn", "serve_in_thread"]

log = logging.getLogger(__name__)


def import_uvicorn() -> Any:
    """uvicorn, or ``BackendUnavailable`` naming the install command."""
    try:
        import uvicorn
    except ImportError as exc:
        raise BackendUnavailable(
            f"ttscale serve needs uvicorn ({exc}); fix: pip install 'ttscale[serve]'"
        ) from None
    return uvicorn


@contextmanager
def serve_in_thread(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
) -> Iterator[str]:
    """Serve ``app`` with uvicorn from a daemon thread until the block exits.

    Args:
        app: An ASGI app, e.g. ``create_app(ScriptedBackend())``.
        host: Interface to bind; keep the loopback default unless you mean to expose it.
        port: TCP port; 0 picks a free one.
        log_level: uvicorn's log level.

    Yields:
        The base URL, e.g. ``http://127.0.0.1:54321`` (append ``/v1`` for the openai client).

    Raises:
        BackendUnavailable: uvicorn is missing, or the server did not start within 30 s.
    """
    uvicorn = import_uvicorn()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="ttscale-serve", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise BackendUnavailable(f"uvicorn did not start on {host}:{bound}; see its log above")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        if thread.is_alive():
            log.warning("uvicorn thread still running after shutdown request")
