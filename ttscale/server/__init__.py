"""``ttscale serve``: an OpenAI-compatible chat-completions endpoint over ``asolve``.

Point any OpenAI client at it (only ``base_url`` and ``api_key`` change); the model name
picks the strategy (``ttscale/best_of_n``), ``extra_body`` may add ``strategy``,
``budget`` and ``options``, and for code ``tests`` and ``entry_point`` (the reply is then
the chosen program, with its test results in the ``ttscale`` extension). See
``docs/serve.md``.

    >>> from ttscale.backends import ScriptedBackend
    >>> from ttscale.server import create_app, serve_in_thread
    >>> with serve_in_thread(create_app(ScriptedBackend())) as url:  # doctest: +SKIP
    ...     ...  # OpenAI(base_url=url + "/v1", api_key="unused")

Needs the ``serve`` extra: ``pip install 'ttscale[serve]'``.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"ttscale.server needs FastAPI ({_exc}); fix: pip install 'ttscale[serve]'"
    ) from None

from ttscale.server.app import create_app
from ttscale.server.errors import APIError
from ttscale.server.plan import (
    DEFAULT_BUDGET,
    DEFAULT_MAX_BUDGET,
    MODEL_PREFIX,
    ServerConfig,
    cap_budget,
    plan_request,
)
from ttscale.server.runner import serve_in_thread

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_MAX_BUDGET",
    "MODEL_PREFIX",
    "APIError",
    "ServerConfig",
    "cap_budget",
    "create_app",
    "plan_request",
    "serve_in_thread",
]
