"""``--executor ray``: spread eval rows over Ray actors, each with its own backend.

Each actor (``EvalWorker``) builds its backend from a name and options (an in-process vLLM
engine on its own GPU, or a client of a shared OpenAI-compatible server), wraps it in
``CoalescingGenerator`` and solves up to ``concurrency`` rows at once in its event loop, so
its engine still sees large batches. The driver keeps ``workers * concurrency`` rows in
flight, hands each new row to the least-loaded actor, and is the only writer of
``rows.jsonl``: resumability, crash safety and the drain on SIGINT/SIGTERM are the same as
with the local executor.

Ray is an optional dependency (``pip install 'ttscale[eval]'``). Without an address,
``ray.init`` starts a local cluster; with ``address="auto"`` or ``"ray://head:10001"`` it
joins an existing one (every node needs ttscale installed; see README "Evals").
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ttscale.errors import ConfigError
from ttscale.evals.draw import draw_problem
from ttscale.evals.work import Drain, OnRow, WorkItem, coalesce, make_verifier, solve_item

__all__ = ["EvalWorker", "PoolWorker", "run_ray", "run_ray_pool"]

log = logging.getLogger(__name__)


class EvalWorker:
    """One Ray actor: a backend (coalescing) and an optional verifier; solves rows."""

    def __init__(
        self,
        backend_name: str,
        backend_options: dict[str, Any],
        verifier: str | None,
        verifier_options: dict[str, Any],
        system_prompt: str | None,
    ) -> None:
        from ttscale.backends import make_backend

        # Actor methods run off the main thread, where math-verify cannot use its signal
        # timeout and warns on every call; the warning would flood the driver's stderr.
        logging.getLogger("math_verify").setLevel(logging.ERROR)
        self.backend = make_backend(backend_name, **backend_options)
        self.shared = coalesce(self.backend)
        self.verifier = make_verifier(verifier, self.shared, verifier_options)
        self.system_prompt = system_prompt

    async def profile(self) -> dict[str, Any]:
        import os
        import socket

        return {**self.backend.profile(), "ray_node": socket.gethostname(), "pid": os.getpid()}

    async def solve(self, item: WorkItem) -> tuple[dict[str, Any], dict[str, Any]]:
        import os
        import socket

        row, trace = await solve_item(item, self.shared, self.verifier, self.system_prompt)
        row["worker"] = f"{socket.gethostname()}:{os.getpid()}"
        return row, trace

    async def close(self) -> None:
        await self.backend.close()


class PoolWorker:
    """One Ray actor of ``ttscale pool build --executor ray``: a backend (coalescing) that
    draws the K samples of the problems it is handed."""

    def __init__(self, backend_name: str, backend_options: dict[str, Any]) -> None:
        from ttscale.backends import make_backend
        from ttscale.cost import default_hardware

        logging.getLogger("math_verify").setLevel(logging.ERROR)
        self.backend = make_backend(backend_name, **backend_options)
        self.shared = coalesce(self.backend)
        self.hardware = default_hardware()

    async def profile(self) -> dict[str, Any]:
        import socket

        spec = self.backend.model_spec
        return {
            **self.backend.profile(),
            "ray_node": socket.gethostname(),
            "model_spec": None if spec is None else dataclasses.asdict(spec),
            "hardware": self.hardware.name,
        }

    async def draw(self, problem: Any, sampling: Any) -> Any:
        executor = None
        if sampling.execute:
            from ttscale.sandbox import default_sandbox

            executor = default_sandbox()
        return await draw_problem(problem, self.shared, sampling, self.hardware, executor)

    async def close(self) -> None:
        await self.backend.close()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor ray needs Ray: pip install 'ttscale[eval]' (or pip install ray)"
        ) from None
    return ray


def run_ray(
    todo: Sequence[WorkItem],
    on_row: OnRow,
    start: Callable[[dict[str, Any]], None],
    *,
    backend_name: str,
    backend_options: dict[str, Any],
    verifier: str | None,
    verifier_options: dict[str, Any],
    system_prompt: str | None,
    workers: int,
    concurrency: int,
    address: str | None = None,
    init: dict[str, Any] | None = None,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
) -> None:
    """Solve ``todo`` on ``workers`` Ray actors; ``start(profile)`` once they are up."""
    _run_actors(
        EvalWorker,
        (backend_name, backend_options, verifier, verifier_options, system_prompt),
        todo,
        lambda actor, item: actor.solve.remote(item),
        lambda item, result: on_row(item, *result),
        start,
        workers=workers,
        concurrency=concurrency,
        address=address,
        init=init,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker,
    )


def run_ray_pool(
    todo: Sequence[Any],
    sampling: Any,
    on_problem: Callable[[Any], None],
    start: Callable[[dict[str, Any]], None],
    *,
    backend_name: str,
    backend_options: dict[str, Any],
    workers: int,
    concurrency: int,
    address: str | None = None,
    init: dict[str, Any] | None = None,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
) -> None:
    """Draw the pool samples of ``todo`` problems on ``workers`` Ray actors; the driver
    writes each problem (``on_problem``) as it lands, as with ``run_ray``."""
    _run_actors(
        PoolWorker,
        (backend_name, backend_options),
        todo,
        lambda actor, problem: actor.draw.remote(problem, sampling),
        lambda _problem, drawn: on_problem(drawn),
        start,
        workers=workers,
        concurrency=concurrency,
        address=address,
        init=init,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker,
    )


def _run_actors(
    worker: type,
    args: tuple[Any, ...],
    todo: Sequence[Any],
    submit: Callable[[Any, Any], Any],
    on_done: Callable[[Any, Any], None],
    start: Callable[[dict[str, Any]], None],
    *,
    workers: int,
    concurrency: int,
    address: str | None,
    init: dict[str, Any] | None,
    gpus_per_worker: float,
    cpus_per_worker: float,
) -> None:
    if workers < 1 or concurrency < 1:
        raise ConfigError(f"workers={workers} and concurrency={concurrency} must be >= 1")
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        opts = {"include_dashboard": False, "logging_level": logging.WARNING, **(init or {})}
        ray.init(address=address, **opts)
    remote = ray.remote(worker).options(
        num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_concurrency=concurrency
    )
    actors = [remote.remote(*args) for _ in range(workers)]
    try:
        profiles = ray.get([a.profile.remote() for a in actors])
        profile = {**profiles[0], "ray_workers": len(actors)}
        profile.pop("pid", None)
        start(profile)
        _drive(ray, actors, todo, submit, on_done, cap=workers * concurrency)
    finally:
        for a in actors:
            try:
                ray.get(a.close.remote(), timeout=30)
            except Exception as exc:  # a dead actor cannot close; nothing to release then
                log.debug("closing a Ray worker failed: %s", exc)
            ray.kill(a)
        if started:
            ray.shutdown()


def _drive(
    ray: Any,
    actors: list[Any],
    todo: Sequence[Any],
    submit: Callable[[Any, Any], Any],
    on_done: Callable[[Any, Any], None],
    cap: int,
) -> None:
    """Keep ``cap`` items in flight over the actors, least-loaded first, writing each as it
    lands. A first SIGINT/SIGTERM to the driver stops new submissions and waits for the items
    in flight (``Drain``; ``RunStopped`` at the end); a second stops at once."""
    load = [0] * len(actors)
    in_flight: dict[Any, tuple[Any, int]] = {}
    queue = iter(todo)

    with Drain() as drain:

        def fill() -> None:
            while len(in_flight) < cap and drain.signum is None:
                item = next(queue, None)
                if item is None:
                    break
                w = min(range(len(actors)), key=load.__getitem__)
                in_flight[submit(actors[w], item)] = (item, w)
                load[w] += 1
            drain.in_flight = len(in_flight)

        fill()
        while in_flight:
            # a timeout, so a signal's handler runs promptly between waits
            done, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in done:
                item, w = in_flight.pop(ref)
                load[w] -= 1
                on_done(item, ray.get(ref))  # re-raises the worker's error (same class)
            fill()
