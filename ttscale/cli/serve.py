"""``ttscale serve``: the OpenAI-compatible endpoint."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from ttscale.cli.options import (
    Backend,
    BaseUrl,
    Model,
    Script,
    SparseOption,
    Verbose,
    backend_kwargs,
    err,
    load_backend,
)


def serve(
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 exposes it to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    backend: Backend = "vllm",
    model: Model = None,
    base_url: BaseUrl = None,
    script: Script = None,
    sparse: SparseOption = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="TTSCALE_API_KEY", help="Require 'Authorization: Bearer <key>'."),
    ] = None,
    strategy: Annotated[
        str, typer.Option(help="Strategy of the bare 'ttscale' model alias.")
    ] = "best_of_n",
    default_budget: Annotated[
        str, typer.Option(help="Budget of requests that name none.")
    ] = "rollouts=8",
    max_budget: Annotated[
        str, typer.Option(help="Per-request caps; a request asking for more gets a 400.")
    ] = "tokens=65536,rollouts=64,seconds=120",
    max_concurrency: Annotated[int, typer.Option(help="Requests solved at once.")] = 4,
    max_queue: Annotated[int, typer.Option(help="Requests waiting for a slot; beyond: 429.")] = 64,
    timeout: Annotated[
        float, typer.Option(help="Per-request seconds, queue included; then 504.")
    ] = 300.0,
    max_body_bytes: Annotated[int, typer.Option(help="Larger request bodies get 413.")] = 1 << 20,
    verbose: Verbose = False,
) -> None:
    """Serve an OpenAI-compatible /v1/chat/completions endpoint (model: ttscale/<strategy>)."""
    from ttscale.server import create_app
    from ttscale.server.runner import import_uvicorn

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr)
    uvicorn = import_uvicorn()
    gen = load_backend(
        backend,
        backend_kwargs(backend, model=model, base_url=base_url, script=script, sparse=sparse),
    )
    application = create_app(
        gen,
        api_key=api_key,
        default_strategy=strategy,
        default_budget=default_budget,
        max_budget=max_budget,
        max_concurrency=max_concurrency,
        max_queue=max_queue,
        timeout_s=timeout,
        max_body_bytes=max_body_bytes,
    )
    auth = "bearer key required" if api_key else "no auth"
    err.print(f"serving {backend} on http://{host}:{port}/v1 ({auth}); Ctrl-C stops")
    try:
        uvicorn.run(application, host=host, port=port, log_level="debug" if verbose else "info")
    finally:
        import asyncio

        asyncio.run(gen.close())
