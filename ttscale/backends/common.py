"""Helpers shared by the backends that load a local HF model directory, and by anything that
must render a problem exactly as they do (the probe verifier reads the policy's hidden states
on the same token ids)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ttscale.cost import ModelSpec
from ttscale.errors import ConfigError, ContextLengthError
from ttscale.types import GenerationRequest, Problem

__all__ = ["chat_messages", "check_requests", "render_with_tokenizer", "spec_from_dir"]

log = logging.getLogger(__name__)

_DTYPE_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0}


def spec_from_dir(path: Path, dtype: str) -> ModelSpec | None:
    """Model shape from ``config.json`` for eFLOPs accounting; ``None`` if unreadable."""
    try:
        cfg = json.loads((path / "config.json").read_text())
        return ModelSpec.from_hf_config(cfg, bytes_per_param=_DTYPE_BYTES.get(dtype, 2.0))
    except (OSError, KeyError, ValueError) as exc:
        log.info("no model spec for %s (%s); eFLOPs will read 0", path, exc)
        return None


def chat_messages(problem: Problem) -> list[dict[str, str]]:
    msgs = []
    if problem.system_prompt:
        msgs.append({"role": "system", "content": problem.system_prompt})
    msgs.append({"role": "user", "content": problem.prompt})
    return msgs


def render_with_tokenizer(tokenizer: Any, problem: Problem) -> tuple[int, ...]:
    """Apply the model's chat template, ending at the start of the assistant turn."""
    out = tokenizer.apply_chat_template(
        chat_messages(problem), add_generation_prompt=True, tokenize=True
    )
    ids = out["input_ids"] if not isinstance(out, list) else out
    return tuple(int(t) for t in ids)


def check_requests(requests: list[GenerationRequest], max_model_len: int) -> None:
    """Reject what no engine can serve, before it reaches one.

    Raises:
        ContextLengthError: prompt + ``max_tokens`` exceeds ``max_model_len``.
        ConfigError: ``n`` or ``max_tokens`` below 1.
    """
    for r in requests:
        if r.n < 1 or r.max_tokens < 1:
            raise ConfigError(f"n={r.n} and max_tokens={r.max_tokens} must be >= 1")
        if len(r.prompt_token_ids) + r.max_tokens > max_model_len:
            raise ContextLengthError(
                f"prompt of {len(r.prompt_token_ids)} tokens + max_tokens={r.max_tokens} "
                f"exceeds max_model_len={max_model_len}; lower max_tokens, shorten the prompt "
                f"or construct the backend with a larger max_model_len"
            )
