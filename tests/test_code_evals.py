"""HumanEval in the eval runner, code pools and their exact replay, and the code benchmark, on
the scripted backend (a "coder" whose replies are HumanEval's canonical solutions or broken
programs) with programs run in the real sandbox:

- ``run_eval`` on humaneval grades the selected program and every candidate on the hidden
  tests (canonical -> correct, broken -> wrong), never sends a hidden test to the model, and
  resumes without redoing a row;
- ``ttscale pool build --format code`` stores programs, public-test runs, hidden grades, the
  generated-inputs completion and every harness run; replaying the ``code`` strategy gives
  the same result as running it live on the same samples, for select first / majority /
  public / cluster; what no pool can serve is refused with the fix;
- ``scripts/code_pools_cpu.sh`` (scripted, two problems, without the CPU lock) and
  ``benchmarks/code.py`` on tiny pools end to end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ttscale.backends import ScriptedBackend, make_backend
from ttscale.budget import Budget
from ttscale.errors import ConfigError
from ttscale.evals import work
from ttscale.evals.code import load_humaneval
from ttscale.evals.datasets import Selection
from ttscale.evals.pool import build_pool
from ttscale.evals.runner import parse_strategies, run_eval
from ttscale.evals.store import read_rows
from ttscale.pools import ReplayGenerator, Sampling, load_pool
from ttscale.pools.pool import CodeSettings
from ttscale.sandbox import default_sandbox, detect_isolation
from ttscale.strategies import make_strategy
from ttscale.strategies.code import INPUTS_MAX_TOKENS, code_problem, inputs_problem
from ttscale.types import GenerationRequest, Problem
from ttscale.verifiers.code_tests import assemble_program
from ttscale.verifiers.programs import extract_program

pytestmark = pytest.mark.skipif(
    detect_isolation().level != "namespaces",
    reason="code evals run programs in the sandbox, which needs namespaces here",
)
ROOT = Path(__file__).resolve().parents[1]
IDS = ("HumanEval/0", "HumanEval/2", "HumanEval/13")
PROBLEMS = {p.id: p for p in load_humaneval(Selection(ids=IDS))}


def fence(code: str) -> str:
    return f"Here is the program.\n```python\n{code}\n```\n"


def replies(kind: str = "mixed") -> dict[str, list[str]]:
    """Scripted replies: the generated-inputs request first (its prompt also holds the
    problem), then the programs for the problem."""
    out: dict[str, list[str]] = {}
    for p in PROBLEMS.values():
        good = p.prompt + p.canonical_solution
        # the same behaviour, written differently: a second member of the right cluster
        alt = good + "\n\n# checked\n"
        broken = f"def {p.entry_point}(*args):\n    return None\n"
        calls = {
            "has_close_elements": ["[1.0, 1.5, 3.0], 0.6", "[], 1.0", "[2.0, 2.0], 0.1"],
            "truncate_number": ["1.25", "7.0", "0.5"],
            "greatest_common_divisor": ["12, 18", "7, 1", "100, 75"],
        }[p.entry_point]
        out[f"test inputs for `{p.entry_point}`"] = [
            "```python\n" + "\n".join(f"{p.entry_point}({c})" for c in calls) + "\n```"
        ]
        out[f"def {p.entry_point}("] = {
            "good": [fence(good)],
            "broken": [fence(broken)],
            "mixed": [fence(good), fence(alt), fence(broken), fence(broken), "No code."],
        }[kind]
    return out


def hidden_markers() -> list[str]:
    """Text only the hidden tests contain (their check function and assertions)."""
    out = []
    for p in PROBLEMS.values():
        out += ["def check(candidate)", "METADATA"]
        out += [ln.strip() for ln in p.hidden.splitlines() if ln.strip().startswith("assert")]
    return out


def test_runner_grades_on_hidden_tests_never_sends_them_and_resumes(tmp_path):
    configs = parse_strategies(["code"], {"n": 3, "round_size": 3})
    outcomes = {}
    backends = {}
    for kind in ("good", "broken"):
        backends[kind] = ScriptedBackend(script=replies(kind))
        outcomes[kind] = run_eval(
            "humaneval",
            configs,
            ["tokens=100000"],
            out=tmp_path / kind,
            selection=Selection(ids=IDS[:2]),
            backend=backends[kind],
            progress=False,
        )
    good, broken = read_rows(tmp_path / "good"), read_rows(tmp_path / "broken")
    assert len(good) == len(broken) == 2
    for r in good:
        assert r["domain"] == "code" and r["correct"] and r["pass_at_n"]
        assert r["public_passed"] == r["public_tests"] > 0
        assert r["ledger"]["generated_tokens"] > 0 and r["ledger"]["eflops"] > 0
        assert all(c["correct"] for c in r["candidates"])
    for r in broken:
        assert not r["correct"] and not r["pass_at_n"] and r["public_passed"] == 0
    assert outcomes["good"].correct == 2 and outcomes["broken"].correct == 0
    record = json.loads((tmp_path / "good" / "run.json").read_text())
    assert record["dataset"]["name"] == "humaneval" and len(record["dataset"]["sha256"]) == 64
    # Hidden tests never reach the model: decode every prompt the strategy sent.
    sent = [
        backends[k].decode(req.prompt_token_ids) for k in backends for call in backends[k].calls
        for req in call
    ]  # fmt: skip
    assert any("test inputs for" in s for s in sent)  # the inputs request was made
    markers = hidden_markers()
    assert markers and not [m for m in markers if any(m in s for s in sent)]
    # Resumable: a rerun of the same grid solves nothing again.
    before = len(backends["good"].calls)
    again = run_eval(
        "humaneval",
        configs,
        ["tokens=100000"],
        out=tmp_path / "good",
        selection=Selection(ids=IDS[:2]),
        backend=backends["good"],
        progress=False,
    )
    assert (again.written, again.skipped, again.correct) == (0, 2, 2)
    assert len(backends["good"].calls) == before and len(read_rows(tmp_path / "good")) == 2


def build_cli(
    out: Path, script: Path, *extra: str, ids: tuple[str, ...] = IDS
) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "ttscale.cli", "pool", "build", "--backend", "scripted",
        "--script", str(script), "--dataset", "humaneval", "--format", "code",
        "--max-tokens", "768", "--no-progress", "--out", str(out), "--ids", ",".join(ids),
        *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)


def build_scripted_pool(
    out: Path, backend: ScriptedBackend, *, k: int, temperature: float, ids=IDS
) -> None:
    """A HumanEval code pool drawn in-process from a scripted backend."""
    build_pool(
        "humaneval",
        out=out,
        sampling=Sampling(
            k=k,
            temperature=temperature,
            max_tokens=768,
            system_prompt="You are a helpful assistant.",
            code=CodeSettings(),
        ),
        selection=Selection(ids=ids),
        backend=backend,
        progress=False,
    )


@pytest.fixture(scope="module")
def code_pool(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("code_pool")
    script = base / "script.json"
    script.write_text(json.dumps(replies()))
    done = build_cli(base / "k16", script, "--k", "16", "--temperature", "0.7", "--top-p", "0.95")
    assert done.returncode == 0, done.stderr[-3000:]
    return base


class LiveOnPoolSamples:
    """The pool's samples, but every sandbox run made for real and the generated-inputs
    request answered by the scripted coder: the live run on the same samples."""

    def __init__(self, replay: ReplayGenerator, live: ScriptedBackend) -> None:
        self.replay, self.live = replay, live
        self.executor = default_sandbox()
        self.model_spec = replay.model_spec
        self._live: set[tuple[int, ...]] = set()
        self._map: dict[tuple[int, ...], tuple[int, ...]] = {}

    def render(self, problem: Problem) -> tuple[int, ...]:
        ids = self.replay.render(problem)
        if problem.prompt.startswith("Here is a Python programming problem"):
            self._live.add(ids)
            self._map[ids] = self.live.render(problem)
        return ids

    def profile(self):
        return self.replay.profile()

    async def generate(self, requests):
        out = []
        for r in requests:
            ids = tuple(r.prompt_token_ids)
            if ids in self._live:
                live = dataclasses.replace(r, prompt_token_ids=self._map[ids])
                got = (await self.live.generate([live]))[0]
                out.append(dataclasses.replace(got, prompt_tokens=len(ids), cached_tokens=0))
            else:
                out.append((await self.replay.generate([r]))[0])
        return out


def _fingerprint(result):
    def ran(r):  # a run's wall time is the one thing two runs of a program do not share
        return None if r is None else dataclasses.replace(r, seconds=0.0)

    return (
        result.answer,
        [(c.text, c.program, ran(c.execution)) for c in result.candidates],
        result.extras["clusters"],
        result.extras["passed_public"],
        result.extras["selection"],
        result.extras["inputs"],
        result.ledger.generated_tokens,
    )


def test_code_pool_holds_programs_runs_grades_and_the_inputs_completion(code_pool):
    pool = load_pool(code_pool / "k16")
    assert pool.manifest["format_version"] == 3 and pool.sampling.code is not None
    assert pool.sampling.system_prompt == "You are a helpful assistant."
    for pid, p in pool.problems.items():
        cp = PROBLEMS[pid]
        assert p.entry_point == cp.entry_point and len(p.samples) == 16
        assert [a.kind for a in p.prompts] == ["inputs"]
        assert p.prompts[0].max_tokens == INPUTS_MAX_TOKENS
        assert p.prompts[0].user_text == inputs_problem(cp.prompt, cp.entry_point, 8).prompt
        for s in p.samples:
            if s.program is None:
                assert s.correct is False and "```python" not in s.text
            else:
                good = "return None" not in s.program
                assert s.correct is good and cp.prompt.strip() in s.program
                assert s.execution is not None and s.execution.ok
        assert len(p.runs) >= 2 and all(r.ok for r in p.runs.values())
        assert not any(cp.hidden in r.stdout for r in p.runs.values())


@pytest.mark.parametrize("select", ["first", "majority", "public", "cluster"])
def test_replaying_the_code_strategy_equals_live_on_the_same_samples(code_pool, select):
    pool = load_pool(code_pool / "k16")
    live_coder = ScriptedBackend(script=replies())
    for pid in IDS[:2]:
        cp = PROBLEMS[pid]
        problem = Problem(
            cp.prompt, "You are a helpful assistant.", id=pid, entry_point=cp.entry_point,
            tests=cp.public_tests,
        )  # fmt: skip
        for n, adaptive, seed in ((4, False, 0), (16, True, 1)):
            strategy = make_strategy(
                "code", n=n, round_size=4, select=select, adaptive=adaptive, seed=seed
            )
            budget = Budget.parse("tokens=1000000")
            replayed = asyncio.run(
                strategy.run(problem, ReplayGenerator(pool, order_seed=seed), None, budget)
            )
            live_gen = LiveOnPoolSamples(ReplayGenerator(pool, order_seed=seed), live_coder)
            live = asyncio.run(strategy.run(problem, live_gen, None, budget))
            assert replayed.extras["executor"] == "pool" and live.extras["executor"] != "pool"
            assert _fingerprint(replayed) == _fingerprint(live), (pid, select, n)


def test_replay_refuses_what_no_pool_holds(code_pool, tmp_path):
    gen = ReplayGenerator(load_pool(code_pool / "k16"))
    with pytest.raises(ConfigError, match="run those live"):
        gen.render(
            Problem("Your previous program fails these examples", "You are a helpful assistant.")
        )
    for options, match in (
        ({"select": "pairwise"}, "run those live"),
        ({"debug_rounds": 1}, "run those live"),
        ({"generated_inputs": 4}, r"generated_inputs=8 to replay it exactly"),
        ({"timeout": 2.0}, r"timeout=5.0 to replay it exactly"),
    ):
        configs = parse_strategies(["c:code"], {"n": 4, **options})
        with pytest.raises(ConfigError, match=match):
            run_eval(
                "humaneval",
                configs,
                ["tokens=100000"],
                out=tmp_path / "refused",
                selection=Selection(ids=IDS),
                backend=make_backend("replay", pool=str(code_pool / "k16")),
                backend_name="replay",
                progress=False,
            )


class OtherTemplate(ScriptedBackend):
    """A live engine whose chat template differs from the pool's engine."""

    def render(self, problem: Problem) -> tuple[int, ...]:
        return self.encode(f"<other>{problem.prompt}")


