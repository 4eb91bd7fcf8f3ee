"""Verifier-guided beam search and DVTS. Spends: tokens, rollouts, eFLOPs, seconds.

Beam search guided by step scores from a (process) verifier, after Snell et al. 2024,
"Scaling LLM Test-Time Compute Optimally can be More Effective than Scaling Model
Parameters" (arXiv:2408.03314), and the open recipe of huggingface/search-and-learn
(Beeching, Tunstall & Rush 2024, "Scaling test-time compute with open models"), which also
introduced DVTS (diverse verifier tree search).

With ``n`` = N samples per step, ``beam_width`` = M and ``subtrees`` = S:

1. Each subtree holds N / (M * S) live prefixes (initially copies of the prompt).
2. Every live prefix is sampled M times up to the step delimiter (``Problem.step_delimiter``),
   all subtrees in **one** engine call; identical prefixes go out as one request with
   ``n`` samples, so their KV is shared.
3. With ``lookahead`` = k > 0, each unfinished child is rolled out greedily for up to k more
   steps (one more batched call) and scored at the end of that rollout, which is discarded.
4. **One** verifier call scores all children. Each subtree keeps its top-scored children,
   as many as it expanded; a kept child that is finished (EOS, i.e. ``finish_reason``
   ``stop`` without the delimiter; a closed ``\\boxed{}``; or ``max_tokens``) ends its
   beam, so the subtree shrinks by one.
5. Stop when nothing is live, after ``max_steps``, or when the budget cannot pay for a step
   of at least ``min_step_tokens`` per sample (the lowest-scored prefixes are dropped first).
6. Every finished child is a candidate; the answer is a verifier-weighted vote by default.

DVTS is S = N / M subtrees of one beam each: greedy-by-verifier search in independent trees,
which keeps diversity that a single beam loses to one dominant prefix. ``DVTS`` is this class
with ``subtrees=None`` (= N / M). The verifier's own engine work (an LLM judge) is recorded
on the same ledger; ``verifier_reserve`` holds budget back for it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ttscale.budget import Budget, Ledger
from ttscale.errors import BudgetError, ConfigError, VerifierRequired
from ttscale.protocols import Generator, TokenStepVerifier, Verifier
from ttscale.strategies.search import (
    Node,
    check_positive,
    check_sampling,
    fit_step,
    keep_top,
    merge_prompts,
    score_nodes,
    search_result,
    step_logprobs,
    to_candidate,
)
from ttscale.types import GenerationRequest, Problem, Result

__all__ = ["DVTS", "BeamSearch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BeamSearch:
    """Step-level beam search over a verifier's scores (DVTS with ``subtrees=None``)."""

    name: ClassVar[str] = "beam_search"

    n: int = 16
    """N: samples per step, i.e. live prefixes x ``beam_width``."""
    beam_width: int = 4
    """M in Snell et al.: children sampled per live prefix."""
    subtrees: int | None = 1
    """S: independent subtrees (1 = one beam; ``None`` = N / M subtrees of one beam, DVTS)."""
    max_steps: int = 40
    step_tokens: int = 256
    """Cap on generated tokens per step sample (a longer step is cut and continued)."""
    max_tokens: int = 1024
    """Cap on generated tokens per solution (a beam reaching it is finished)."""
    min_step_tokens: int = 32
    """Smallest per-sample step cap worth launching when the budget runs low."""
    lookahead: int = 0
    """k: greedy rollout steps used to score each child (0 = score the child itself)."""
    temperature: float = 0.8
    top_p: float = 1.0
    agg: str = "last"
    """How step scores become a node score (``last`` as in search-and-learn)."""
    select: Literal["weighted", "majority", "best"] = "weighted"
    dedup: bool = True
    """Never keep two identical prefixes in one subtree."""
    verifier_reserve: int = 1
    """Tokens and rollouts held back per child for the verifier's engine call (an LLM judge
    spends one of each per judgement; use 0 for verifiers that spend nothing)."""
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive(
            self, "n", "beam_width", "max_steps", "step_tokens", "max_tokens", "min_step_tokens"
        )
        if self.subtrees is not None:
            check_positive(self, "subtrees")
        s = self.num_subtrees
        if self.n % (self.beam_width * s):
            good = self.beam_width * s
            raise ConfigError(
                f"n={self.n} is not a multiple of beam_width*subtrees={good}; use "
                f"n={max(good, self.n - self.n % good)} or n={self.n - self.n % good + good}"
            )
        if self.lookahead < 0 or self.verifier_reserve < 0:
            raise ConfigError(
                f"lookahead={self.lookahead} and verifier_reserve="
                f"{self.verifier_reserve} must be >= 0"
            )
        check_sampling(self)

    @property
    def num_subtrees(self) -> int:
        return self.n // self.beam_width if self.subtrees is None else self.subtrees

    def verifier_requirement(self) -> VerifierRequired | None:
        """What running without a verifier would raise (checked before any engine work)."""
        return VerifierRequired(
            f"{self.name} ranks steps with a verifier",
            python_fix="use best_of_n",
            cli_fix="use --strategy best_of_n",
        )

    async def run(
        self, problem: Problem, generator: Generator, verifier: Verifier | None, budget: Budget
    ) -> Result:
        if verifier is None and (need := self.verifier_requirement()) is not None:
            raise need
        if self.lookahead and isinstance(verifier, TokenStepVerifier):
            raise ConfigError(
                f"{verifier.name} scores token confidences, and lookahead rollouts are scored as "
                f"text; use lookahead=0 with it (or a text verifier such as llm_judge)"
            )
        ledger = Ledger(budget)
        ledger.engine = generator.profile()
        delim = problem.step_delimiter
        per_tree = self.n // (self.beam_width * self.num_subtrees)
        root = Node(generator.render(problem))
        live = [
            dataclasses.replace(root, group=s)
            for s in range(self.num_subtrees)
            for _ in range(per_tree)
        ]
        finished: list[Node] = []
        trace: list[dict[str, Any]] = []
        stop, next_id = "no_live_beams", 1
        for step in range(self.max_steps):
            if not live:
                break
            live.sort(key=lambda b: -b.score)  # the budget drops the worst first
            groups = merge_prompts([b.ids for b in live])
            demands = [
                (ids, self.beam_width * len(pos), self.max_tokens - len(live[pos[0]].token_ids))
                for ids, pos in groups
            ]
            template = GenerationRequest(
                (),
                max_tokens=self.step_tokens,
                temperature=self.temperature,
                top_p=self.top_p,
                stop=(delim,),
                include_stop=True,
                seed=self.seed + step * (self.n + 1),
                logprobs=step_logprobs(verifier),
            )
            demands = [(ids, k, min(m, self.step_tokens)) for ids, k, m in demands]
            reqs = fit_step(
                ledger,
                generator,
                demands,
                template,
                min_tokens=self.min_step_tokens,
                reserve=self.verifier_reserve * self.n,
                allow_drop=True,
            )
            if not reqs:
                if step == 0:
                    raise BudgetError(
                        f"budget {budget} cannot pay for one {self.name} step "
                        f"of >= {self.min_step_tokens} tokens per sample; raise "
                        f"the budget or lower n/min_step_tokens"
                    )
                stop = f"budget:{ledger.exhausted() or 'insufficient'}"
                break
            outs = await ledger.generate(generator, reqs)
            children: list[Node] = []
            for (_, pos), out in zip(groups, outs, strict=False):  # dropped groups: no children
                for j, comp in enumerate(out.completions):
                    parent = live[pos[j // self.beam_width]]
                    children.append(
                        parent.extend(comp, id=next_id, delimiter=delim, max_tokens=self.max_tokens)
                    )
                    next_id += 1
            views, look_tokens = await self._lookahead(problem, generator, ledger, children, step)
            scored = await score_nodes(problem, verifier, views, ledger, self.agg)
            if scored is None:  # the verifier's own call did not fit: keep what finished
                finished += [c for c in children if c.done]
                stop = f"budget:{ledger.exhausted() or 'verifier'}"
                break
            children = [
                dataclasses.replace(c, step_scores=v.step_scores, score=v.score)
                for c, v in zip(children, scored, strict=True)
            ]
            expanded = [live[p] for _, pos in groups[: len(reqs)] for p in pos]
            kept: set[int] = set()
            live = []
            for s in range(self.num_subtrees):
                slots = sum(b.group == s for b in expanded)
                top = keep_top([c for c in children if c.group == s], slots, dedup=self.dedup)
                kept.update(c.id for c in top)
                live += [c for c in top if not c.done]
            finished += [c for c in children if c.done]
            trace.append(
                {
                    "step": step,
                    "live": len(expanded),
                    "samples": sum(r.n for r in reqs),
                    "requests": len(reqs),
                    "max_tokens": max(r.max_tokens for r in reqs),
                    "generated_tokens": sum(c.num_tokens for o in outs for c in o.completions),
                    "cached_tokens": sum(o.cached_tokens for o in outs),
                    "lookahead_tokens": look_tokens,
                    "children": [c.record(kept=c.id in kept) for c in children],
                }
            )
            log.debug(
                "step %d: expanded=%d children=%d live=%d finished=%d %s",
                step,
                len(expanded),
                len(children),
                len(live),
                len(finished),
                ledger.brief(),
            )
        else:
            stop = "max_steps" if live else stop
        return search_result(
            self.name,
            self.select,
            [to_candidate(b) for b in finished + live],
            trace,
            ledger,
            stop,
            subtrees=self.num_subtrees,
            beams_per_subtree=per_tree,
            finished=len(finished),
        )

    async def _lookahead(
        self, problem: Problem, gen: Generator, ledger: Ledger, children: list[Node], step: int
    ) -> tuple[list[Node], int]:
        """Children extended (for scoring only) by a greedy rollout of ``lookahead`` steps."""
        todo = [c for c in children if not c.done]
        if not self.lookahead or not todo:
            return children, 0
        delim = problem.step_delimiter
        groups = merge_prompts([c.ids for c in todo])
        demands = [
            (
                ids,
                1,
                min(
                    self.lookahead * self.step_tokens, self.max_tokens - len(todo[pos[0]].token_ids)
                ),
            )
            for ids, pos in groups
        ]
        template = GenerationRequest((), temperature=0.0, seed=self.seed + step)
        reqs = fit_step(
            ledger,
            gen,
            demands,
            template,
            min_tokens=self.min_step_tokens,
            reserve=self.verifier_reserve * len(children),
        )
        if not reqs:
            log.debug("step %d: lookahead skipped, budget too small", step)
            return children, 0
        outs = await ledger.generate(gen, reqs)
        rollout: dict[int, tuple[str, ...]] = {}
        for (_, pos), out in zip(groups, outs, strict=True):
            pieces = out.completions[0].text.split(delim)[: self.lookahead]
            extra = tuple(p + delim for p in pieces[:-1]) + (pieces[-1],)
            rollout.update({todo[p].id: extra for p in pos})
        views = [
            dataclasses.replace(c, steps=c.steps + rollout[c.id]) if c.id in rollout else c
            for c in children
        ]
        return views, sum(o.completions[0].num_tokens for o in outs)


@dataclass(frozen=True, slots=True)
class DVTS(BeamSearch):
    """Diverse verifier tree search: ``n // beam_width`` independent one-beam subtrees."""

    name: ClassVar[str] = "dvts"

    subtrees: int | None = None
