"""LangChain integration: ``ChatTTScale`` (a chat model) and ``think_harder`` (a tool).

Both run ``asolve`` in-process on a backend instance you build once (loading the
embedded model costs 20-30 s on CPU, so it is never loaded per call). Needs only
``langchain-core``: ``pip install 'ttscale[langchain]'``.

    >>> from ttscale.backends import ScriptedBackend
    >>> from ttscale.integrations.langchain import ChatTTScale, think_harder
    >>> llm = ChatTTScale(backend=ScriptedBackend(), budget="rollouts=8")
    >>> llm.invoke("What is 12*7?").response_metadata["ttscale"]["answer"]
    '84'
    >>> think_harder(ScriptedBackend()).invoke({"question": "What is 12*7?"}).splitlines()[0]
    'Answer: 84'
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForLLMRun,
        CallbackManagerForLLMRun,
    )
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.tools import StructuredTool
except ImportError as _exc:
    raise ImportError(
        f"ttscale.integrations.langchain needs langchain-core ({_exc}); "
        f"fix: pip install 'ttscale[langchain]'"
    ) from None
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ttscale.api import asolve
from ttscale.budget import Budget
from ttscale.errors import ConfigError, describe
from ttscale.integrations.chat import problem_from_chat, representative, summarize
from ttscale.protocols import Generator
from ttscale.strategies import make_strategy
from ttscale.types import DEFAULT_SYSTEM_PROMPT, Result

__all__ = ["ChatTTScale", "think_harder"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_ROLES = {"human": "user", "system": "system", "ai": "assistant", "tool": "tool"}
_CALL_KEYS = ("strategy", "budget", "options")
"""Per-call overrides accepted by ``invoke(..., budget=...)`` / ``.bind(...)``."""


def _check_backend(backend: Any) -> Generator:
    if isinstance(backend, str) or not isinstance(backend, Generator):
        raise ConfigError(
            f"backend must be a Generator instance, got {describe(backend)}; build it once, "
            f"e.g. make_backend('vllm') (loading per call would cost 20-30 s each time)"
        )
    return backend


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts = [
        p if isinstance(p, str) else str(p.get("text", ""))
        for p in content
        if isinstance(p, str) or (isinstance(p, Mapping) and p.get("type") == "text")
    ]
    return "\n".join(parts)


def _role(message: BaseMessage) -> str:
    if message.type == "chat":
        return str(getattr(message, "role", "user"))
    return _ROLES.get(message.type, message.type)


def _run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine from sync code, also when this thread already runs an event loop
    (notebooks, async frameworks calling sync ``invoke``): then in a fresh worker thread."""

    async def main() -> T:
        return await make()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ttscale") as pool:
        return pool.submit(asyncio.run, main()).result()


