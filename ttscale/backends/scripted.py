"""ScriptedBackend: a deterministic ``Generator`` for tests and demos (httpx's MockTransport idea).

It implements the real protocol: token-id prompts, ``n`` samples, stop strings (with or
without the stop string in the text), ``max_tokens`` truncation, per-request seeds, a block
prefix cache, generated-token and prompt logprobs (``logprob_fn``), and a toy byte-level
tokenizer (one token per UTF-8 byte), so ledger figures are exact and easy to assert.

A *script* maps a problem to candidate full solutions. For each sample the backend finds
the solutions that continue what the prompt's answer already contains and picks one with a
PRNG seeded by (request seed, prompt); so step-by-step strategies work too.
Without a script it follows ``toy_arithmetic``: a tiny "policy" that answers ``a op b``
questions, right most of the time. It is a test double, not a model.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ttscale.cost import ModelSpec
from ttscale.errors import ConfigError, ContextLengthError
from ttscale.types import (
    Completion,
    GenerationOutput,
    GenerationRequest,
    Problem,
    topk_confidence,
)

__all__ = ["ScriptedBackend", "toy_arithmetic"]

Script = Mapping[str, Sequence[str]] | Callable[[str], Sequence[str]]

_SYS, _USER, _ASSISTANT = "<|system|>\n", "<|user|>\n", "<|assistant|>\n"
_OFFSET = 3  # ids 0..2 are reserved for special tokens; byte b has id b + 3


def toy_arithmetic(problem: str) -> list[str]:
    """Solutions for ``a op b`` questions: three right, two wrong (off by one)."""
    m = re.search(r"(-?\d+)\s*([-+*x×/])\s*(-?\d+)", problem)
    if m is None:
        return ["I can only do arithmetic.\n\nThe answer is \\boxed{?}."]
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    value: float = {"+": a + b, "-": a - b, "*": a * b, "x": a * b, "×": a * b}.get(
        op, a / b if b else float("nan")
    )
    right = int(value) if float(value).is_integer() else value

    def sol(v: Any, how: str) -> str:
        return f"We compute {a} {op} {b}.\n\n{how} gives {v}.\n\nThe answer is \\boxed{{{v}}}."

    return [
        sol(right, "Direct multiplication" if op in "*x×" else "Direct evaluation"),
        sol(right, "Splitting the numbers"),
        sol(right, "Checking by estimation"),
        sol(right + 1, "Counting up"),
        sol(right - 1, "Counting down"),
    ]


def _scripted_confidence(lp: float, k: int) -> float:
    """Token confidence as if the top-k were the sampled token plus ``k - 1`` alternatives
    sharing the remaining mass equally: sure tokens (lp near 0) score high, unsure ones low,
    as with a real engine's top-k."""
    if k <= 1:
        return topk_confidence([lp])
    rest = max(1.0 - math.exp(lp), 1e-12) / (k - 1)
    return topk_confidence([lp] + [math.log(rest)] * (k - 1))


