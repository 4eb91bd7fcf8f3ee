"""OpenAIBackend: any vLLM-style OpenAI-compatible server, through the official ``openai`` client.

Search strategies extend prompts by token ids, so this backend uses the *completions*
endpoint with token-id prompts (``prompt=[ids]``, ``return_token_ids``) and the server's
``/tokenize`` and ``/detokenize`` endpoints for the chat template, as ``vllm serve`` provides.
Requests of one call run concurrently, capped by ``max_concurrency`` and rate-limited with
``asyncio-throttle``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from ttscale.backends.common import chat_messages
from ttscale.errors import BackendError, BackendUnavailable, ContextLengthError
from ttscale.types import (
    Completion,
    GenerationOutput,
    GenerationRequest,
    Problem,
    topk_confidence,
)

__all__ = ["OpenAIBackend"]

log = logging.getLogger(__name__)


class OpenAIBackend:
    """Client for an OpenAI-compatible (vLLM) server.

    Args:
        base_url: Server root including ``/v1``, e.g. ``http://127.0.0.1:8000/v1``.
        model: Served model name; ``None`` takes the first one ``/v1/models`` lists.
        api_key: Bearer token (``"EMPTY"`` for servers without auth).
        max_concurrency: Requests in flight at once.
        requests_per_second: Rate cap (asyncio-throttle).
        timeout: Seconds per HTTP request.
        max_retries: Retries of connection errors and 5xx (the client's backoff).

    Raises:
        BackendUnavailable: The server cannot be reached (message names the URL and fix).
    """

    name = "openai"
    seeding = "per_request"
    model_spec = None

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str = "EMPTY",
        max_concurrency: int = 16,
        requests_per_second: float = 1000.0,
        timeout: float = 600.0,
        max_retries: int = 2,
    ) -> None:
        try:
            import httpx
            import openai
            from asyncio_throttle import Throttler
        except ImportError as exc:
            raise BackendUnavailable(
                f"openai client missing ({exc}); fix: pip install 'ttscale[openai]'"
            ) from None
        self._openai = openai
        self.base_url = base_url.rstrip("/")
        root = self.base_url.removesuffix("/v1")
        headers = {"Authorization": f"Bearer {api_key}"}
        self._http = httpx.Client(base_url=root, headers=headers, timeout=timeout)
        self._client_kw = {
            "base_url": self.base_url,
            "api_key": api_key,
            "timeout": timeout,
            "max_retries": max_retries,
        }
        # The async client's connection pool belongs to one event loop; solve() runs a new
        # loop per call, so the client is created lazily for the running loop.
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self.model = model or self._first_model()
        self._max_concurrency = max_concurrency
        self._throttler = Throttler(rate_limit=max(int(requests_per_second), 1), period=1.0)

    def _get(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        try:
            resp = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(
                f"cannot reach the server at {self.base_url} ({exc.__class__.__name__}: {exc}); "
                f"fix: start it (e.g. `vllm serve MODEL --port 8000`) or pass the right base_url"
            ) from None
        if resp.status_code >= 400:
            raise BackendError(f"{method} {path} -> HTTP {resp.status_code}: {resp.text[:200]}")
        return resp.json()

    def _first_model(self) -> str:
        data = self._get("GET", "/v1/models").get("data") or []
        if not data:
            raise BackendError(f"{self.base_url}/models lists no model; pass model=...")
        return str(data[0]["id"])

    # -- tokenizer (server side) -----------------------------------------------------------
    def render(self, problem: Problem) -> tuple[int, ...]:
        body = {
            "model": self.model,
            "messages": chat_messages(problem),
            "add_generation_prompt": True,
        }
        return tuple(self._get("POST", "/tokenize", json=body)["tokens"])

    def encode(self, text: str) -> tuple[int, ...]:
        body = {"model": self.model, "prompt": text, "add_special_tokens": False}
        return tuple(self._get("POST", "/tokenize", json=body)["tokens"])

    def decode(self, token_ids: Sequence[int]) -> str:
        body = {"model": self.model, "tokens": list(token_ids)}
        return str(self._get("POST", "/detokenize", json=body)["prompt"])

    def profile(self) -> dict[str, Any]:
        return {"backend": "openai", "base_url": self.base_url, "model": self.model}

    def _async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = self._openai.AsyncOpenAI(**self._client_kw)
            self._client_loop = loop
        return self._client

    async def close(self) -> None:
        if self._client is not None and self._client_loop is asyncio.get_running_loop():
            await self._client.close()
        self._client = None
        self._http.close()

    # -- generation ------------------------------------------------------------------------
    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        sem = asyncio.Semaphore(self._max_concurrency)
        return list(await asyncio.gather(*(self._one(r, sem) for r in requests)))

    async def _one(self, r: GenerationRequest, sem: asyncio.Semaphore) -> GenerationOutput:
        openai = self._openai
        async with sem, self._throttler:
            try:
                resp = await self._async_client().completions.create(
                    model=self.model,
                    prompt=list(r.prompt_token_ids),
                    n=r.n,
                    max_tokens=r.max_tokens,
                    temperature=r.temperature,
                    top_p=r.top_p,
                    stop=list(r.stop) or None,
                    seed=r.seed,
                    logprobs=r.logprobs,
                    extra_body={
                        "include_stop_str_in_output": r.include_stop,
                        "return_token_ids": True,
                        **({"prompt_logprobs": 0} if r.prompt_logprobs else {}),
                    },
                )
            except openai.APIConnectionError as exc:
                raise BackendUnavailable(
                    f"cannot reach the server at {self.base_url} ({exc}); fix: start it or "
                    f"check base_url"
                ) from None
            except openai.BadRequestError as exc:
                if "context" in str(exc).lower() or "maximum" in str(exc).lower():
                    raise ContextLengthError(f"server rejected the prompt length: {exc}") from None
                raise BackendError(f"server rejected the request: {exc}") from None
            except openai.APIStatusError as exc:
                raise BackendError(f"server error {exc.status_code}: {exc}") from None
        return self._convert(r, resp)

    def _convert(self, r: GenerationRequest, resp: Any) -> GenerationOutput:
        comps = []
        for ch in sorted(resp.choices, key=lambda c: c.index):
            ids = getattr(ch, "token_ids", None)
            if ids is None:  # server without return_token_ids: tokenize the text
                ids = self.encode(ch.text)
            lp = top = conf = None
            if ch.logprobs is not None and ch.logprobs.token_logprobs is not None:
                lp = tuple(float(x) for x in ch.logprobs.token_logprobs)
                top = tuple(dict(t or {}) for t in (ch.logprobs.top_logprobs or []))
                # The completions API keys alternatives by text: the top-k as the server sent it.
                conf = tuple(topk_confidence(t.values()) for t in top) if top else None
            finish = "length" if ch.finish_reason == "length" else "stop"
            comps.append(Completion(ch.text, tuple(ids), finish, lp, top or None, confidence=conf))  # type: ignore[arg-type]
        usage = resp.usage
        cached = 0
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        if details is not None and getattr(details, "cached_tokens", None):
            cached = int(details.cached_tokens)
        prompt_tokens = int(usage.prompt_tokens) if usage else len(r.prompt_token_ids)
        return GenerationOutput(tuple(comps), prompt_tokens=prompt_tokens, cached_tokens=cached)