def test_replay_extended_live_takes_samples_from_the_pool_and_generates_the_rest(code_pool):
    pool = load_pool(code_pool / "k16")
    good = {pid: fence(p.prompt + p.canonical_solution) for pid, p in PROBLEMS.items()}
    debugged = 0
    for seed in range(6):
        pid = IDS[seed % len(IDS)]
        cp = PROBLEMS[pid]
        problem = Problem(
            cp.prompt, "You are a helpful assistant.", id=pid, entry_point=cp.entry_point,
            tests=cp.public_tests,
        )  # fmt: skip
        # The fix a self-debug request gets (matched first: its prompt also holds the problem).
        live = ScriptedBackend(script={"Your previous program": [good[pid]], **replies()})
        strategy = make_strategy(
            "code", n=1, round_size=1, select="first", debug_rounds=1, adaptive=False, seed=seed
        )
        plain = make_strategy("code", n=1, round_size=1, select="first", adaptive=False, seed=seed)
        budget = Budget.parse("tokens=1000000")
        extended = ReplayGenerator(pool, order_seed=seed, live=live)
        extended.check_live()
        got = asyncio.run(strategy.run(problem, extended, None, budget))
        base = asyncio.run(plain.run(problem, ReplayGenerator(pool, order_seed=seed), None, budget))
        assert got.extras["executor"] == "pool+sandbox"
        sent = [live.decode(r.prompt_token_ids) for call in live.calls for r in call]
        assert all("Your previous program" in t for t in sent)  # pooled prompts never go live
        first = base.candidates[0]
        if first.program is None or base.extras["passed_public"] == base.extras["n_public"]:
            assert not sent and got.candidates[0].text == first.text
            continue
        debugged += 1
        assert len(sent) == 1 and got.extras["debug"] == {"rounds": 1, "replaced": 1}
        assert got.answer == assemble_program(cp.prompt, extract_program(good[pid]))
        assert got.extras["passed_public"] == got.extras["n_public"] > 0
    assert debugged  # some order drew a failing first program


