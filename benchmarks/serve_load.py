"""Load test for ``ttscale serve``: N concurrent chat completions from the official client.

Starts the real server (uvicorn, in a child process, localhost only) around a
``ScriptedBackend`` whose engine calls sleep ``--engine-ms`` (a stand-in for the engine, so
the figures are the server's, not a model's), fires ``--requests`` requests at once with
``openai.AsyncOpenAI`` (at most ``--concurrency`` in flight), and reports successes,
errors by status, latency percentiles, where the time of a loaded request goes (admission
queue, solve, the rest), and the server's CPU time per request.

``overhead_ms`` in the RESULT line is the server overhead per request: client latency
minus solve time (``Server-Timing`` header), median over sequential requests against the
idle server, i.e. what HTTP, schema validation and JSON add to one request, both sides
of the socket included. Under load the "rest" share grows with CPU contention (2 cores
shared by client, server and the strategy's answer grouping); it is printed separately.
The run stops by itself (``--deadline-s``) and ends with one line:

    RESULT ok=<n> errors=<n> p99_ms=<> p50_ms=<> overhead_ms=<> isa=<host ISA>

Exit status 1 if any request failed with a 5xx or a transport error (429s are allowed
only when ``--max-concurrency + --max-queue`` is below the load).

    python benchmarks/serve_load.py                  # 200 requests, all admitted
    python benchmarks/serve_load.py --max-queue 50   # expect 429s, never 5xx
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import sys
import time
from collections import Counter
from typing import Any

import httpx
import openai

from ttscale.host import host_info

QUESTION = "What is {a}*{b}?"


def _serve(port: int, engine_ms: float, max_concurrency: int, max_queue: int) -> None:
    """Child process: the real server on 127.0.0.1:port."""
    import uvicorn

    from ttscale.backends import ScriptedBackend
    from ttscale.server import create_app

    app = create_app(
        ScriptedBackend(delay_s=engine_ms / 1e3),
        max_concurrency=max_concurrency,
        max_queue=max_queue,
        timeout_s=60,
        max_budget="tokens=65536,rollouts=64,seconds=30",
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: multiprocessing.process.BaseProcess, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.is_alive():
            raise SystemExit(f"server process exited with code {proc.exitcode}")
        try:
            httpx.get(f"{url}/health", timeout=1).raise_for_status()
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} not ready after {timeout_s:.0f} s")


def _server_timing(header: str) -> dict[str, float]:
    """``queue;dur=1.2, solve;dur=3.4`` -> {"queue": 1.2, "solve": 3.4} (ms)."""
    out = {}
    for item in header.split(","):
        name, _, dur = item.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


async def _one(client: openai.AsyncOpenAI, i: int, gate: asyncio.Semaphore) -> dict[str, Any]:
    a, b = 2 + i % 17, 3 + i % 11
    async with gate:
        t0 = time.perf_counter()
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="ttscale/best_of_n",
                messages=[{"role": "user", "content": QUESTION.format(a=a, b=b)}],
            )
        except openai.APIStatusError as exc:
            return {"status": exc.status_code, "ms": (time.perf_counter() - t0) * 1e3}
        except openai.APIConnectionError as exc:
            return {
                "status": f"transport:{type(exc).__name__}",
                "ms": (time.perf_counter() - t0) * 1e3,
            }
        ms = (time.perf_counter() - t0) * 1e3
        completion = raw.parse()
        timing = _server_timing(raw.headers.get("server-timing", ""))
        return {
            "status": 200,
            "ms": ms,
            "queue_ms": timing.get("queue", 0.0),
            "solve_ms": timing.get("solve", 0.0),
            "rest_ms": ms - timing.get("queue", 0.0) - timing.get("solve", 0.0),
            "answer_ok": completion.model_extra["ttscale"]["answer"] is not None,
        }


async def _run(url: str, args: argparse.Namespace, server_pid: int | None) -> dict[str, Any]:
    async with openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=90
    ) as client:
        one = asyncio.Semaphore(1)
        idle = [await _one(client, i, one) for i in range(args.warmup + args.idle)][args.warmup :]
        gate = asyncio.Semaphore(args.concurrency)
        cpu0, t0 = _cpu_seconds(server_pid), time.perf_counter()
        loaded = await asyncio.wait_for(
            asyncio.gather(*(_one(client, i, gate) for i in range(args.requests))), args.deadline_s
        )
        wall, cpu = time.perf_counter() - t0, _cpu_seconds(server_pid) - cpu0
    return {"idle": idle, "loaded": loaded, "wall": wall, "server_cpu": cpu}


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (Linux ``/proc``); NaN elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=200, help="client requests in flight")
    p.add_argument("--max-concurrency", type=int, default=16, help="server: solved at once")
    p.add_argument("--max-queue", type=int, default=256, help="server: waiting before 429")
    p.add_argument("--engine-ms", type=float, default=20.0, help="scripted engine call time")
    p.add_argument("--idle", type=int, default=20, help="sequential requests for idle overhead")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--deadline-s", type=float, default=120.0)
    args = p.parse_args()

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(
        target=_serve,
        args=(port, args.engine_ms, args.max_concurrency, args.max_queue),
        daemon=True,
    )
    proc.start()
    try:
        _wait_ready(url, proc)
        run = asyncio.run(_run(url, args, proc.pid))
    finally:
        proc.terminate()
        proc.join(timeout=10)

    loaded, wall = run["loaded"], run["wall"]
    statuses = Counter(r["status"] for r in loaded)
    ok = [r for r in loaded if r["status"] == 200]
    lat = [r["ms"] for r in ok]
    idle_overhead = statistics.median(
        [r["ms"] - r["solve_ms"] for r in run["idle"] if r["status"] == 200] or [float("nan")]
    )
    fatal = {s: n for s, n in statuses.items() if s not in (200, 429)}
    info = host_info()

    def p50(key: str) -> float:
        return _pct([r[key] for r in ok], 0.5)

    print(
        f"server: max_concurrency={args.max_concurrency} max_queue={args.max_queue} "
        f"engine_ms={args.engine_ms:g}; client: {args.requests} requests, "
        f"{args.concurrency} in flight; host {info.cpu_model} ({info.cores} cpus)"
    )
    print(
        f"statuses: {dict(statuses)}; answers present: {sum(r['answer_ok'] for r in ok)}/{len(ok)}"
    )
    print(
        f"wall {wall:.2f} s, {len(ok) / wall:.1f} req/s; latency p50 {_pct(lat, 0.5):.1f} ms, "
        f"p99 {_pct(lat, 0.99):.1f} ms"
    )
    print(
        f"under load, p50 per request: admission queue {p50('queue_ms'):.1f} ms, solve "
        f"{p50('solve_ms'):.1f} ms (engine {args.engine_ms:g} ms), rest {p50('rest_ms'):.1f} ms "
        f"(HTTP + JSON + waiting for a busy event loop, both processes)"
    )
    print(
        f"server CPU {run['server_cpu'] / max(len(loaded), 1) * 1e3:.2f} ms per request; "
        f"overhead per request on an idle server (latency - solve): {idle_overhead:.1f} ms"
    )
    print(
        f"RESULT ok={len(ok)} errors={args.requests - len(ok)} p99_ms={_pct(lat, 0.99):.1f} "
        f"p50_ms={_pct(lat, 0.5):.1f} overhead_ms={idle_overhead:.1f} isa={info.isa}"
    )
    return 1 if fatal else 0


if __name__ == "__main__":
    sys.exit(main())
