"""Verifier registry: build a verifier by name (or from a PRM checkpoint path), plug in your own.

Built-in names:

=====================  ====================================================================
``llm_judge``          ``LLMJudge`` on ``generator=``, or on its own vLLM engine for
                       ``model=`` (e.g. the 1.5B embedded model judging the 0.5B's samples);
                       default: the embedded model
``probe``              ``ProbeVerifier(path=...)``: a linear probe on the policy model's hidden
                       states (``ttscale train-verifier``); default: the head shipped for
                       the embedded 0.5B model
``confidence``         ``ConfidenceVerifier(stat=..., window=..., tail=...)``: DeepConf
                       statistics of the samples' own token confidences, no engine call
``implicit_prm``       ``ImplicitPRM(policy=..., reference=...)`` (both generators required)
``qwen_prm``           ``QwenPRM.from_pretrained(path)`` (Qwen2.5-Math-PRM layout)
``math_shepherd_prm``  ``MathShepherdPRM.from_pretrained(path)``
``rlhflow_prm``        ``RLHFlowPRM.from_pretrained(path)``
``qwen_prm_vllm``      ``VLLMQwenPRM.from_pretrained(path)`` (Qwen2.5-Math-PRM on vLLM's
                       pooling runner; also ``load_verifier('qwen_prm', path=...,
                       engine='vllm')``)
=====================  ====================================================================

A factory is any callable ``(**options) -> Verifier``. Engines and models are imported only
when a factory runs, so importing the registry stays light.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError
from ttscale.protocols import Verifier

__all__ = ["VERIFIERS", "VerifierFactory", "load_verifier", "register_verifier"]

log = logging.getLogger(__name__)

VerifierFactory = Callable[..., Verifier]


def _llm_judge(*, generator: Any = None, model: str | None = None, **options: Any) -> Verifier:
    from ttscale.verifiers.llm_judge import LLMJudge

    if generator is not None and model is not None:
        raise ConfigError("llm_judge takes generator= or model=, not both")
    if generator is None:
        from ttscale.backends import make_backend

        log.info("llm_judge: loading %s with vLLM as the judge", model or "the embedded model")
        generator = make_backend("vllm", **({"model": model} if model else {}))
    return LLMJudge(generator, **options)


def _probe(*, path: Any = None, **options: Any) -> Verifier:
    from ttscale.verifiers.probe import ProbeVerifier

    return ProbeVerifier(path=path, **options)


def _confidence(**options: Any) -> Verifier:
    from ttscale.verifiers.confidence import ConfidenceVerifier

    return ConfidenceVerifier(**options)


def _implicit_prm(*, policy: Any = None, reference: Any = None, **options: Any) -> Verifier:
    from ttscale.verifiers.implicit_prm import ImplicitPRM

    if policy is None or reference is None:
        raise ConfigError(
            "implicit_prm needs two generators with one tokenizer: "
            "load_verifier('implicit_prm', policy=<Generator>, reference=<Generator>), e.g. "
            "VLLMBackend('qwen2.5-coder-1.5b-instruct-q4km') and VLLMBackend()"
        )
    return ImplicitPRM(policy, reference, **options)


def _prm(style: str, default_engine: str = "transformers") -> VerifierFactory:
    def factory(
        *,
        path: str | os.PathLike[str] | None = None,
        engine: str = default_engine,
        **options: Any,
    ) -> Verifier:
        from ttscale.verifiers.prm import PRM_STYLES, VLLMQwenPRM

        name = f"{style}_prm" + ("_vllm" if default_engine == "vllm" else "")
        if path is None:
            raise ConfigError(
                f"{name} needs a local checkpoint: load_verifier('{name}', "
                f"path='/path/to/model') (no model hub is reachable)"
            )
        if engine == "transformers":
            return PRM_STYLES[style].from_pretrained(path, **options)
        if engine == "vllm" and style == "qwen":
            return VLLMQwenPRM.from_pretrained(path, **options)
        raise ConfigError(
            f"engine={engine!r} for {style}_prm; use 'transformers'"
            + (" or 'vllm'" if style == "qwen" else " (only qwen_prm has a vLLM path)")
        )

    factory.__name__ = f"{style}_prm"
    return factory


VERIFIERS: dict[str, VerifierFactory] = {
    "llm_judge": _llm_judge,
    "confidence": _confidence,
    "probe": _probe,
    "implicit_prm": _implicit_prm,
    "qwen_prm": _prm("qwen"),
    "math_shepherd_prm": _prm("math_shepherd"),
    "rlhflow_prm": _prm("rlhflow"),
    "qwen_prm_vllm": _prm("qwen", default_engine="vllm"),
}
"""Name -> factory. Add entries with ``register_verifier``."""


def register_verifier(name: str, factory: VerifierFactory, *, overwrite: bool = False) -> None:
    """Make ``load_verifier(name, **options)`` call ``factory(**options)``.

    Raises:
        ConfigError: ``name`` is empty or taken (pass ``overwrite=True`` to replace it), or
            ``factory`` is not callable.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"verifier name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise ConfigError(f"factory for {name!r} must be callable, got {type(factory).__name__}")
    if name in VERIFIERS and not overwrite:
        raise ConfigError(
            f"verifier {name!r} is already registered; pass overwrite=True to replace it"
        )
    VERIFIERS[name] = factory


def load_verifier(name_or_path: str | os.PathLike[str], **options: Any) -> Verifier:
    """Build a verifier from a registered name or a local PRM checkpoint directory.

    Args:
        name_or_path: A key of ``VERIFIERS``, or a directory holding a PRM checkpoint
            (its layout is detected from ``config.json``; see ``detect_prm_style``).
        **options: Passed to the factory (``generator=``, ``path=``, ``mode=``...).

    Raises:
        ConfigError: Unknown name, listing the registered ones.
    """
    key = os.fspath(name_or_path)
    factory = VERIFIERS.get(key)
    if factory is not None:
        verifier = factory(**options)
    elif Path(key, "head.npz").is_file():  # a probe written by `ttscale train-verifier`
        verifier = VERIFIERS["probe"](path=key, **options)
    elif Path(key).is_dir():
        from ttscale.verifiers.prm import detect_prm_style

        verifier = VERIFIERS[f"{detect_prm_style(key)}_prm"](path=key, **options)
    else:
        raise ConfigError(
            f"unknown verifier {key!r}; use one of {', '.join(sorted(VERIFIERS))}, a local "
            f"PRM checkpoint directory, or register your own with register_verifier()"
        )
    if not isinstance(verifier, Verifier):
        raise ConfigError(
            f"factory for {key!r} returned {type(verifier).__name__}, which lacks the Verifier "
            f"protocol (a `name` and an async `score(problems, step_lists, *, ledger=None)`)"
        )
    return verifier
