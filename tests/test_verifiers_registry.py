"""Verifier registry: built-in names, user plug-ins, and errors that name the fix."""

from __future__ import annotations

import asyncio

import pytest

from ttscale.backends import ScriptedBackend
from ttscale.errors import ConfigError
from ttscale.protocols import Verifier
from ttscale.types import Problem
from ttscale.verifiers import (
    VERIFIERS,
    ImplicitPRM,
    LLMJudge,
    ScriptedVerifier,
    load_verifier,
    register_verifier,
)


def test_builtin_names():
    assert {"llm_judge", "implicit_prm", "qwen_prm", "math_shepherd_prm", "rlhflow_prm"} <= set(
        VERIFIERS
    )


def test_judge_and_implicit_prm_by_name():
    judge = load_verifier("llm_judge", generator=ScriptedBackend(), mode="outcome")
    assert isinstance(judge, LLMJudge) and judge.mode == "outcome"
    prm = load_verifier("implicit_prm", policy=ScriptedBackend(), reference=ScriptedBackend())
    assert isinstance(prm, ImplicitPRM) and isinstance(prm, Verifier)
    with pytest.raises(ConfigError, match="reference=<Generator>"):
        load_verifier("implicit_prm", policy=ScriptedBackend())


def test_register_and_load_a_custom_verifier():
    def length_verifier(scale: float = 100.0) -> ScriptedVerifier:
        return ScriptedVerifier(
            lambda p, steps: [min(len(s) / scale, 1.0) for s in steps], name="length"
        )

    register_verifier("length", length_verifier)
    try:
        v = load_verifier("length", scale=10.0)
        assert asyncio.run(v.score([Problem("q")], [["abcde", "x" * 50]])) == [[0.5, 1.0]]
        with pytest.raises(ConfigError, match="overwrite=True"):
            register_verifier("length", length_verifier)
        register_verifier("length", length_verifier, overwrite=True)
    finally:
        VERIFIERS.pop("length", None)


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="llm_judge") as err:
        load_verifier("no-such-verifier")
    assert "register_verifier" in str(err.value)
    with pytest.raises(ConfigError, match="callable"):
        register_verifier("x", 3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="non-empty"):
        register_verifier(" ", lambda: None)
    register_verifier("broken", lambda: object())
    try:
        with pytest.raises(ConfigError, match="Verifier protocol"):
            load_verifier("broken")
    finally:
        VERIFIERS.pop("broken", None)
