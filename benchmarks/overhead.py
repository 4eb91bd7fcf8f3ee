"""Orchestration overhead of ``solve()``: best-of-16 vs one raw ``vllm.LLM.generate`` call.

Both sides run on the *same* engine instance in one process, interleaved after a warm-up
(order rotated each rep), the raw call from a worker thread as ``solve`` makes it,
with the same prompt token ids, seed, temperature and max_tokens, so they sample the same
tokens (per-request seeds); the token counts are checked equal. The difference is what
ttscale adds: chat rendering, request/ledger bookkeeping, the thread hop, answer
extraction and math-verify voting.

    .venv/bin/python benchmarks/overhead.py [--max-tokens 128] [--reps 3]

Last line: ``RESULT overhead_ratio=<(solve_wall - raw_wall)/raw_wall> solve_tok_s=<>
raw_tok_s=<> ...`` (medians over reps). ``orchestration_ratio`` is (wall - engine) / wall
of the solve side from its own ledger: the same question asked without the noise of a
second engine call, which matters on a shared 2-core host.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from ttscale import Budget, Problem, solve
from ttscale.backends import VLLMBackend
from ttscale.host import host_info
from ttscale.strategies import BestOfN

PROMPT = "What is the sum of the first 20 positive odd numbers?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    import vllm
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    backend = VLLMBackend(seed=0)
    llm = backend._llm  # the raw engine, same instance: no load-time or cache differences
    problem = Problem(PROMPT)
    strategy = BestOfN(
        n=args.n,
        round_size=args.n,
        adaptive=False,
        max_tokens=args.max_tokens,
        min_sample_tokens=min(128, args.max_tokens),
        seed=args.seed,
    )
    budget = Budget()
    params = SamplingParams(
        n=args.n,
        max_tokens=args.max_tokens,
        temperature=strategy.temperature,
        top_p=strategy.top_p,
        seed=args.seed,  # round 0 of BestOfN uses seed + 0
    )

    pool = ThreadPoolExecutor(max_workers=1)

    def raw_call() -> tuple[float, int]:
        prompt = TokensPrompt(prompt_token_ids=list(backend.render(problem)))
        t0 = time.perf_counter()
        out = llm.generate([prompt], params, use_tqdm=False)
        return time.perf_counter() - t0, sum(len(c.token_ids) for c in out[0].outputs)

    def raw() -> tuple[float, int]:
        # The engine call from a worker thread, as solve() makes it (asyncio.to_thread):
        # vLLM's OpenMP team is per calling thread, and on a loaded host the main thread's
        # pinned team and a worker's team run at different speeds. Like-for-like baseline.
        return pool.submit(raw_call).result()

    options = {
        f: getattr(strategy, f)
        for f in ("n", "round_size", "adaptive", "max_tokens", "min_sample_tokens", "seed")
    }

    def via_solve() -> tuple[float, int, float]:
        t0 = time.perf_counter()
        res = solve(PROMPT, budget, backend=backend, **options)
        wall = time.perf_counter() - t0
        led = res.ledger
        return wall, led.generated_tokens, (led.wall_seconds - led.engine_seconds)

    raw()  # warm-up: kernels, prefix cache, math-verify import, each thread's OpenMP team
    via_solve()
    raw_call()
    raw_t, main_t, solve_t, orch = [], [], [], []
    tokens = None
    for rep in range(args.reps):
        pairs = [("raw", raw), ("main", raw_call), ("solve", via_solve)]
        for name, fn in pairs[rep % 3 :] + pairs[: rep % 3]:  # rotate the order each rep
            r = fn()
            if tokens is None:
                tokens = r[1]
            if r[1] != tokens:
                raise SystemExit(
                    f"token counts differ ({name}: {r[1]} vs {tokens}); seeds not honoured"
                )
            {"raw": raw_t, "main": main_t, "solve": solve_t}[name].append(r[0])
            if name == "solve":
                orch.append(r[2])
            print(f"rep {rep} {name:5s} wall={r[0]:.3f}s tokens={r[1]}", flush=True)
    raw_med, solve_med = statistics.median(raw_t), statistics.median(solve_t)
    main_med = statistics.median(main_t)
    ratio = (solve_med - raw_med) / raw_med
    info = host_info()
    print(
        f"raw (worker thread): {raw_t}\nraw (main thread): {main_t}\nsolve: {solve_t}\n"
        f"orchestration (wall-engine) per solve: "
        f"{[round(o, 4) for o in orch]} s\nvllm {vllm.__version__}, dtype {backend.dtype}, "
        f"host {info.cpu_model} ({info.isa}, {info.cores} cores)"
    )
    print(
        f"RESULT overhead_ratio={ratio:.4f} solve_tok_s={tokens / solve_med:.2f} "
        f"raw_tok_s={tokens / raw_med:.2f} bench=overhead n={args.n} max_tokens={args.max_tokens} "
        f"tokens={tokens} reps={args.reps} orchestration_s={statistics.median(orch):.4f} "
        f"orchestration_ratio={statistics.median(orch) / solve_med:.5f} "
        f"main_thread_ratio={(solve_med - main_med) / main_med:.4f} "
        f"spread_raw_s={max(raw_t) - min(raw_t):.3f} "
        f"spread_solve_s={max(solve_t) - min(solve_t):.3f} "
        f"device=cpu isa={info.isa} dtype={backend.dtype}"
    )


if __name__ == "__main__":
    main()
