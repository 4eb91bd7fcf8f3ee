"""``benchmarks/verifiers_pool.py``: judging only the problems with both right and wrong
samples (``--judge-subset mixed``) gives the same scores there and the same vote outcomes
everywhere as judging every sample."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np

from ttscale.backends import ScriptedBackend
from ttscale.evals.pool import build_pool
from ttscale.pools import Sampling, load_pool
from ttscale.types import DEFAULT_SYSTEM_PROMPT
from ttscale.verifiers import ScriptedVerifier
from ttscale.verifiers.cached import CachedVerifier

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import verifiers_pool as vp  # noqa: E402

PROBLEMS = [
    {"id": "a", "problem": "What is 12*7?", "answer": "84", "level": 1},
    {"id": "c", "problem": "Name a prime.", "answer": "2", "level": 1},  # every sample: "?"
    {"id": "b", "problem": "What is 3+4?", "answer": "7", "level": 2},
]


def test_judging_only_mixed_problems_is_exact_for_every_vote(tmp_path):
    data = tmp_path / "toy.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    out = tmp_path / "pool"
    sampling = Sampling(k=6, temperature=0.7, max_tokens=1024, system_prompt=DEFAULT_SYSTEM_PROMPT)
    build_pool(data, out=out, sampling=sampling, backend=ScriptedBackend(), progress=False)
    pool = load_pool(out)
    assert vp.mixed_ids(pool) == ["a", "b"]
    judge = ScriptedVerifier(lambda p, steps: [(len(steps[-1]) * 7919 % 97) / 97])
    full, full_cost = asyncio.run(vp.score_pool(pool, CachedVerifier(judge)))
    part, part_cost = asyncio.run(vp.score_mixed(pool, CachedVerifier(judge)))
    c = [pid for pid in pool.problems for _ in pool.problems[pid].samples]
    judged = np.array([pid != "c" for pid in c])
    assert np.array_equal(part[judged], full[judged]) and np.all(part[~judged] == 0.5)
    assert np.allclose(part_cost[~judged], full_cost[judged].mean())  # imputed
    grids = [
        asyncio.run(
            vp.replay_grid(pool, vp.TableVerifier("j", pool, s, cost), [2, 6], orders=3, keep=0.5)
        )["acc"]
        for s, cost in ((full, full_cost), (part, part_cost))
    ]
    assert grids[0] == grids[1]
    assert len({float(np.mean(r)) for r in grids[0]["weighted"][2]}) > 1  # a right, c wrong
