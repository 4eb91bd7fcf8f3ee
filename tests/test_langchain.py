"""LangChain integration (langchain-core only): ``ChatTTScale`` and the ``think_harder`` tool.

Verifies that ``ChatTTScale`` answers through ``asolve`` in-process (sync, async, batch,
inside a running event loop, in an LCEL chain) with the same answers as ``solve``, maps
system/human messages to the problem, reports the ledger in ``response_metadata`` and
tokens in ``usage_metadata``, accepts per-call budget/strategy/options, and rejects bad
settings with messages naming the fix; that ``think_harder`` works as a tool an agent
calls (text content + ledger artifact); and that a missing langchain-core gives an
ImportError naming ``pip install 'ttscale[langchain]'``. Uses ``ScriptedBackend``.
"""

from __future__ import annotations

import asyncio
import importlib
import sys

import pytest

pytest.importorskip("langchain_core")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402

from ttscale import solve  # noqa: E402
from ttscale.backends import ScriptedBackend  # noqa: E402
from ttscale.errors import ConfigError  # noqa: E402
from ttscale.integrations.langchain import ChatTTScale, think_harder  # noqa: E402


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def llm(backend) -> ChatTTScale:
    return ChatTTScale(backend=backend, budget="rollouts=8")


def test_invoke_returns_solution_votes_ledger_and_usage(llm):
    msg = llm.invoke("What is 12*7?")
    assert isinstance(msg, AIMessage)
    assert "\\boxed{84}" in msg.content
    meta = msg.response_metadata
    assert meta["ttscale"]["answer"] == "84" and meta["ttscale"]["votes"][0]["answer"] == "84"
    assert meta["model_name"] == "ttscale/best_of_n" and meta["finish_reason"] == "stop"
    assert meta["ledger"]["rollouts"] == 8
    assert msg.usage_metadata["output_tokens"] == meta["ledger"]["generated_tokens"] > 0
    assert msg.usage_metadata["input_tokens"] == meta["ledger"]["prompt_tokens"] > 0


def test_async_and_batch_match_in_process_solve(llm):
    questions = ["What is 12*7?", "What is 3*9?", "What is 7+8?"]
    expected = [solve(q, "rollouts=8", backend=ScriptedBackend()).answer for q in questions]

    async def concurrently():
        return await asyncio.gather(*(llm.ainvoke(q) for q in questions))

    got = asyncio.run(concurrently())
    assert [m.response_metadata["ttscale"]["answer"] for m in got] == expected
    batch = llm.batch(questions)
    assert [m.response_metadata["ttscale"]["answer"] for m in batch] == expected


def test_sync_invoke_inside_a_running_event_loop(llm):
    async def main():
        return llm.invoke("What is 12*7?")  # e.g. a notebook cell or an async framework

    assert asyncio.run(main()).response_metadata["ttscale"]["answer"] == "84"


def test_system_message_replaces_default_and_last_human_is_the_question(llm, backend):
    llm.invoke(
        [
            SystemMessage("Answer tersely in \\boxed{}."),
            HumanMessage("What is 1+1?"),
            AIMessage("2"),
            HumanMessage("What is 12*7?"),
        ]
    )
    prompt = backend.decode(backend.calls[-1][0].prompt_token_ids)
    assert "Answer tersely" in prompt and "step by step" not in prompt
    assert "12*7" in prompt and "1+1" not in prompt


def test_per_call_overrides_and_bind(llm):
    msg = llm.invoke("What is 12*7?", budget="rollouts=3")
    assert msg.response_metadata["ledger"]["rollouts"] == 3
    bound = llm.bind(options={"n": 2, "round_size": 2})
    assert bound.invoke("What is 12*7?").response_metadata["ledger"]["rollouts"] == 2
    with pytest.raises(ConfigError, match="unsupported call argument 'tools'"):
        llm.invoke("What is 12*7?", tools=[])


def test_in_an_lcel_chain(llm):
    prompt = ChatPromptTemplate.from_messages([("human", "What is {a}*{b}?")])
    text = (prompt | llm | StrOutputParser()).invoke({"a": 12, "b": 7})
    assert "\\boxed{84}" in text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "vllm"}, "Generator instance"),
        ({"budget": "apples=3"}, "unknown budget field"),
        ({"options": {"no_such_option": 1}}, "no option 'no_such_option'"),
        ({"strategy": "nope"}, "unknown strategy"),
    ],
)
def test_bad_settings_fail_at_construction(backend, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ChatTTScale(**{"backend": backend, **kwargs})


def test_think_harder_tool(backend):
    tool = think_harder(backend, budget="rollouts=8")
    assert tool.name == "think_harder" and set(tool.args) == {"question"}
    text = tool.invoke({"question": "What is 12*7?"})
    assert text.splitlines()[0] == "Answer: 84"
    assert "\\boxed{84}" in text
    call = {
        "type": "tool_call",
        "id": "c1",
        "name": "think_harder",
        "args": {"question": "What is 6*7?"},
    }
    msg = tool.invoke(call)
    assert isinstance(msg, ToolMessage) and msg.tool_call_id == "c1"
    assert msg.artifact["answer"] == "42" and msg.artifact["ledger"]["rollouts"] == 8
    assert asyncio.run(tool.ainvoke({"question": "What is 6*7?"})).startswith("Answer: 42")
    with pytest.raises(ConfigError, match="no option"):
        think_harder(backend, options={"bogus": 1})


def test_agent_calls_think_harder_on_a_sub_question(backend):
    """A tool-calling agent loop: the planner delegates the hard step, then uses the result."""
    tools = {"think_harder": think_harder(backend)}
    planner = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    "",
                    tool_calls=[
                        {"name": "think_harder", "args": {"question": "What is 12*7?"}, "id": "t1"}
                    ],
                ),
                AIMessage("The crate holds 84 bottles."),
            ]
        )
    )
    history = [HumanMessage("12 boxes of 7 bottles: how many bottles?")]
    while True:
        reply = planner.invoke(history)
        history.append(reply)
        if not reply.tool_calls:
            break
        history += [tools[call["name"]].invoke(call) for call in reply.tool_calls]
    tool_msgs = [m for m in history if isinstance(m, ToolMessage)]
    assert len(tool_msgs) == 1 and tool_msgs[0].content.startswith("Answer: 84")
    assert history[-1].content == "The crate holds 84 bottles."


def test_missing_langchain_core_names_the_install_command(monkeypatch):
    for name in [
        m for m in sys.modules if m == "langchain_core" or m.startswith("langchain_core.")
    ]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "ttscale.integrations.langchain")
    monkeypatch.delattr(sys.modules["ttscale.integrations"], "langchain")
    with pytest.raises(ImportError, match=r"pip install 'ttscale\[langchain\]'"):
        importlib.import_module("ttscale.integrations.langchain")
    integrations = importlib.import_module("ttscale.integrations")  # light part still imports
    with pytest.raises(ImportError, match=r"ttscale\[langchain\]"):
        integrations.ChatTTScale  # noqa: B018
