"""Shared fixtures. Fast tests use ScriptedBackend; real-engine tests are marked ``real_model``
and share one engine per session (loading vLLM costs ~30 s on CPU): use the
``vllm_backend`` / ``hf_backend`` fixtures instead of constructing engines in tests."""

from __future__ import annotations

import asyncio

import pytest

from ttscale.backends import ScriptedBackend


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