def test_replay_extended_live_is_refused_for_another_template_and_stray_options(code_pool):
    pool = load_pool(code_pool / "k16")
    with pytest.raises(ConfigError, match="renders its prompts differently"):
        make_backend("replay", pool=pool, live=OtherTemplate(script=replies()))
    with pytest.raises(ConfigError, match="live=NAME"):
        make_backend("replay", pool=pool, kv_cache_gib=6)
    gen = make_backend("replay", pool=pool, live=ScriptedBackend(script=replies()))
    assert gen.profile()["backend"] == "replay+live" and gen.profile()["live"]["model"] == "script"
    # A pooled prompt with settings the pool cannot serve is refused, not generated live.
    ids = gen.render(code_problem(Problem(PROBLEMS[IDS[0]].prompt)))
    request = GenerationRequest(ids, n=1, max_tokens=100, temperature=0.2, top_p=0.95)
    with pytest.raises(ConfigError, match="temperature=0.2"):
        asyncio.run(gen.generate([request]))
    assert not gen.live.calls


def test_runner_replays_pairwise_and_debug_with_a_live_engine(code_pool, tmp_path):
    live = ScriptedBackend(script=replies())
    configs = parse_strategies(
        ["pw:code,dbg:code"],
        {"n": 8, "round_size": 8, "adaptive": False, "pw.select": "pairwise",
         "dbg.select": "public", "dbg.debug_rounds": 1},
    )  # fmt: skip
    outcome = run_eval(
        "humaneval",
        configs,
        ["tokens=100000"],
        out=tmp_path / "extended",
        backend=make_backend("replay", pool=str(code_pool / "k16"), live=live),
        backend_name="replay",
        selection=Selection(ids=IDS),
        progress=False,
    )
    rows = read_rows(tmp_path / "extended")
    assert outcome.total == len(rows) == 6 and all(r["correct"] for r in rows)
    record = json.loads((tmp_path / "extended" / "run.json").read_text())
    assert "replay+live" in json.dumps(record)


