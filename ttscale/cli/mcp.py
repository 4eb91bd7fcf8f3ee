"""``ttscale mcp``: the Model Context Protocol server (stdio by default, ``--http`` for
streamable HTTP)."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from pydantic import ValidationError

from ttscale.cli.options import (
    Backend,
    BackendOptions,
    BaseUrl,
    Model,
    PoolDir,
    Script,
    SparseOption,
    Verbose,
    backend_kwargs,
    err,
    parse_options,
)
from ttscale.errors import ConfigError

_FLAGS = {"default_strategy": "strategy", "timeout_s": "timeout"}
"""ServerConfig fields whose command-line flag has another name."""


def mcp(
    http: Annotated[
        bool, typer.Option("--http", help="Serve streamable HTTP at /mcp instead of stdio.")
    ] = False,
    host: Annotated[
        str, typer.Option(help="--http: interface to bind; 0.0.0.0 exposes it to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="--http: TCP port.")] = 8000,
    backend: Backend = "vllm",
    model: Model = None,
    base_url: BaseUrl = None,
    script: Script = None,
    sparse: SparseOption = None,
    pool: PoolDir = None,
    backend_option: BackendOptions = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="TTSCALE_API_KEY",
            help="--http: require 'Authorization: Bearer <key>' (stdio needs none).",
        ),
    ] = None,
    strategy: Annotated[str, typer.Option(help="Strategy of calls that name none.")] = "best_of_n",
    default_budget: Annotated[
        str, typer.Option(help="Budget of calls that name none.")
    ] = "rollouts=8",
    max_budget: Annotated[
        str, typer.Option(help="Per-call caps; a call asking for more gets a tool error.")
    ] = "tokens=65536,rollouts=64,seconds=120",
    max_concurrency: Annotated[
        int, typer.Option(help="Calls solved at once (they share engine batches); more wait.")
    ] = 8,
    timeout: Annotated[
        float, typer.Option(help="Per-call seconds, waiting included; then a tool error.")
    ] = 300.0,
    verbose: Verbose = False,
) -> None:
    """Serve solve / solve_batch / strategies as MCP tools (stdio for desktop clients)."""
    from ttscale.server import ServerConfig

    # Over stdio, stdout is the protocol: logs (and the loading spinner) go to stderr only.
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr)
    try:
        config = ServerConfig(
            api_key=api_key if http else None,
            max_budget=max_budget,
            default_budget=default_budget,
            default_strategy=strategy,
            max_concurrency=max_concurrency,
            timeout_s=timeout,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        flag = _FLAGS.get(field, field.replace("_", "-"))
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"--{flag}: {msg}") from None
    from ttscale.backends import BACKENDS, make_backend
    from ttscale.mcp import SolveService, build_server, http_app

    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    kwargs = {
        **backend_kwargs(
            backend, model=model, base_url=base_url, script=script, pool=pool, sparse=sparse
        ),
        **parse_options(backend_option or []),
    }
    # The engine loads in the background: the client's handshake and tool list do not wait
    # for it (vLLM takes ~30 s on CPU); the first solve does, and a load failure is reported
    # to every call as a tool error naming the cause.
    service = SolveService.deferred(lambda: make_backend(backend, **kwargs), config)
    server = build_server(service)
    try:
        if not http:
            err.print(f"ttscale MCP server on stdio ({backend} loading); the client ends it")
            server.run("stdio")
            return
        from ttscale.server.runner import import_uvicorn

        uvicorn = import_uvicorn()
        if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
            err.print(f"[yellow]warning:[/yellow] {host} is reachable without a key; add --api-key")
        auth = "bearer key required" if api_key else "no auth"
        url = f"http://{host}:{port}/mcp"
        err.print(f"ttscale MCP server on {url} ({backend}, {auth}); Ctrl-C stops")
        application = http_app(server, api_key=api_key, host=host)
        uvicorn.run(application, host=host, port=port, log_level="debug" if verbose else "info")
    finally:
        import asyncio

        asyncio.run(service.close())  # the server's lifespan closed it already, normally