@dataclass
class ScriptedBackend:
    """Deterministic scripted ``Generator``.

    Args:
        script: Problem -> candidate solutions. A mapping is matched by key as a substring
            of the problem (first match wins); a callable receives the problem text.
            ``None`` uses ``toy_arithmetic``.
        delay_s: Sleep per ``generate`` call (to test timeouts and the seconds cap).
        max_model_len: Context window; longer prompt + max_tokens raises like an engine.
        block_size: Prefix-cache block size in tokens.
    """

    script: Script | None = None
    delay_s: float = 0.0
    max_model_len: int = 32768
    block_size: int = 16
    name: str = "scripted"
    seeding: str = "per_request"
    model_spec: ModelSpec | None = field(
        default_factory=lambda: ModelSpec(
            num_layers=2,
            hidden_size=64,
            num_heads=4,
            num_kv_heads=2,
            head_dim=16,
            intermediate_size=128,
            vocab_size=259,
            bytes_per_param=4,
        )
    )
    logprob_fn: Callable[[Sequence[int], int], float] | None = None
    """Logprob of token ``ids[i]`` given ``ids[:i]``, used for generated-token logprobs and
    ``prompt_logprobs``; ``None`` gives every token -0.1. Two backends with different
    functions act as a policy/reference pair (implicit-PRM tests)."""
    calls: list[list[GenerationRequest]] = field(default_factory=list)
    """Every ``generate`` call's requests, in order (tests assert batching with it)."""
    _cache: set[bytes] = field(default_factory=set, repr=False)

    # -- tokenizer -------------------------------------------------------------------------
    def encode(self, text: str) -> tuple[int, ...]:
        return tuple(b + _OFFSET for b in text.encode())

    def decode(self, token_ids: Sequence[int]) -> str:
        return bytes(t - _OFFSET for t in token_ids if t >= _OFFSET).decode(errors="replace")

    def render(self, problem: Problem) -> tuple[int, ...]:
        system = f"{_SYS}{problem.system_prompt}\n" if problem.system_prompt else ""
        return self.encode(f"{system}{_USER}{problem.prompt}\n{_ASSISTANT}")

    def profile(self) -> dict[str, Any]:
        model = "toy_arithmetic" if self.script is None else "script"
        return {"backend": "scripted", "model": model, "seeding": self.seeding}

    async def close(self) -> None:
        return None

    # -- generation ------------------------------------------------------------------------
    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        self.calls.append(list(requests))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return [self._one(r) for r in requests]

    def _solutions(self, problem: str) -> Sequence[str]:
        if self.script is None:
            return toy_arithmetic(problem)
        if callable(self.script):
            return self.script(problem)
        for key, sols in self.script.items():
            if key in problem:
                return sols
        raise ConfigError(
            f"ScriptedBackend: no script entry matches problem {problem[:60]!r}; "
            f"script keys: {list(self.script)[:5]}"
        )

    def _one(self, req: GenerationRequest) -> GenerationOutput:
        if req.n < 1 or req.max_tokens < 1:
            raise ConfigError(f"n={req.n} and max_tokens={req.max_tokens} must be >= 1")
        ids = req.prompt_token_ids
        if len(ids) + req.max_tokens > self.max_model_len:
            raise ContextLengthError(
                f"prompt of {len(ids)} tokens + max_tokens={req.max_tokens} exceeds "
                f"max_model_len={self.max_model_len}; lower max_tokens or shorten the prompt"
            )
        text = self.decode(ids)
        head, _, partial = text.rpartition(_ASSISTANT)
        problem = head.rpartition(_USER)[2].removesuffix("\n")
        matching = [s for s in self._solutions(problem) if s.startswith(partial)]
        seed_material = f"{req.seed}|{text}".encode()
        rng = random.Random(int.from_bytes(hashlib.sha256(seed_material).digest()[:8], "big"))
        completions = tuple(
            self._complete(req, rng.choice(matching)[len(partial) :] if matching else "", ids)
            for _ in range(req.n)
        )
        prompt_lp = None
        if req.prompt_logprobs:
            prompt_lp = (None, *(self._logprob(ids, i) for i in range(1, len(ids))))
        hit = self._hit(ids)
        return GenerationOutput(completions, len(ids), cached_tokens=hit, prompt_logprobs=prompt_lp)

    def _logprob(self, ids: Sequence[int], i: int) -> float:
        return -0.1 if self.logprob_fn is None else float(self.logprob_fn(ids, i))

    def _complete(
        self, req: GenerationRequest, continuation: str, prompt: tuple[int, ...]
    ) -> Completion:
        text, finish, counted = continuation, "stop", continuation
        cut = min(((i, s) for s in req.stop if (i := continuation.find(s)) != -1), default=None)
        if cut is not None:
            i, s = cut
            counted = continuation[: i + len(s)]  # the stop string's tokens were generated
            text = counted if req.include_stop else continuation[:i]
        token_ids = self.encode(counted)
        if len(token_ids) > req.max_tokens:
            token_ids = token_ids[: req.max_tokens]
            text, finish = self.decode(token_ids), "length"
        logprobs = top = conf = None
        if req.logprobs is not None:
            full = prompt + token_ids
            logprobs = tuple(self._logprob(full, len(prompt) + j) for j in range(len(token_ids)))
            # Only the sampled token is "top": a script has no alternatives to offer.
            top = tuple({self.decode([t]): lp} for t, lp in zip(token_ids, logprobs, strict=True))
            conf = tuple(_scripted_confidence(lp, req.logprobs) for lp in logprobs)
        return Completion(text, token_ids, finish, logprobs, top, confidence=conf)  # type: ignore[arg-type]

    def _hit(self, ids: tuple[int, ...]) -> int:
        """Longest previously seen block-aligned prefix (vLLM caches full blocks only)."""
        bs, hit = self.block_size, 0
        full = len(ids) // bs * bs
        for k in range(bs, full + 1, bs):
            key = hashlib.blake2b(bytes(str(ids[:k]), "ascii"), digest_size=16).digest()
            if key in self._cache:
                hit = k
            else:
                self._cache.add(key)
        return hit