def test_runner_replays_with_the_pools_grades(code_pool, tmp_path, monkeypatch):
    async def no_sandbox(*args, **kwargs):
        raise AssertionError("replay must grade with the pool's stored grades")

    monkeypatch.setattr(work, "agrade_programs", no_sandbox)
    configs = parse_strategies(
        ["first:code,cl:code"],
        {"n": 8, "round_size": 8, "adaptive": False, "first.select": "first"},
    )
    outcome = run_eval(
        "humaneval",
        configs,
        ["tokens=100000"],
        out=tmp_path / "replay",
        seeds=2,
        backend=make_backend("replay", pool=str(code_pool / "k16")),
        backend_name="replay",
        selection=Selection(ids=IDS),
        progress=False,
    )
    rows = read_rows(tmp_path / "replay")
    assert outcome.total == len(rows) == 3 * 2 * 2
    pool = load_pool(code_pool / "k16")
    grade = {(pid, s.program): s.correct for pid, p in pool.problems.items() for s in p.samples}
    for r in rows:
        assert r["ledger"]["eflops"] > 0 and len(r["candidates"]) == 8
        assert r["pass_at_n"] == any(c["correct"] for c in r["candidates"])
    clustered = [r for r in rows if r["strategy"] == "cl"]
    assert all(r["correct"] for r in clustered)  # two agreeing right programs beat the rest
    traces = {
        json.loads(p.read_text())["key"]: json.loads(p.read_text())
        for p in (tmp_path / "replay" / "traces").glob("*.json")
    }
    for r in rows:
        assert r["correct"] == grade[(r["problem_id"], traces[r["key"]]["answer"])]


