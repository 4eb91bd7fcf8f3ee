"""Sample pools and exact replay on the scripted backend: replay reproduces direct generation
row for row, truncation is exact, every refusal names what the pool holds, and a killed
``ttscale pool build`` resumes with nothing lost or duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ttscale import solve
from ttscale.backends import ScriptedBackend, make_backend
from ttscale.errors import ConfigError
from ttscale.evals.datasets import Selection
from ttscale.evals.draw import char_offsets, problem_seed
from ttscale.evals.pool import build_pool, pool_summary
from ttscale.pools import ReplayGenerator, Sampling, load_pool
from ttscale.pools.pool import problem_file
from ttscale.types import DEFAULT_SYSTEM_PROMPT, GenerationRequest

ROOT = Path(__file__).resolve().parent.parent
PROBLEMS = [
    {"id": "a", "problem": "What is 12*7?", "answer": "84", "level": 1},
    {"id": "b", "problem": "What is 3+4?", "answer": "7", "level": 2},
    {"id": "c", "problem": "What is 9*9?", "answer": "81", "level": 3},
]


def _dataset(tmp_path: Path, problems: list[dict] = PROBLEMS) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "toy.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in problems))
    return path


def _pool(tmp_path: Path, k: int = 8, **sampling) -> Path:
    out = tmp_path / "pool"
    build_pool(
        _dataset(tmp_path),
        out=out,
        sampling=Sampling(
            k=k,
            temperature=sampling.pop("temperature", 0.7),
            max_tokens=sampling.pop("max_tokens", 1024),
            system_prompt=DEFAULT_SYSTEM_PROMPT,
            **sampling,
        ),
        backend=ScriptedBackend(),
        progress=False,
    )
    return out


def _row(result) -> tuple:
    led = result.ledger
    return (
        result.answer,
        [(c.text, c.tokens, c.finish_reason, c.answer) for c in result.candidates],
        (led.generated_tokens, led.prompt_tokens, led.cached_tokens, led.rollouts, led.eflops),
        result.extras["votes"],
    )


def test_pool_holds_what_replay_and_confidence_verifiers_need(tmp_path):
    pool = load_pool(_pool(tmp_path))
    assert list(pool.problems) == ["a", "b", "c"]
    s = pool.problems["a"].samples[0]
    assert s.token_ids.dtype == np.int32 and s.logprobs.dtype == np.float16
    assert s.confidence is not None and len(s.confidence) == s.num_tokens
    assert s.correct == (s.answer == "84") and s.eflops > 0
    m = pool.manifest
    assert m["sampling"]["k"] == 8 and m["engine"]["backend"] == "scripted"
    assert m["host"]["isa"] and m["packages"]["ttscale"] and "commit" in m["git"]
    assert m["hardware"] and m["model_spec"]["num_layers"] == 2
    summary = pool_summary(pool)
    assert summary["by_level"][-1]["level"] == "all" and summary["problems"] == 3


@pytest.mark.parametrize("max_tokens", [1024, 40])
def test_replay_reproduces_direct_generation_row_for_row(tmp_path, max_tokens):
    """The pool drew each problem's K samples with one per-request seed; best-of-N with that
    seed and one round asks the engine for exactly those samples, so both rows match."""
    pool = load_pool(_pool(tmp_path))
    for pid, p in pool.problems.items():
        opts = dict(n=8, round_size=8, adaptive=False, temperature=0.7, max_tokens=max_tokens)
        opts["min_sample_tokens"] = min(128, max_tokens)
        direct = solve(p.problem, "rollouts=8", backend=ScriptedBackend(), seed=p.seed, **opts)
        replay = solve(p.problem, "rollouts=8", backend=ReplayGenerator(pool), **opts)
        assert _row(replay) == _row(direct), pid
        if max_tokens == 40:  # cut samples: exactly 40 tokens, text of those tokens
            cut = [c for c in replay.candidates if c.finish_reason == "length"]
            assert cut and all(c.tokens == 40 for c in cut)


def test_truncation_is_exact_text_tokens_and_ledger(tmp_path):
    pool = load_pool(_pool(tmp_path))
    p = pool.problems["a"]
    backend = ScriptedBackend()
    for m in (1, 7, 33, 64):
        gen = ReplayGenerator(pool)
        req = GenerationRequest(p.prompt_token_ids, n=8, max_tokens=m, temperature=0.7)
        out = (asyncio_run(gen.generate([req])))[0]
        for c, s in zip(out.completions, p.samples, strict=True):
            want = min(m, s.num_tokens)
            assert c.num_tokens == want and c.token_ids == tuple(s.token_ids[:want].tolist())
            assert c.text == backend.decode(c.token_ids) or c.finish_reason == "stop"
            assert c.finish_reason == ("length" if s.num_tokens > m else s.finish_reason)


def asyncio_run(coro):
    import asyncio

    return asyncio.run(coro)


def test_replay_orders_are_seeded_and_samples_never_reused(tmp_path):
    pool = load_pool(_pool(tmp_path))
    p = pool.problems["a"]
    orders = {}
    for seed in (0, 1, 0):
        gen = ReplayGenerator(pool, order_seed=seed)
        order = gen._order(p).tolist()
        assert sorted(order) == list(range(8))  # a permutation: no sample twice
        reqs = [GenerationRequest(p.prompt_token_ids, n=3, temperature=0.7) for _ in range(2)]
        got = [c.text for o in asyncio_run(gen.generate(reqs)) for c in o.completions]
        assert got == [p.samples[i].text for i in order[:6]] and gen.remaining("a") == 2
        assert orders.setdefault(seed, order) == order  # same seed, same order
    assert orders[0] != orders[1]


def test_prefix_cache_credit_is_charged_like_an_engine(tmp_path):
    pool = load_pool(_pool(tmp_path))
    p = pool.problems["a"]
    gen = ReplayGenerator(pool)
    req = GenerationRequest(p.prompt_token_ids, n=2, temperature=0.7)
    first, second = (asyncio_run(gen.generate([req]))[0] for _ in range(2))
    bs = pool.block_size
    assert first.cached_tokens == 0
    assert second.cached_tokens == len(p.prompt_token_ids) // bs * bs


def test_greedy_pool_serves_its_sample_to_every_request(tmp_path):
    pool = load_pool(_pool(tmp_path, k=1, temperature=0.0))
    opts = dict(n=1, round_size=1, temperature=0.0, adaptive=False)
    rows = [solve("What is 12*7?", "rollouts=1", backend=ReplayGenerator(pool), **opts)]
    gen = ReplayGenerator(pool)
    rows += [solve("What is 12*7?", "rollouts=1", backend=gen, **opts) for _ in range(3)]
    assert len({r.candidates[0].text for r in rows}) == 1
    with pytest.raises(ConfigError, match="--k 1"):
        _pool(tmp_path / "g2", k=2, temperature=0.0)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(temperature=0.3), "temperature=0.3"),
        (dict(top_p=0.9), "top_p=0.9"),
        (dict(stop=("\n\n",)), "stop strings"),
        (dict(max_tokens=2048), "longer than drawn"),
        (dict(prompt_logprobs=True), "prompt logprobs"),
        (dict(logprobs=50), "logprobs=50"),
        (dict(n=9), "unused sample"),
        (dict(prompt_token_ids=(1, 2, 3)), "not a pooled problem's prompt"),
    ],
)
def test_every_refusal_names_what_the_pool_holds(tmp_path, change, message):
    pool = load_pool(_pool(tmp_path))
    p = pool.problems["a"]
    base = dict(prompt_token_ids=p.prompt_token_ids, n=2, temperature=0.7, max_tokens=512)
    req = GenerationRequest(**{**base, **change})
    with pytest.raises(ConfigError) as info:
        asyncio_run(ReplayGenerator(pool).generate([req]))
    text = str(info.value)
    assert message in text and "holds 3" in text and "8 samples" in text


def test_stepwise_searches_and_unknown_problems_are_refused(tmp_path):
    pool = load_pool(_pool(tmp_path))
    gen = ReplayGenerator(pool)
    with pytest.raises(ConfigError, match="step-wise searches"):
        solve(
            "What is 12*7?",
            "tokens=2000",
            strategy="beam_search",
            backend=gen,
            verifier=_Judge(),
            temperature=0.7,
        )
    with pytest.raises(ConfigError, match="not one of them"):
        solve("What is 5*5?", "rollouts=2", backend=gen, temperature=0.7)
    with pytest.raises(ConfigError, match="system prompt"):
        solve("What is 12*7?", "rollouts=2", backend=gen, temperature=0.7, system_prompt=None)
    with pytest.raises(ConfigError, match="needs a sample pool"):
        make_backend("replay")


class _Judge:
    name = "judge"

    async def score(self, problems, step_lists, *, ledger=None):
        return [[0.5] * len(s) for s in step_lists]


def test_resume_refuses_other_sampling_and_adds_new_problems(tmp_path):
    more = PROBLEMS + [{"id": "d", "problem": "What is 2+2?", "answer": "4", "level": 1}]
    data, out = _dataset(tmp_path, more), tmp_path / "pool"
    sampling = Sampling(k=8, temperature=0.7, max_tokens=1024, system_prompt=DEFAULT_SYSTEM_PROMPT)

    def build(sampling: Sampling, selection: Selection | None = None):
        return build_pool(
            data,
            out=out,
            sampling=sampling,
            selection=selection,
            backend=ScriptedBackend(),
            progress=False,
        )

    build(sampling, Selection(limit=3))
    first = {f.name: f.read_bytes() for f in (out / "problems").iterdir()}
    with pytest.raises(ConfigError, match="samples would mix"):
        build(sampling.model_copy(update={"k": 4}))
    outcome = build(sampling)  # the whole dataset now: only the new problem is drawn
    assert (outcome.skipped, outcome.written) == (3, 1)
    for name, blob in first.items():  # drawn problems untouched
        assert (out / "problems" / name).read_bytes() == blob
    manifest = load_pool(out).manifest
    assert manifest["dataset"]["problem_ids"] == ["a", "b", "c", "d"]
    assert [s["limit"] for s in manifest["dataset"]["selections"]] == [3, None]


def test_killed_build_resumes_with_nothing_lost_or_duplicated(tmp_path):
    problems = [
        {"id": f"p{i}", "problem": f"What is {i}*{i + 1}?", "answer": str(i * (i + 1))}
        for i in range(12)
    ]
    data = _dataset(tmp_path, problems)
    out = tmp_path / "pool"
    cmd = [
        sys.executable,
        "-m",
        "ttscale.cli",
        "pool",
        "build",
        "--backend",
        "scripted",
        "--dataset",
        str(data),
        "--out",
        str(out),
        "--k",
        "4",
        "--concurrency",
        "1",
        "-B",
        "delay_s=0.3",
        "--no-progress",
    ]
    env = {**os.environ, "TTSCALE_PRELOAD": "0"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    folder = out / "problems"

    def finished() -> list[Path]:  # not the ".tmp-*.npz" a write in flight holds
        return [f for f in folder.glob("*.npz") if not f.name.startswith(".")]

    while proc.poll() is None and len(finished() if folder.is_dir() else []) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = {f.name: f.read_bytes() for f in finished()}
    assert 3 <= len(written) < 12, "the kill should land mid-build"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"{12 - len(written)} problems drawn, {len(written)} already there" in done.stderr
    files = sorted(folder.iterdir())
    assert len(files) == 12 and not [f for f in files if f.name.startswith(".")]
    for name, blob in written.items():
        assert (folder / name).read_bytes() == blob
    pool = load_pool(out)
    assert sorted(pool.problems) == sorted(p["id"] for p in problems)
    assert all(len(p.samples) == 4 for p in pool.problems.values())
    invocations = pool.manifest["invocations"]
    assert len(invocations) == 2 and invocations[-1]["problems_after"] == 12
    assert invocations[0]["command"].startswith("ttscale pool build")
    assert invocations[1]["problems_before"] == len(written)
    assert {"cpu_model", "isa", "cores"} <= set(invocations[1]["host"])
    assert invocations[1]["seeding_at_end"] == "per_request"


def test_samples_of_a_problem_do_not_depend_on_batch_neighbours(tmp_path):
    a = load_pool(_pool(tmp_path / "x"))
    out = tmp_path / "solo"
    build_pool(
        _dataset(tmp_path, PROBLEMS[1:2]),
        out=out,
        sampling=Sampling(
            k=8, temperature=0.7, max_tokens=1024, system_prompt=DEFAULT_SYSTEM_PROMPT
        ),
        backend=ScriptedBackend(),
        progress=False,
    )
    b = load_pool(out)
    assert [s.text for s in a.problems["b"].samples] == [s.text for s in b.problems["b"].samples]
    assert a.problems["b"].seed == problem_seed(0, "b")
    assert problem_file(out, "b").is_file()


def test_char_offsets_hold_back_a_split_character():
    b = ScriptedBackend()
    text = "é=1"
    ids = b.encode(text)  # é is two byte-tokens
    offsets = char_offsets(b.decode, ids, text)
    assert offsets.tolist() == [0, 1, 2, 3]


def test_replay_eval_grid_runs_the_strategies_from_a_pool(tmp_path):
    """The CLI: ``ttscale eval --backend replay --pool`` takes the pool's problems."""
    out = _pool(tmp_path)
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "ttscale.cli",
        "eval",
        "--backend",
        "replay",
        "--pool",
        str(out),
        "--out",
        str(run),
        "--seeds",
        "3",
        "--strategy",
        "maj:best_of_n",
        "--budget",
        "rollouts=1,rollouts=4,rollouts=8",
        "-o",
        "temperature=0.7",
        "-o",
        "adaptive=false",
        "--no-progress",
        "--json",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rows"] == 3 * 3 * 3
    cells = {c["budget"]: c for c in summary["cells"]}
    assert cells["rollouts=8"]["candidates"] == 8 and cells["rollouts=1"]["candidates"] == 1
    record = json.loads((run / "run.json").read_text())
    assert record["environment"]["engine"]["backend"] == "replay"
    assert record["dataset"]["problem_ids"] == ["a", "b", "c"]


