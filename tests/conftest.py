"""Shared fixtures. Fast tests use ScriptedBackend; real-engine tests are marked ``real_model``
and share one engine per session (loading vLLM costs ~30 s on CPU): use the
``vllm_backend`` / ``hf_backend`` fixtures instead of constructing engines in tests."""

from __future__ import annotations

import asyncio

import pytest

from ttscale.backends import ScriptedBackend


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run ``own_engine`` tests first.

    vLLM keeps one distributed state per process, and an engine that a test builds and
    drops tears it down under any engine still alive ("pipeline model parallel group is
    not initialized"). Tests that build their own vLLM engine (a quantized or PRM
    checkpoint) therefore run before the session ``vllm_backend`` exists. Module order is
    kept within each group.
    """
    own = [it for it in items if it.get_closest_marker("own_engine")]
    if own:
        items[:] = own + [it for it in items if not it.get_closest_marker("own_engine")]


@pytest.fixture
def scripted() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture(scope="session")
def vllm_backend():
    """The embedded model on in-process vLLM, engine seed 0, loaded once per session."""
    from ttscale.backends import VLLMBackend

    backend = VLLMBackend(seed=0)
    yield backend
    asyncio.run(backend.close())


@pytest.fixture(scope="session")
def hf_backend():
    """The embedded model on transformers, seed 0, loaded once per session."""
    from ttscale.backends import HFBackend

    backend = HFBackend(seed=0)
    yield backend
    asyncio.run(backend.close())
