"""The agent-facing API for code: ``solve(tests=...)``, ``ttscale serve`` and ``ttscale mcp``.

- ``ttscale.verifiers.test_specs``: the three test forms (``add(2, 3) == 5``, ``assert ...``,
  doctest text) read into ``PublicTest`` values, and every malformed test refused with the
  test's index and the fix.
- ``solve``/``asolve``: tests or an entry point select the ``code`` strategy; with another
  strategy named they are a ``ConfigError``, raised before any engine call.
- ``serve``: the official ``openai`` client sends ``tests``/``entry_point`` in
  ``extra_body``; the reply is the chosen program in a ```python block, the ``ttscale``
  extension carries each test's result and the clusters; streaming ends in the same text.
- ``mcp``: the ``solve`` tool takes ``tests``/``entry_point`` and returns ``program`` and
  ``tests`` as structured content.
- Attacks: a model answering a code request with an infinite loop, a fork bomb or a dump of
  the environment gets a clean reply from a real ``ttscale serve`` / ``ttscale mcp``
  subprocess, which then answers the next request (the servers and checks of
  ``tests/test_sandbox_servers.py``).

The model is ``ScriptedBackend``; programs run in the real sandbox.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest
from test_sandbox_servers import (
    BENIGN,
    ISOLATION,
    Context,
    Served,
    _free_port,
    assert_host_unharmed,
    assert_no_secret,
    mcp_server,
    reply,
    sandbox_uids,
    served,
)

from ttscale import asolve, solve
from ttscale.backends import ScriptedBackend
from ttscale.backends.scripted import toy_arithmetic
from ttscale.errors import ConfigError
from ttscale.server import create_app, serve_in_thread
from ttscale.types import PublicTest
from ttscale.verifiers.test_specs import MAX_TEST_CHARS, MAX_TESTS, parse_test, parse_tests

__all__ = ["mcp_server", "served"]  # fixtures used here, defined in test_sandbox_servers

PROMPT = 'def add(a, b):\n    """Return the sum of a and b."""\n'
GOOD = "def add(a, b):\n    return a + b\n"
BAD = "def add(a, b):\n    return a - b\n"
TESTS = ["add(2, 3) == 5", "assert add(0, 0) == 0", ">>> add(-1, 4)\n3"]
OPTS = {"n": 4, "round_size": 4, "adaptive": False, "generated_inputs": 0, "max_tokens": 512}
"""One engine call of 4 programs, clustered on the public calls only."""
KEY = "code-test-key"


def script(problem: str) -> list[str]:
    """The scripted model: a right and a wrong ``add`` for the add task, else the toy
    arithmetic policy."""
    if "def add(a, b)" in problem:
        return [reply(GOOD), reply(BAD)]
    return toy_arithmetic(problem)


def test_script_draws_both_programs() -> None:
    """Precondition of the selection tests: the 4 samples hold right and wrong programs."""
    result = solve(
        PROMPT, "rollouts=4", backend=ScriptedBackend(script=script), tests=TESTS, **OPTS
    )
    codes = [c.program.split("\n\n")[-1] for c in result.candidates if c.program]
    assert sorted(set(codes)) == sorted({GOOD.rstrip(), BAD.rstrip()})


# -- test_specs: reading tests -------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "add(2, 3) == 5",
        "  assert add(2, 3) == 5  ",
        "assert add(2,3)==5, 'the sum'",
        "5 == add(2, 3)",
        ">>> add(2, 3)\n5",
        ">>> add(2,\n...     3)\n5",
    ],
)
def test_every_form_reads_the_same_test(text: str) -> None:
    assert parse_test(text) == PublicTest("add(2, 3)", "5")
    assert parse_test(text, "add") == PublicTest("add(2, 3)", "5")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("assert add(0, 0) is None", PublicTest("add(0, 0)", "None")),
        ("f('a') is True", PublicTest("f('a')", "True")),
        (">>> add(0, 0)\n", PublicTest("add(0, 0)", "None")),  # doctest: blank means None
        (">>> f([1, 2])\n[\n 1, 2]", PublicTest("f([1, 2])", "[1, 2]")),
        (
            ">>> f(0)\nTraceback (most recent call last):\n  ...\nValueError: no",
            PublicTest("f(0)", None, "ValueError"),
        ),
        ("sorted(f([3, 1])) == [1, 3]", PublicTest("sorted(f([3, 1]))", "[1, 3]")),
        ("f(k=-1) == {'a': (1, 2.5)}", PublicTest("f(k=-1)", "{'a': (1, 2.5)}")),
        ("f('x') == set()", PublicTest("f('x')", "set()")),
        ("f(1) == 0x10", PublicTest("f(1)", "16")),  # canonical literal source
    ],
)
def test_forms_with_none_exceptions_builtins_and_literals(text: str, expected: PublicTest) -> None:
    assert parse_test(text) == expected


@pytest.mark.parametrize(
    ("text", "entry", "message"),
    [
        ("", None, "the test is empty; write it as 'add(2, 3) == 5'"),
        ("   ", None, "the test is empty"),
        ("add(2, 3)", None, "a test compares one call with its expected value"),
        ("assert add(2, 3)", None, "write 'add(...) == True'"),
        ("add(2, 3) < 6", None, "use '==' to compare"),
        ("add(2, 3) is 5", None, "'is' compares only with None, True or False"),
        ("add(x, 3) == 5", None, "names the sandbox does not know (x)"),
        ("add(2, 3) == float('inf')", None, "is not a Python literal"),
        ("1 + 1 == 2", None, "the test calls no function to test"),
        ("sub(add(1, 2), 1) == 2", None, "the test calls add, sub; name the function"),
        ("sub(1, 2) == -1", "add", "does not call the entry point 'add'"),
        ("add(2, 3) == 5", "2add", "entry_point must be the name of the function"),
        ("add(2, 3) = 5", None, "not valid Python"),
        ("def add(a, b): pass", None, "not valid Python"),
        (">>> add(1, 1)\n2\n>>> add(2, 2)\n4", None, "one example per test"),
        (">>> add(1, 1)\nnot a value", None, "cannot read this doctest"),
        ("add('" + "x" * MAX_TEST_CHARS + "') == 1", None, f"over the limit of {MAX_TEST_CHARS}"),
    ],
)
def test_malformed_tests_are_refused_with_the_fix(
    text: str, entry: str | None, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_test(text, entry)
    assert message in str(info.value)


def test_parse_tests_finds_the_entry_point_checks_each_test_and_dedupes() -> None:
    tests = ["add(1, 2) == 3", PublicTest("add(2, 2)", "4"), "assert add(1,2) == 3"]
    entry, parsed = parse_tests(tests)
    assert entry == "add"
    assert parsed == (PublicTest("add(1, 2)", "3"), PublicTest("add(2, 2)", "4"))
    assert parse_tests(None) == (None, ())
    assert parse_tests([], "add") == ("add", ())
    assert parse_tests(None, "add") == ("add", ())


@pytest.mark.parametrize(
    ("tests", "message"),
    [
        ("add(1, 2) == 3", "tests must be a list of strings or PublicTest values"),
        (["add(1, 2) == 3", "sub(1, 2) == -1"], "the tests call different functions: 'add'"),
        (["add(1, 2) == 3", ""], "tests[1] (''): the test is empty"),
        (["add(1, 2) == 3", 7], "tests[1] (7): a test must be a string or a PublicTest"),
        ([PublicTest("add(1)", None)], "tests[0] ('add(1)'): a PublicTest needs expected"),
        ([PublicTest("add(1)", "x")], "is not a Python literal"),
        ([PublicTest("add(1)", "1", "Value Error")], "raises must name an exception class"),
        ([f"add({i}, 0) == {i}" for i in range(MAX_TESTS + 1)], f"over the limit of {MAX_TESTS}"),
    ],
)
def test_parse_tests_refuses_bad_lists(tests: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_tests(tests)
    assert message in str(info.value)


# -- solve / asolve ------------------------------------------------------------------------------
def test_solve_with_tests_runs_code_and_picks_the_passing_program() -> None:
    backend = ScriptedBackend(script=script)
    result = solve(PROMPT, "rollouts=4", backend=backend, tests=TESTS, **OPTS)
    assert result.strategy == "code"
    assert result.answer is not None and result.answer.endswith("return a + b")
    assert result.extras["entry_point"] == "add"  # taken from the tests
    assert [(t["call"], t["expected"], t["passed"]) for t in result.extras["tests"]] == [
        ("add(2, 3)", "5", True),
        ("add(0, 0)", "0", True),
        ("add(-1, 4)", "3", True),
    ]
    assert result.extras["passed_public"] == result.extras["n_public"] == 3
    assert sum(c["size"] for c in result.extras["clusters"]) == 4
    # The tests reached the strategy as given: the model's prompt never contained them.
    prompts = [backend.decode(r.prompt_token_ids) for call in backend.calls for r in call]
    assert prompts and all("add(-1, 4)" not in p for p in prompts)


def test_the_tests_are_what_selects() -> None:
    """Guards the previous test against passing by luck: the same samples under
    select='majority' (no test filter) give the larger, wrong cluster; an entry point
    alone (no tests, none in the docstring) also runs the code strategy."""
    backend = ScriptedBackend(script=script)
    majority = solve(PROMPT, "rollouts=4", backend=backend, tests=TESTS, select="majority", **OPTS)
    assert [(c["size"], c["passed_public"]) for c in majority.extras["clusters"]] == [
        (3, 1),
        (1, 3),
    ]
    assert majority.answer is not None and majority.answer.endswith("return a - b")
    bare = solve(PROMPT, "rollouts=4", backend=backend, entry_point="add", **OPTS)
    assert bare.strategy == "code" and bare.extras["n_public"] == 0 and bare.answer is not None


def test_asolve_takes_public_test_values_and_an_entry_point() -> None:
    async def main() -> Any:
        return await asolve(
            PROMPT,
            "rollouts=4",
            backend=ScriptedBackend(script=script),
            tests=[PublicTest("add(2, 3)", "5"), "add(1, 1) == 3"],
            entry_point="add",
            strategy="code",
            **OPTS,
        )

    result = asyncio.run(main())
    assert [t["passed"] for t in result.extras["tests"]] == [True, False]
    assert result.extras["passed_public"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"tests": ["add(2, 3) == 5"], "strategy": "best_of_n"},
            "tests is for the 'code' strategy, which runs candidate programs against public "
            "tests; strategy='best_of_n' would ignore it: pass strategy='code' (or leave "
            "strategy out), or drop tests",
        ),
        ({"entry_point": "add", "strategy": "program"}, "drop entry_point"),
        ({"tests": ["add(2, 3)"]}, "tests[0] ('add(2, 3)'): a test compares one call"),
        ({"tests": ["add(2, 3) == 5"], "entry_point": "sub"}, "does not call the entry point"),
        ({"entry_point": "not a name"}, "entry_point must be the name of the function"),
    ],
)
def test_bad_code_calls_fail_before_the_engine(kwargs: dict[str, Any], message: str) -> None:
    backend = ScriptedBackend(script=script)
    with pytest.raises(ConfigError) as info:
        solve(PROMPT, "rollouts=4", backend=backend, **kwargs)
    assert message in str(info.value)
    assert backend.calls == []


def test_math_calls_are_unchanged() -> None:
    """No tests, no entry point: the default strategy is still best-of-N."""
    result = solve("What is 12*7?", "rollouts=4", backend="scripted")
    assert result.strategy == "best_of_n" and result.answer == "84"
    assert solve("What is 12*7?", "rollouts=4", backend="scripted", tests=[]).answer == "84"


# -- ttscale serve: the official openai client ---------------------------------------------------
@pytest.fixture(scope="module")
def server():
    backend = ScriptedBackend(script=script)
    app = create_app(
        backend, api_key=KEY, max_budget="tokens=20000,rollouts=16,seconds=60", timeout_s=120
    )
    with serve_in_thread(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        yield SimpleNamespace(url=url, backend=backend, client=client)
        client.close()


def _ask(client: openai.OpenAI, model: str = "ttscale", **extra: Any) -> Any:
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        extra_body={"budget": "rollouts=4", "options": OPTS, **extra},
    )


def test_serve_returns_the_program_and_the_test_results(server) -> None:
    resp = _ask(server.client, tests=TESTS)  # bare alias: tests select the code strategy
    content = resp.choices[0].message.content
    assert content.startswith("```python\n") and content.endswith("\n```")
    assert content.removeprefix("```python\n").removesuffix("\n```").endswith("return a + b")
    assert resp.choices[0].finish_reason == "stop"
    ext = resp.model_extra["ttscale"]
    assert ext["strategy"] == "code" and ext["entry_point"] == "add"
    assert ext["program"] == ext["answer"] and ext["program"].endswith("return a + b")
    assert ext["tests"] == [
        {
            "call": "add(2, 3)",
            "expected": "5",
            "raises": None,
            "passed": True,
            "actual": "5",
            "error": None,
        },
        {
            "call": "add(0, 0)",
            "expected": "0",
            "raises": None,
            "passed": True,
            "actual": "0",
            "error": None,
        },
        {
            "call": "add(-1, 4)",
            "expected": "3",
            "raises": None,
            "passed": True,
            "actual": "3",
            "error": None,
        },
    ]
    assert ext["passed_public"] == ext["n_public"] == 3
    assert [(c["size"], c["passed_public"]) for c in ext["clusters"]] == [(1, 3), (3, 1)]
    assert {"signature_hash", "size", "passed_public"} <= set(ext["clusters"][0])
    assert ext["selection"]["select"] == "cluster"
    assert "tests" not in ext["extras"] and ext["extras"]["failures"] == {"failed_public": 3}
    assert resp.usage.model_extra["ttscale_ledger"]["programs"] > 0


def test_serve_reports_failing_tests_with_actual_values(server) -> None:
    resp = _ask(server.client, model="ttscale/code", tests=["add(2, 2) == 5"], entry_point="add")
    ext = resp.model_extra["ttscale"]
    assert ext["passed_public"] == 0
    assert {t["actual"] for t in ext["tests"]} <= {"4", "0"}  # right or wrong, both fail
    assert all(t["passed"] is False for t in ext["tests"])


def test_serve_streams_the_program_and_ends_with_the_tests(server) -> None:
    plain = _ask(server.client, tests=TESTS)
    stream = server.client.chat.completions.create(
        model="ttscale",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        extra_body={"budget": "rollouts=4", "options": OPTS, "tests": TESTS},
    )
    chunks = list(stream)
    events = [c.model_extra.get("ttscale") or {} for c in chunks]
    assert events[0]["event"] == "accepted" and events[0]["strategy"] == "code"
    assert any(e.get("event") == "progress" for e in events)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content and text.startswith("```python\n")
    done = events[-1]
    assert done["event"] == "done" and done["tests"] == plain.model_extra["ttscale"]["tests"]
    assert done["program"] == plain.model_extra["ttscale"]["program"]


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (
            {"model": "ttscale/best_of_n", "tests": ["add(2, 3) == 5"]},
            "strategy",
            "tests is for the 'code' strategy, which runs candidate programs against public "
            "tests; model 'ttscale/best_of_n' would ignore it: ask for strategy 'code' (model "
            "'ttscale/code'), leave the strategy out, or drop tests",
        ),
        ({"strategy": "program", "entry_point": "add"}, "strategy", "strategy 'program'"),
        ({"tests": ["add(2, 3)"]}, "tests", "tests[0] ('add(2, 3)'): a test compares one"),
        ({"tests": ["add(1, 1) == 2", "sub(1, 1) == 0"]}, "tests", "call different functions"),
        ({"entry_point": "1x"}, "entry_point", "entry_point must be the name"),
        ({"tests": ["x"] * (MAX_TESTS + 1)}, "tests", f"over the limit of {MAX_TESTS}"),
    ],
)
def test_serve_refuses_bad_code_requests_before_any_compute(
    server, body: dict[str, Any], param: str, message: str
) -> None:
    before = len(server.backend.calls)
    payload = {"model": "ttscale", "messages": [{"role": "user", "content": PROMPT}], **body}
    resp = httpx.post(
        f"{server.url}/v1/chat/completions",
        json=payload,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and message in error["message"], error
    assert len(server.backend.calls) == before
    wrong_type = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={**payload, "tests": [1, 2]},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    assert wrong_type.status_code == 422 and wrong_type.json()["error"]["param"] == "tests.0"


# -- ttscale mcp ---------------------------------------------------------------------------------
@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_mcp_solve_takes_tests_and_returns_program_and_results() -> None:
    pytest.importorskip("mcp", reason="needs the mcp extra: pip install 'ttscale[mcp]'")
    from test_mcp import KEY as MCP_KEY
    from test_mcp import http_session, in_process

    async with in_process(ScriptedBackend(script=script)) as (url, _):
        async with http_session(url, MCP_KEY) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            solve_tool = tools["solve"]
            props = solve_tool.input_schema["properties"]
            assert {"tests", "entry_point"} <= set(props)
            assert "add(2, 3) == 5" in props["tests"]["description"]
            assert "tests" in solve_tool.description and "program" in solve_tool.description
            assert {"program", "tests", "clusters"} <= set(solve_tool.output_schema["properties"])
            result = await session.call_tool(
                "solve",
                {"question": PROMPT, "budget": "rollouts=4", "options": OPTS, "tests": TESTS},
            )
            wrong = await session.call_tool(
                "solve",
                {
                    "question": PROMPT,
                    "budget": "rollouts=4",
                    "options": OPTS,
                    "tests": ["add(1, 1) == 3"],
                },
            )
            refused = await session.call_tool(
                "solve", {"question": PROMPT, "strategy": "best_of_n", "tests": TESTS}
            )
            bad = await session.call_tool("solve", {"question": PROMPT, "tests": ["add(1, 1)"]})
            math = await session.call_tool("solve", {"question": "What is 12*7?"})
    assert not result.is_error, result.content
    out = result.structured_content
    assert out["strategy"] == "code" and out["entry_point"] == "add"
    assert out["program"] == out["answer"] and out["program"].endswith("return a + b")
    assert [(t["call"], t["expected"], t["passed"], t["actual"]) for t in out["tests"]] == [
        ("add(2, 3)", "5", True, "5"),
        ("add(0, 0)", "0", True, "0"),
        ("add(-1, 4)", "3", True, "3"),
    ]
    assert out["passed_public"] == 3 and sum(c["size"] for c in out["clusters"]) == 4
    text = result.content[0].text
    assert text.startswith("program (add; passes 3/3 public tests):\n```python\n")
    assert "- add(2, 3) == 5: passed" in text and "ledger:" in text
    wrong_text = wrong.structured_content and wrong.content[0].text
    assert "- add(1, 1) == 3: FAILED, got " in wrong_text
    assert refused.is_error and "strategy 'best_of_n' would ignore it" in refused.content[0].text
    assert bad.is_error and "tests[0] ('add(1, 1)')" in bad.content[0].text
    assert not math.is_error and math.structured_content["answer"] == "84"
    assert math.structured_content["program"] is None and math.structured_content["tests"] == []


# -- attacks: the servers stay up ----------------------------------------------------------------
CODE_ATTACKS = {
    "loop": "def add(a, b):\n    while True:\n        pass\n",
    "fork_bomb": (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
        "def add(a, b):\n    return a + b\n"
    ),
    "env_secret": (
        "import os\n"
        "def add(a, b):\n"
        "    blob = repr(dict(os.environ))\n"
        "    for pid in os.listdir('/proc'):\n"
        "        try:\n"
        "            blob += open(f'/proc/{pid}/environ', 'rb').read().decode('latin-1')\n"
        "        except OSError:\n"
        "            pass\n"
        "    return blob\n"
    ),
}
"""Model-written programs for a code request: each fails the tests, none may hurt the server."""
ATTACK_TESTS = ["add(2, 3) == 5", "add(0, 0) == 0"]
ATTACK_OPTS = {"n": 2, "round_size": 2, "adaptive": False, "generated_inputs": 0, "timeout": 1}
HONEST = "Code task: write add(a, b), which returns the sum of a and b."


def code_question(name: str) -> str:
    return f"Code attack {name}: write add(a, b), which returns the sum of a and b."


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory):
    """``test_sandbox_servers``'s context, scripted with the code attacks (its ``served``
    and ``mcp_server`` fixtures start the servers on this script)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    context = Context(
        tmp=tmp_path_factory.mktemp("host"),
        token=uuid.uuid4().hex,
        listener=listener,
        serve_port=_free_port(),
        script=tmp_path_factory.mktemp("script") / "code_attacks.json",
    )
    lines = {code_question(name): [reply(code)] for name, code in CODE_ATTACKS.items()}
    lines[HONEST] = [reply(GOOD)]
    lines[BENIGN] = [reply("print(12 * 7)")]
    context.script.write_text(json.dumps(lines))
    try:
        yield context
    finally:
        listener.close()


