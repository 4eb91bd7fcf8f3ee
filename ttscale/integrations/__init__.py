"""Agent-framework integrations: LangChain (``ttscale.integrations.langchain``) and the
OpenAI-compatible server (``ttscale.server``).

This package holds only what they share and imports no framework: mapping a chat
transcript to a ``Problem`` and choosing the solution text to show for a ``Result``.
``ChatTTScale`` and ``think_harder`` are loaded on first access, so
``import ttscale.integrations`` works without langchain-core installed.
"""

from __future__ import annotations

from typing import Any

from ttscale.integrations.chat import SYSTEM_ROLES, problem_from_chat, representative, summarize

__all__ = [
    "SYSTEM_ROLES",
    "ChatTTScale",
    "problem_from_chat",
    "representative",
    "summarize",
    "think_harder",
]


def __getattr__(name: str) -> Any:
    """Lazy access to the LangChain classes (needs ``pip install 'ttscale[langchain]'``)."""
    if name in ("ChatTTScale", "think_harder"):
        from ttscale.integrations import langchain

        return getattr(langchain, name)
    raise AttributeError(name)
