"""ScriptedBackend honours the Generator contract: stop strings, max_tokens, seeds, step
continuation, context errors and prefix-cache accounting."""

from __future__ import annotations

import asyncio

import pytest

from ttscale import ContextLengthError, GenerationRequest, Generator, Problem
from ttscale.backends import ScriptedBackend

SOL = "Step one.\n\nStep two.\n\nAnswer \\boxed{9}."


def gen1(backend, **kw):
    prompt = kw.pop("prompt", None) or backend.render(Problem("nine?"))
    return asyncio.run(backend.generate([GenerationRequest(prompt, **kw)]))[0]


def test_implements_protocol():
    assert isinstance(ScriptedBackend(), Generator)


def test_stop_string_excluded_or_included():
    b = ScriptedBackend(script={"nine": [SOL]})
    out = gen1(b, stop=("\n\n",))
    c = out.completions[0]
    assert c.text == "Step one." and c.finish_reason == "stop"
    assert b.decode(c.token_ids) == "Step one.\n\n"  # stop tokens were generated
    inc = gen1(b, stop=("\n\n",), include_stop=True).completions[0]
    assert inc.text == "Step one.\n\n"


def test_continues_from_prefix():
    b = ScriptedBackend(script={"nine": [SOL, "Other.\n\n\\boxed{1}"]})
    prompt = b.render(Problem("nine?")) + b.encode("Step one.\n\n")
    out = gen1(b, prompt=prompt, n=3, stop=("\n\n",), include_stop=True)
    assert {c.text for c in out.completions} == {"Step two.\n\n"}


def test_max_tokens_truncates_with_length():
    c = gen1(ScriptedBackend(script={"nine": [SOL]}), max_tokens=5).completions[0]
    assert c.finish_reason == "length" and len(c.token_ids) == 5 and c.text == SOL[:5]


def test_deterministic_per_seed_and_varies_across_seeds():
    b = ScriptedBackend(script={"nine": [f"\\boxed{{{i}}}" for i in range(20)]})
    a1 = [c.text for c in gen1(b, n=8, seed=1).completions]
    a2 = [c.text for c in gen1(b, n=8, seed=1).completions]
    a3 = [c.text for c in gen1(b, n=8, seed=2).completions]
    assert a1 == a2 and a1 != a3


def test_context_length_error():
    with pytest.raises(ContextLengthError, match="max_model_len"):
        gen1(ScriptedBackend(max_model_len=50), max_tokens=10)


def test_prefix_cache_counts_full_blocks():
    b = ScriptedBackend(script={"nine": [SOL]}, block_size=16)
    prompt = b.render(Problem("nine?"))
    assert gen1(b, prompt=prompt).cached_tokens == 0
    assert gen1(b, prompt=prompt).cached_tokens == len(prompt) // 16 * 16
    longer = prompt + b.encode("Step one.\n\n")
    assert gen1(b, prompt=longer).cached_tokens == len(prompt) // 16 * 16


def test_toy_policy_without_script():
    out = gen1(
        ScriptedBackend(), prompt=ScriptedBackend().render(Problem("What is 12*7?")), n=10, seed=0
    )
    answers = [c.text.rsplit("boxed{", 1)[1].rstrip("}.") for c in out.completions]
    assert answers.count("84") >= 4 and set(answers) <= {"83", "84", "85"}