def test_replay_eval_of_100_problems_20_orders_4_strategies(tmp_path):
    """The grid the scaling report replays, at full size on the scripted backend: 8000 rows
    (measured ~25 s on a loaded 2-core host; the time is reported, not asserted)."""
    problems = [
        {"id": f"p{i}", "problem": f"What is {i}*{i + 3}?", "answer": str(i * (i + 3))}
        for i in range(100)
    ]
    pool = tmp_path / "pool"
    build_pool(
        _dataset(tmp_path, problems),
        out=pool,
        sampling=Sampling(
            k=16, temperature=0.7, max_tokens=1024, system_prompt=DEFAULT_SYSTEM_PROMPT
        ),
        backend=ScriptedBackend(),
        progress=False,
    )
    from ttscale.evals.runner import parse_strategies, replay_selection, run_eval

    dataset, chosen = replay_selection(pool, None, Selection())
    configs = parse_strategies(
        ["maj16:best_of_n,adaptive:best_of_n,maj4:best_of_n,maj8:best_of_n"],
        {
            "temperature": 0.7,
            "maj16.adaptive": False,
            "maj4.n": 4,
            "maj4.adaptive": False,
            "maj8.n": 8,
            "maj8.adaptive": False,
        },
    )
    t0 = time.perf_counter()
    outcome = run_eval(
        dataset,
        configs,
        ["rollouts=16"],
        out=tmp_path / "run",
        seeds=20,
        selection=chosen,
        backend_name="replay",
        backend_options={"pool": str(pool)},
        progress=False,
    )
    print(f"replay eval: {outcome.total} rows in {time.perf_counter() - t0:.1f} s")
    assert outcome.total == outcome.written == 100 * 20 * 4
    from ttscale.evals.store import read_rows

    rows = read_rows(tmp_path / "run")
    sizes = {(r["strategy"]): len(r["candidates"]) for r in rows}
    assert sizes["maj4"] == 4 and sizes["maj8"] == 8 and sizes["maj16"] == 16
    # maj@16 votes over the whole pool in every order (only tie-breaks, by first appearance,
    # depend on the order)
    maj16: dict[str, list] = {}
    for r in rows:
        if r["strategy"] == "maj16":
            answers = sorted(str(c["answer"]) for c in r["candidates"])
            assert maj16.setdefault(r["problem_id"], answers) == answers


def test_a_partial_write_left_by_a_kill_is_discarded_on_resume(tmp_path):
    from ttscale.pools.pool import discard_partial_writes

    folder = tmp_path / "pool" / "problems"
    folder.mkdir(parents=True)
    (folder / ".tmp-abc123.npz").write_bytes(b"half a zip")
    (folder / "p0.npz").write_bytes(b"kept")
    assert discard_partial_writes(tmp_path / "pool") == 1
    assert [f.name for f in folder.iterdir()] == ["p0.npz"]
    assert discard_partial_writes(tmp_path / "missing") == 0