def test_code_pools_script_draws_greedy_pools(tmp_path):
    if not (ROOT / ".venv" / "bin" / "ttscale").exists():
        pytest.skip("the script calls .venv/bin/ttscale")
    script = tmp_path / "script.json"
    script.write_text(json.dumps(replies("good")))
    env = {
        **os.environ,
        "BACKEND": "scripted",
        "SCRIPT": str(script),
        "POOLS": str(tmp_path / "pools"),
        "IDS": ",".join(IDS[:2]),
        "CPU_LOCK": "none",  # never the shared lock a real pool build may hold
    }

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(ROOT / "scripts" / "code_pools_cpu.sh"), "greedy"],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    first = run()
    assert first.returncode == 0, first.stderr[-2000:]
    for name in ("humaneval_greedy", "humaneval_greedy_1.5b"):
        pool = load_pool(tmp_path / "pools" / name)
        assert pool.sampling.k == 1 and pool.sampling.temperature == 0
        assert all(p.samples[0].correct for p in pool.problems.values())
    bad = subprocess.run(
        ["bash", str(ROOT / "scripts" / "code_pools_cpu.sh"), "pool"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "set T=" in bad.stderr


def test_code_benchmark_on_tiny_pools(code_pool, tmp_path):
    build_scripted_pool(code_pool / "greedy", ScriptedBackend(script=replies()), k=1, temperature=0)

    def bench(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable, str(ROOT / "benchmarks" / "code.py"),
                "--pool", str(code_pool / "k16"), "--greedy", str(code_pool / "greedy"),
                "--large-greedy", str(code_pool / "greedy"), "--orders", "2",
                "--out", str(tmp_path / "report"), "--runs", str(tmp_path / "runs"), *extra,
            ],
            capture_output=True, text=True, timeout=600, cwd=ROOT,
        )  # fmt: skip

    p = bench()
    assert p.returncode == 0, p.stderr[-3000:]
    result = p.stdout.strip().splitlines()[-1]
    fields = dict(kv.split("=", 1) for kv in result.split()[1:])
    assert result.startswith("RESULT ") and list(fields) == [
        "pass1_small_best", "best_config", "pass1_large_greedy", "eflops_ratio",
        "pass1_small_greedy", "oracle_pass_at16", "n_problems", "isa",
    ]  # fmt: skip
    assert fields["n_problems"] == "3" and fields["isa"]
    assert re.fullmatch(r"[a-z_]+@n=\d+", fields["best_config"]), fields["best_config"]
    pool = load_pool(code_pool / "k16")
    oracle = sum(any(p.correct) for p in pool.problems.values()) / 3
    assert fields["oracle_pass_at16"] == f"{oracle:.3f}"
    assert float(fields["pass1_small_best"]) == 1.0  # cluster selection finds the right one
    summary = json.loads((tmp_path / "report" / "code.json").read_text())
    families = {pt["family"] for pt in summary["points"]}
    assert families == {
        "0.5B greedy", "1.5B greedy", "0.5B first", "0.5B majority", "0.5B public",
        "0.5B cluster", "0.5B adaptive cluster", "0.5B adaptive public",
    }  # fmt: skip
    ns = sorted(pt["n"] for pt in summary["points"] if pt["family"] == "0.5B cluster")
    assert ns == [1, 2, 4, 8, 16] and all(summary["adaptive"].values())
    single = [pt for pt in summary["points"] if pt["family"] == "0.5B first"]
    # select=first at any n is one sample: its pass@1 sits near the pool's mean c/K
    assert all(0 <= pt["pass1"] <= 1 for pt in single) and summary["pool"]["mean_pass1"] < 1
    for f in ("report.md", "code.json", "code_eflops.png"):
        assert (tmp_path / "report" / f).stat().st_size > 0
    # S*'s live steps: the same pools extended with a live engine (here the scripted coder);
    # the replay grids above are resumed, not redone.
    live_script = tmp_path / "live.json"
    live_script.write_text(json.dumps(replies()))
    p = bench("--live", "scripted", "--live-script", str(live_script), "--live-ns", "4,16")
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((tmp_path / "report" / "code.json").read_text())
    live = {(pt["family"], pt["n"], pt["problems"]) for pt in summary["points"]} - {
        (pt["family"], pt["n"], pt["problems"]) for pt in summary["points"]
        if pt["grid"] not in summary["live_grids"]
    }  # fmt: skip
    assert live == {
        ("0.5B greedy + self-debug", 1, 3), ("0.5B pairwise (S*)", 4, 3),
        ("0.5B pairwise (S*)", 16, 3), ("0.5B S* adaptive (debug + pairwise)", 16, 3),
    }  # fmt: skip
    report = (tmp_path / "report" / "report.md").read_text()
    assert "-B live=scripted" in report and "| 0.5B pairwise (S*) *live* | 16 |" in report


class SeedFallback(ScriptedBackend):
    """An engine that gives up per-request seeds after its first call (as vLLM on CPU can)."""

    async def generate(self, requests):
        out = await super().generate(requests)
        self.seeding = "engine"
        return out


def test_pool_manifest_records_a_seeding_fallback(tmp_path):
    out = tmp_path / "pool"
    backend = SeedFallback(script=replies())
    build_scripted_pool(out, backend, k=2, temperature=0.7, ids=IDS[:2])
    manifest = load_pool(out).manifest
    assert manifest["engine"]["seeding"] == "per_request"  # as the engine started
    assert manifest["invocations"][-1]["seeding_at_end"] == "engine"
