"""Shared fixtures. Fast tests use ScriptedBackend; real-engine tests are marked ``real_model``."""

from __future__ import annotations

import pytest

from ttscale.backends import ScriptedBackend


@pytest.fixture
def scripted() -> ScriptedBackend:
    return ScriptedBackend()
