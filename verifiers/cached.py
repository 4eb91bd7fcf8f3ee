"""``CachedVerifier``: score each distinct candidate once, charge it every time it is used.

A replay grid evaluates the same pooled samples in many orders and at many ``n``; an
expensive verifier (a probe's prefill, a 1.5B judge) need not run again for a sample it has
already scored. The wrapper remembers, per (problem, candidate text), the score and what
computing it cost (eFLOPs and tokens, measured on a scratch ledger and split over the
candidates of the call in proportion to their length), and charges that cost to the run's
ledger on every use, so accounting is as if the verifier had run each time. With ``path``
the table is appended to a JSONL file, so a long scoring job resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttscale.budget import Ledger
from ttscale.protocols import CandidateVerifier, Verifier
from ttscale.types import Candidate, Problem
from ttscale.verifiers.base import aggregate, check_scores

__all__ = ["CachedVerifier", "candidate_key"]


def candidate_key(problem: Problem, text: str) -> str:
    """Identity of a scored candidate: its problem's prompt and system prompt, and its text."""
    material = f"{problem.system_prompt}\0{problem.prompt}\0{text}".encode()
    return hashlib.blake2b(material, digest_size=16).hexdigest()


class CachedVerifier:
    """Wrap ``inner`` (a ``CandidateVerifier`` or an outcome ``Verifier``) with a score cache.

    Args:
        inner: The verifier to run on candidates not seen before.
        path: Optional JSONL file to load and extend (``{key, score, eflops, tokens}``).
        agg: How an outcome verifier's per-step scores become one (``last``).
    """

    def __init__(
        self, inner: Any, path: str | os.PathLike[str] | None = None, *, agg: str = "last"
    ) -> None:
        self.inner = inner
        self.name = str(getattr(inner, "name", "verifier"))
        self.logprobs = getattr(inner, "logprobs", None)
        self.agg = agg
        self.path = Path(path) if path is not None else None
        self.table: dict[str, tuple[float, float, int]] = {}
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.table[row["key"]] = (row["score"], row["eflops"], row["tokens"])

    async def score_candidates(
        self,
        problems: Sequence[Problem],
        candidates: Sequence[Candidate],
        *,
        ledger: Ledger | None = None,
    ) -> list[float]:
        keys = [candidate_key(p, c.text) for p, c in zip(problems, candidates, strict=True)]
        todo, seen = [], set()
        for i, k in enumerate(keys):  # the first candidate of each key not scored yet
            if k not in self.table and k not in seen:
                seen.add(k)
                todo.append(i)
        if todo:
            await self._score(
                [problems[i] for i in todo], [candidates[i] for i in todo], [keys[i] for i in todo]
            )
        if ledger is not None:
            ledger.charge_verifier(
                sum(self.table[k][1] for k in keys), sum(self.table[k][2] for k in keys)
            )
        return [self.table[k][0] for k in keys]

    async def _score(
        self, problems: list[Problem], cands: list[Candidate], keys: list[str]
    ) -> None:
        scratch = Ledger()
        if isinstance(self.inner, CandidateVerifier):
            scores = list(await self.inner.score_candidates(problems, cands, ledger=scratch))
        else:
            steps = [[c.text] for c in cands]
            rows = check_scores(
                self.name, await self.inner.score(problems, steps, ledger=scratch), steps
            )
            scores = [aggregate(r, self.agg) for r in rows]
        tokens = scratch.prompt_tokens + scratch.generated_tokens + scratch.verifier_tokens
        weights = [max(len(c.text), 1) for c in cands]
        total = sum(weights)
        lines = []
        for key, score, w in zip(keys, scores, weights, strict=True):
            entry = (float(score), scratch.eflops * w / total, round(tokens * w / total))
            self.table[key] = entry
            lines.append(
                json.dumps({"key": key, "score": entry[0], "eflops": entry[1], "tokens": entry[2]})
            )
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                fh.write("\n".join(lines) + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    async def score(
        self,
        problems: Sequence[Problem],
        step_lists: Sequence[Sequence[str]],
        *,
        ledger: Ledger | None = None,
    ) -> list[list[float]]:
        """Step scores pass straight through (a cache of whole candidates does not apply)."""
        if not isinstance(self.inner, Verifier):
            raise TypeError(f"{self.name} cannot score steps")
        return await self.inner.score(problems, step_lists, ledger=ledger)
