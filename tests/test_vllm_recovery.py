"""VLLMBackend after a failed engine call: the requests the failed call left in the engine
are aborted before the retry (seeding fallback) or the error, so no later call steps them
to completion for nothing. A stand-in engine: no model is loaded."""

from __future__ import annotations

import threading

import pytest

from ttscale.backends.vllm import _SEED_BUG, VLLMBackend
from ttscale.errors import BackendError
from ttscale.types import GenerationRequest


class _Engine:
    def __init__(self) -> None:
        self.output_processor = type("OP", (), {"request_states": {}})()
        self.aborted: list[list[str]] = []

    def abort_request(self, ids: list[str], internal: bool = False) -> None:
        assert internal
        self.aborted.append(ids)
        for i in ids:
            self.output_processor.request_states.pop(i)


def _backend(failures: list[Exception]) -> tuple[VLLMBackend, _Engine, list[str]]:
    b = object.__new__(VLLMBackend)
    engine = _Engine()
    b._llm = type("LLM", (), {"llm_engine": engine})()
    b._lock = threading.Lock()
    b.seeding = "per_request"
    calls: list[str] = []

    def run(requests):
        calls.append(b.seeding)
        if failures:
            # the failed call leaves its requests in the engine
            engine.output_processor.request_states.update({"7": None, "8": None})
            raise failures.pop(0)
        return []

    b._run = run  # type: ignore[method-assign]
    return b, engine, calls


REQ = [GenerationRequest((1, 2, 3), n=2, max_tokens=4, seed=1)]


def test_seed_bug_aborts_the_failed_calls_requests_then_retries_engine_seeded():
    b, engine, calls = _backend([RuntimeError(f"CPU Generator {_SEED_BUG}")])
    assert b._generate_sync(REQ) == []
    assert engine.aborted == [["7", "8"]] and not engine.output_processor.request_states
    assert calls == ["per_request", "engine"] and b.seeding == "engine"


def test_other_engine_errors_abort_too_and_name_vllm():
    b, engine, _ = _backend([RuntimeError("boom")])
    with pytest.raises(BackendError, match="vLLM generate failed: boom"):
        b._generate_sync(REQ)
    assert engine.aborted == [["7", "8"]]


def test_seeding_is_checked_before_any_engine_loads():
    from ttscale.errors import ConfigError

    with pytest.raises(ConfigError, match="seeding='sometimes'"):
        VLLMBackend(seeding="sometimes")