def check_attack_outcome(name: str, tests: list[dict[str, Any]]) -> None:
    """Every test failed, for the reason the attack gives."""
    assert [t["call"] for t in tests] == ["add(2, 3)", "add(0, 0)"]
    assert all(t["passed"] is False for t in tests), tests
    if name in ("loop", "fork_bomb"):  # each call, or loading the program, ran out of time
        assert all(t["actual"] is None and "timed out" in t["error"] for t in tests), tests
    else:  # the environment came back as the value, scrubbed of the server's secrets
        assert all("PATH" in t["actual"] and t["error"] is None for t in tests), tests


needs_namespaces = pytest.mark.skipif(
    ISOLATION.level != "namespaces",
    reason=f"the servers' sandbox needs namespace isolation (bubblewrap): {ISOLATION.detail}",
)


@needs_namespaces
class TestServeCodeAttacks:
    """One ``ttscale serve`` subprocess for the class."""

    @pytest.mark.parametrize("name", list(CODE_ATTACKS))
    def test_survives_attack_programs(self, served: Served, ctx: Context, name: str) -> None:
        raw = served.client.chat.completions.with_raw_response.create(
            model="ttscale/code",
            messages=[{"role": "user", "content": code_question(name)}],
            extra_body={"budget": "rollouts=2", "options": ATTACK_OPTS, "tests": ATTACK_TESTS},
        )
        assert raw.http_response.status_code == 200, raw.http_response.text
        served.alive()
        assert_no_secret(raw.http_response.text)
        ext = raw.parse().model_extra["ttscale"]
        served.uids |= sandbox_uids(served.proc.pid)
        check_attack_outcome(name, ext["tests"])
        assert_host_unharmed(ctx, served.proc.pid, served.uids)
        honest = served.client.chat.completions.create(
            model="ttscale",
            messages=[{"role": "user", "content": HONEST}],
            extra_body={"budget": "rollouts=2", "options": ATTACK_OPTS, "tests": ATTACK_TESTS},
        )
        assert honest.model_extra["ttscale"]["passed_public"] == 2
        assert honest.choices[0].message.content == f"```python\n{GOOD.rstrip()}\n```"
        served.assert_answers_84()


@needs_namespaces
class TestMcpCodeAttacks:
    """One ``ttscale mcp`` subprocess (stdio) for the class."""

    @pytest.mark.parametrize("name", list(CODE_ATTACKS))
    def test_survives_attack_programs(self, mcp_server: Any, ctx: Context, name: str) -> None:
        result = mcp_server.client.solve(
            code_question(name), budget="rollouts=2", options=ATTACK_OPTS, tests=ATTACK_TESTS
        )
        assert not result.is_error, result.content
        mcp_server.alive()
        assert_no_secret(result.model_dump_json())
        mcp_server.uids |= sandbox_uids(mcp_server.pid)
        check_attack_outcome(name, result.structured_content["tests"])
        assert_host_unharmed(ctx, mcp_server.pid, mcp_server.uids)
        honest = mcp_server.client.solve(
            HONEST, budget="rollouts=2", options=ATTACK_OPTS, tests=ATTACK_TESTS
        )
        assert not honest.is_error and honest.structured_content["passed_public"] == 2
        assert honest.structured_content["program"] == GOOD.rstrip()
        mcp_server.assert_answers_84()
