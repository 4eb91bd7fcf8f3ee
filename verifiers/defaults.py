"""The verifier best-of-N uses by default on the model it was measured for.

``ttscale/data/default_verifier.json`` names, for one model (by the sha256 of its weights),
the verifier and vote that measured best on the held-out pool (``benchmarks/verifiers.py
--pool``), with the figures. ``solve(..., strategy="best_of_n")`` without a ``verifier``
argument uses it when the backend serves that model; ``verifier=None`` means none, and any
other model gets none (a verifier measured on one model says nothing about another).
"""

from __future__ import annotations

import json
import logging
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ttscale.host import cache_dir

__all__ = ["DEFAULT", "default_choice", "default_verifier_for"]

log = logging.getLogger(__name__)

DEFAULT = "default"
"""Sentinel: ``solve``'s ``verifier`` when the caller said nothing."""


@cache
def default_choice() -> dict[str, Any] | None:
    """The shipped default (``None`` if none is shipped)."""
    path = resources.files("ttscale") / "data" / "default_verifier.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _model_sha(model_path: str | None) -> str | None:
    if not model_path:
        return None
    text = str(model_path).replace("$TTSCALE_CACHE", str(cache_dir()))
    manifest = Path(os.path.expanduser(text)) / "ttscale-model.json"
    try:
        return json.loads(manifest.read_text()).get("source_sha256")
    except (OSError, json.JSONDecodeError):
        return None


_LOADED: dict[str, Any] = {}


def default_verifier_for(generator: Any) -> tuple[Any, dict[str, Any]]:
    """``(verifier, best-of-N options)`` for ``generator``'s model, or ``(None, {})``."""
    choice = default_choice()
    if not choice:
        return None, {}
    profile = generator.profile() if hasattr(generator, "profile") else {}
    if _model_sha(profile.get("model")) != choice.get("model_sha256"):
        return None, {}
    key = json.dumps([choice["verifier"], choice.get("options", {})], sort_keys=True)
    if key not in _LOADED:
        from ttscale.verifiers.registry import load_verifier

        _LOADED[key] = load_verifier(choice["verifier"], **choice.get("options", {}))
        log.info("best_of_n: default verifier %s for this model", _LOADED[key].name)
    return _LOADED[key], dict(choice.get("best_of_n", {}))