class ChatTTScale(BaseChatModel):
    """A LangChain chat model that spends a compute budget on every answer.

    The last human message is the question, the last system message (if any) replaces
    the default system prompt; earlier turns are ignored (a strategy solves one question).
    The reply's content is the chosen solution; ``response_metadata["ttscale"]`` holds the
    answer, vote table and candidates, ``response_metadata["ledger"]`` the full ledger, and
    ``usage_metadata`` the tokens spent over every sample.

    Per call, ``strategy``, ``budget`` and ``options`` (merged into the defaults) can be
    overridden: ``llm.invoke(q, budget="rollouts=16")`` or ``llm.bind(options={"n": 4})``.
    ``stop`` sequences are not supported by strategies and are ignored.

    Attributes:
        backend: The engine (a ``Generator`` instance, reused across calls, never closed).
        strategy: A name in ``ttscale.strategies.STRATEGIES``.
        budget: Per-call budget: ``"tokens=4000,rollouts=8"``, an int (tokens), a dict.
        options: Strategy hyper-parameters, e.g. ``{"n": 8, "max_tokens": 512}``.
        verifier: Optional ``Verifier`` for weighted selection.
        system_prompt: Default system prompt; ``None`` omits it.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: Any
    strategy: str = "best_of_n"
    budget: Budget | str | int | dict[str, Any] = "rollouts=8"
    options: dict[str, Any] = Field(default_factory=dict)
    verifier: Any = None
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT

    @model_validator(mode="after")
    def _validate(self) -> ChatTTScale:
        _check_backend(self.backend)
        Budget.parse(self.budget)
        make_strategy(self.strategy, **self.options)
        return self

    @property
    def _llm_type(self) -> str:
        return "ttscale"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "backend": getattr(self.backend, "name", type(self.backend).__name__),
            "strategy": self.strategy,
            "budget": str(Budget.parse(self.budget)),
            "options": dict(self.options),
        }

    def _settings(self, kwargs: Mapping[str, Any]) -> tuple[str, Budget, dict[str, Any]]:
        unknown = sorted(k for k in kwargs if k not in _CALL_KEYS and not k.startswith("ls_"))
        if unknown:
            raise ConfigError(
                f"ChatTTScale got unsupported call argument {unknown[0]!r}; per call it accepts "
                f"{', '.join(_CALL_KEYS)} (tool binding is not supported: use think_harder)"
            )
        strategy = kwargs.get("strategy") or self.strategy
        budget = Budget.parse(kwargs.get("budget", self.budget))
        return strategy, budget, {**self.options, **(kwargs.get("options") or {})}

    async def _solve(self, messages: Sequence[BaseMessage], stop: Any, kwargs: Any) -> ChatResult:
        if stop:
            log.debug("ChatTTScale ignores stop=%r (strategies decide when a solution ends)", stop)
        strategy, budget, options = self._settings(kwargs)
        problem = problem_from_chat([(_role(m), _text(m)) for m in messages], self.system_prompt)
        result = await asolve(
            problem.prompt,
            budget,
            strategy=strategy,
            backend=self.backend,
            verifier=self.verifier,
            system_prompt=problem.system_prompt,
            **options,
        )
        return _chat_result(result)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return _run_sync(lambda: self._solve(messages, stop, kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await self._solve(messages, stop, kwargs)


def _chat_result(result: Result) -> ChatResult:
    cand = representative(result)
    led = result.ledger
    finish = cand.finish_reason if cand is not None else "stop"
    message = AIMessage(
        content=cand.text if cand is not None else "",
        response_metadata={
            "model_name": f"ttscale/{result.strategy}",
            "finish_reason": finish,
            "ttscale": summarize(result),
            "ledger": led.to_dict(),
        },
        usage_metadata={
            "input_tokens": led.prompt_tokens,
            "output_tokens": led.generated_tokens,
            "total_tokens": led.prompt_tokens + led.generated_tokens,
        },
    )
    return ChatResult(
        generations=[ChatGeneration(message=message, generation_info={"finish_reason": finish})],
        llm_output={"model_name": f"ttscale/{result.strategy}", "ttscale_ledger": led.to_dict()},
    )


class ThinkHarderInput(BaseModel):
    question: str = Field(
        description="A self-contained hard sub-question (e.g. a calculation or math step), "
        "with every number and definition it needs."
    )


_DESCRIPTION = (
    "Think harder about one hard, self-contained question (math, arithmetic, logic): "
    "samples several independent solutions and returns the answer most of them agree on, "
    "with the reasoning. Slower and costlier than answering directly; use it when being "
    "right matters."
)


def think_harder(
    backend: Generator,
    *,
    strategy: str = "best_of_n",
    budget: Budget | str | int | dict[str, Any] = "rollouts=8",
    options: Mapping[str, Any] | None = None,
    verifier: Any = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    name: str = "think_harder",
    description: str = _DESCRIPTION,
) -> StructuredTool:
    """Build a tool an agent calls on a hard sub-question.

    The tool's text output starts with ``Answer: <answer>``, then the chosen solution and
    how many samples agreed; its artifact (on ``ToolMessage.artifact`` when called with a
    tool call) is the summary plus the ledger.

    Args:
        backend: The engine (a ``Generator`` instance, shared with the rest of your app).
        strategy, budget, options, verifier, system_prompt: As in ``solve``.
        name, description: What the agent sees.

    Raises:
        ConfigError: A bad backend, budget, strategy or option (checked now, not per call).
    """
    _check_backend(backend)
    parsed = Budget.parse(budget)
    opts = dict(options or {})
    make_strategy(strategy, **opts)

    async def arun(question: str) -> tuple[str, dict[str, Any]]:
        result = await asolve(
            question,
            parsed,
            strategy=strategy,
            backend=backend,
            verifier=verifier,
            system_prompt=system_prompt,
            **opts,
        )
        return _tool_text(result), {**summarize(result), "ledger": result.ledger.to_dict()}

    def run(question: str) -> tuple[str, dict[str, Any]]:
        return _run_sync(lambda: arun(question))

    return StructuredTool.from_function(
        func=run,
        coroutine=arun,
        name=name,
        description=description,
        args_schema=ThinkHarderInput,
        response_format="content_and_artifact",
    )


def _tool_text(result: Result) -> str:
    cand = representative(result)
    votes = result.extras.get("votes") or []
    agree = next((v["votes"] for v in votes if v["answer"] == result.answer), 0)
    lines = [
        f"Answer: {result.answer if result.answer is not None else '(no answer found)'}",
        f"({agree} of {len(result.candidates)} samples agree; "
        f"{result.ledger.generated_tokens} tokens spent)",
    ]
    if cand is not None:
        lines += ["", "Reasoning:", cand.text]
    return "\n".join(lines)
