"""``solve`` without a backend loads the embedded engine once per process and reuses it;
``close_default_engines`` releases it (closing it) so the next call loads a fresh one."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import ttscale.backends
from ttscale import api
from ttscale.backends.scripted import ScriptedBackend


@dataclass
class CountingBackend(ScriptedBackend):
    closed: bool = False

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def loads(monkeypatch):
    made: list[CountingBackend] = []

    def fake_make_backend(name, **kwargs):
        assert name == "auto" and not kwargs
        made.append(CountingBackend())
        return made[-1]

    monkeypatch.setattr(ttscale.backends, "make_backend", fake_make_backend)
    api.close_default_engines()
    yield made
    api.close_default_engines()


def test_two_solves_load_the_engine_once(loads):
    first = api.solve("What is 12*7?", budget="rollouts=4", verifier=None)
    second = api.solve("What is 6*7?", budget="rollouts=4", verifier=None)
    assert (first.answer, second.answer) == ("84", "42")
    assert len(loads) == 1
    assert len(loads[0].calls) >= 2  # both calls ran on the one engine
    assert not loads[0].closed


def test_close_releases_and_the_next_solve_loads_afresh(loads):
    api.solve("What is 12*7?", budget="rollouts=2", verifier=None)
    api.close_default_engines()
    assert loads[0].closed
    api.solve("What is 12*7?", budget="rollouts=2", verifier=None)
    assert len(loads) == 2 and not loads[1].closed


def test_a_named_engine_is_loaded_for_the_call_and_closed(monkeypatch):
    made: list[CountingBackend] = []

    def fake_make_backend(name, **kwargs):
        made.append(CountingBackend())
        return made[-1]

    monkeypatch.setattr(ttscale.backends, "make_backend", fake_make_backend)
    api.solve("What is 12*7?", budget="rollouts=2", backend="scripted", verifier=None)
    assert len(made) == 1 and made[0].closed


@pytest.fixture
def shipped_default(monkeypatch):
    """A default-verifier file naming the model the scripted backend is taken to serve."""
    from ttscale.verifiers import defaults

    choice = {
        "model_sha256": "abc",
        "verifier": "confidence",
        "options": {"stat": "mean"},
        "best_of_n": {"select": "weighted"},
    }
    monkeypatch.setattr(defaults, "default_choice", lambda: choice)
    monkeypatch.setattr(defaults, "_model_sha", lambda path: "abc")
    return defaults


def _scored(result) -> list:
    return [c.score for c in result.candidates]


def test_best_of_n_uses_the_default_verifier_of_the_served_model(shipped_default):
    r = api.solve("What is 12*7?", budget="rollouts=4", backend=ScriptedBackend())
    assert r.answer == "84" and all(s is not None for s in _scored(r))


def test_verifier_none_means_none_and_another_model_gets_none(shipped_default, monkeypatch):
    r = api.solve("What is 12*7?", budget="rollouts=4", backend=ScriptedBackend(), verifier=None)
    assert all(s is None for s in _scored(r))
    monkeypatch.setattr(shipped_default, "_model_sha", lambda path: "another model")
    r = api.solve("What is 12*7?", budget="rollouts=4", backend=ScriptedBackend())
    assert all(s is None for s in _scored(r))
