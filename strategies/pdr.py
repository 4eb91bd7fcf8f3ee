"""Parallel-Distill-Refine and Sequential Refinement. Spends: tokens, rollouts, eFLOPs, seconds.

Madaan et al. 2025, "Rethinking Thinking Tokens: LLMs as Improvement Operators"
(arXiv:2510.01123). Long chains of thought are replaced by rounds of bounded context:

1. Round r samples M_r drafts **in parallel** (``drafts[r]``; one engine call, or a
   sub-strategy such as ``BestOfN`` passed as ``drafter``) from a prompt made of the
   problem and, after the first round, the workspace.
2. The drafts are **distilled** into a bounded workspace of at most ``workspace_tokens``:
   ``distill="summary"``: the model writes a summary of all drafts (``max_tokens`` =
   the bound); ``distill="select"``: the top-``keep`` drafts (by verifier score, or one per
   leading answer of a majority vote without a verifier), each clipped to its share of the
   bound, its tail kept (where the answer is).
3. Round r + 1 conditions only on problem + workspace (``refine_template``), never on the
   full history, so the context stays bounded however many rounds run.
4. The answer is a vote (verifier-weighted with a verifier) over the last round that
   produced one.

Sequential Refinement (SR) is the M_r = 1 case: each round refines the previous draft
(``SequentialRefine``). Accounting follows the paper: ``extras["total_tokens"]`` counts
every draft and summary token; ``extras["sequential_tokens"]`` counts the latency-critical
path: per round the longest draft (parallel drafts run concurrently) plus the summary.
Tokens are planned across rounds: a round gets its share of the token budget left, in
proportion to its ``M_r * max_tokens`` (+ summary) demand.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ttscale.budget import Budget, Ledger
from ttscale.errors import BudgetError, ConfigError, VerifierRequired
from ttscale.protocols import Generator, Verifier
from ttscale.strategies.search import (
    SELECTS,
    absorb,
    build_workspace,
    check_positive,
    check_sampling,
    finish_ledger,
    fit_step,
    score_texts,
    select_answer,
)
from ttscale.types import Candidate, GenerationRequest, Problem, Result
from ttscale.verifiers.answers import extract_answer
from ttscale.verifiers.base import aggregate
from ttscale.verifiers.voting import group_answers

__all__ = ["PDR", "REFINE_TEMPLATE", "SUMMARY_TEMPLATE", "SequentialRefine"]

log = logging.getLogger(__name__)

REFINE_TEMPLATE = (
    "{problem}\n\nEarlier attempts at this problem, distilled (they may contain mistakes):\n\n"
    "{workspace}\n\nUsing what is right above and fixing what is wrong, write a complete, "
    "careful solution. Put your final answer within \\boxed{{}}."
)
"""Prompt of rounds after the first; ``{problem}`` and ``{workspace}`` are filled."""
SUMMARY_TEMPLATE = (
    "Problem:\n{problem}\n\nHere are {count} attempted solutions:\n\n{drafts}\n\n"
    "Summarise them briefly for a solver who will try again: the approaches used, the "
    "intermediate results they agree on, mistakes to avoid, and the final answers proposed. "
    "Do not write a new solution."
)
"""Distillation prompt for ``distill="summary"``; ``{problem}``, ``{count}``, ``{drafts}``."""


@dataclass(frozen=True, slots=True)
class PDR:
    """Parallel-Distill-Refine; ``drafts=(1, 1, ...)`` is Sequential Refinement."""

    name: ClassVar[str] = "pdr"

    drafts: tuple[int, ...] = (4, 4, 1)
    """M_r: drafts sampled in parallel in each round (the number of rounds is its length)."""
    max_tokens: int = 1024
    """Cap on generated tokens per draft."""
    min_draft_tokens: int = 128
    """Smallest per-draft cap worth launching when the budget runs low."""
    distill: Literal["summary", "select"] = "select"
    keep: int = 2
    """k: drafts kept in the workspace with ``distill="select"``."""
    workspace_tokens: int = 512
    """Bound on the workspace (summary length, or all kept drafts together)."""
    temperature: float = 0.7
    top_p: float = 1.0
    agg: str = "last"
    select: Literal["auto", "majority", "weighted", "best"] = "auto"
    """Final vote: ``auto`` = ``weighted`` with a verifier, ``majority`` without."""
    drafter: Any = None
    """Optional sub-strategy producing each round's drafts (e.g. ``BestOfN(n=4)``): it gets
    the round's prompt and share of the budget, and no verifier (PDR scores the drafts
    against the original problem); its ledger is added to this run's."""
    verifier_reserve: int = 1
    """Tokens and rollouts held back per draft for the verifier's engine call."""
    refine_template: str = REFINE_TEMPLATE
    summary_template: str = SUMMARY_TEMPLATE
    seed: int = 0

    def __post_init__(self) -> None:
        drafts = tuple(self.drafts) if isinstance(self.drafts, (list, tuple)) else None
        if not drafts or any(
            not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in drafts
        ):
            raise ConfigError(
                f"drafts={self.drafts!r} must be a non-empty tuple of positive "
                f"ints, one per round, e.g. (4, 4, 1)"
            )
        object.__setattr__(self, "drafts", drafts)  # normalise a list to a tuple, once
        check_positive(self, "max_tokens", "min_draft_tokens", "keep", "workspace_tokens")
        if self.min_draft_tokens > self.max_tokens:
            raise ConfigError(
                f"min_draft_tokens={self.min_draft_tokens} exceeds max_tokens="
                f"{self.max_tokens}; lower min_draft_tokens"
            )
        if self.distill not in ("summary", "select"):
            raise ConfigError(f"distill={self.distill!r}; use summary or select")
        check_sampling(self, ("auto", *SELECTS))
        if self.verifier_reserve < 0:
            raise ConfigError(f"verifier_reserve={self.verifier_reserve} must be >= 0")
        for field, keys in (
            ("refine_template", ("{problem}", "{workspace}")),
            ("summary_template", ("{problem}", "{drafts}")),
        ):
            if any(k not in getattr(self, field) for k in keys):
                raise ConfigError(f"{field} must contain {' and '.join(keys)}")
        if self.drafter is not None and not callable(getattr(self.drafter, "run", None)):
            raise ConfigError(
                f"drafter={self.drafter!r} is not a strategy (no async run()); "
                f"pass e.g. BestOfN(n=4)"
            )

    def verifier_requirement(self) -> VerifierRequired | None:
        """What running without a verifier would raise (``select='auto'`` falls back to
        majority, so only an explicit weighted/best selection needs one)."""
        if self.select in ("auto", "majority"):
            return None
        return VerifierRequired(
            f"select={self.select!r} needs a verifier",
            python_fix="use select='majority'",
            cli_fix="use -o select=majority",
        )

    async def run(
        self, problem: Problem, generator: Generator, verifier: Verifier | None, budget: Budget
    ) -> Result:
        select = self.select if self.select != "auto" else ("weighted" if verifier else "majority")
        if verifier is None and (need := self.verifier_requirement()) is not None:
            raise need
        ledger = Ledger(budget)
        ledger.engine = generator.profile()
        rounds: list[list[Candidate]] = []
        trace: list[dict[str, Any]] = []
        workspace: str | None = None
        total = sequential = 0
        stop = "rounds_done"
        for r, m in enumerate(self.drafts):
            prompt = (
                problem
                if workspace is None
                else Problem(
                    self.refine_template.format(problem=problem.prompt, workspace=workspace),
                    problem.system_prompt,
                    problem.step_delimiter,
                    problem.id,
                )
            )
            per_draft = self._plan(ledger, r, verifier is not None)
            cands = await self._draft(prompt, generator, verifier, ledger, m, per_draft, r)
            if not cands:
                if r == 0:
                    raise BudgetError(
                        f"budget {budget} cannot pay for one draft of >= "
                        f"{self.min_draft_tokens} tokens; raise the budget or "
                        f"lower min_draft_tokens"
                    )
                stop = f"budget:{ledger.exhausted() or 'insufficient'}"
                break
            scored = await self._score(problem, verifier, cands, ledger)
            rounds.append(cands)
            longest = max(c.tokens for c in cands)
            record: dict[str, Any] = {
                "round": r,
                "drafts": len(cands),
                "max_tokens": per_draft,
                "draft_tokens": [c.tokens for c in cands],
                "answers": [c.answer for c in cands],
                "scores": [c.score for c in cands],
                "prompt_chars": len(prompt.prompt),
            }
            total += sum(c.tokens for c in cands)
            sequential += longest
            trace.append(record)
            if not scored:
                stop = f"budget:{ledger.exhausted() or 'verifier'}"
                break
            if r < len(self.drafts) - 1:
                workspace, info = await self._distill(problem, generator, ledger, cands, r)
                record.update(info)
                total += info["summary_tokens"]
                sequential += info["summary_tokens"]
            log.debug("round %d: %d drafts, longest %d, %s", r, len(cands), longest, ledger.brief())
        answer, table = None, []
        for cands in reversed(rounds):  # the latest round that produced an answer decides
            answer, table = select_answer(cands, select)
            if answer is not None:
                break
        finish_ledger(ledger, stop)
        return Result(
            answer,
            [c for cs in rounds for c in cs],
            trace,
            ledger,
            self.name,
            extras={
                "select": select,
                "votes": table,
                "stop_reason": stop,
                "rounds": len(rounds),
                "total_tokens": total,
                "sequential_tokens": sequential,
            },
        )

    def _plan(self, ledger: Ledger, r: int, verified: bool) -> int:
        """Per-draft token cap for round r: its share of the tokens left."""
        summary = self.workspace_tokens if self.distill == "summary" else 0
        last = len(self.drafts) - 1
        future = sum(
            m * self.max_tokens + (summary if j < last else 0)
            for j, m in enumerate(self.drafts)
            if j >= r
        )
        reserve = self.verifier_reserve * sum(self.drafts[r:]) if verified else 0
        scale = min(1.0, (ledger.remaining("tokens") - reserve) / future)
        return max(self.min_draft_tokens, int(self.max_tokens * scale))

    async def _draft(
        self,
        prompt: Problem,
        gen: Generator,
        verifier: Verifier | None,
        ledger: Ledger,
        m: int,
        per_draft: int,
        r: int,
    ) -> list[Candidate]:
        reserve = self.verifier_reserve * m if verifier is not None else 0
        if self.drafter is not None:
            caps = {
                u: ledger.remaining(u) - (reserve if u in ("tokens", "rollouts") else 0)
                for u in ("tokens", "rollouts", "flops", "seconds")
            }
            caps["tokens"] = min(caps["tokens"], m * per_draft)
            if any(v <= 0 for v in caps.values()):
                return []
            sub_budget = Budget(
                **{
                    u: (int(v) if u in ("tokens", "rollouts") else v)
                    for u, v in caps.items()
                    if v != float("inf")
                }
            )
            try:  # no verifier: PDR scores drafts itself, against the original problem
                sub = await self.drafter.run(prompt, gen, None, sub_budget)
            except BudgetError as exc:
                log.info("round %d: drafter could not run within %s: %s", r, sub_budget, exc)
                if exc.partial is not None:
                    absorb(ledger, exc.partial.ledger)
                return []
            absorb(ledger, sub.ledger)
            return list(sub.candidates)
        template = GenerationRequest(
            gen.render(prompt),
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed + 2 * r,
        )
        for k in range(m, 0, -1):
            reqs = fit_step(
                ledger,
                gen,
                [(template.prompt_token_ids, k, per_draft)],
                template,
                min_tokens=self.min_draft_tokens,
                reserve=reserve,
            )
            if reqs:
                out = (await ledger.generate(gen, reqs))[0]
                return [
                    Candidate(c.text, extract_answer(c.text), c.num_tokens, c.finish_reason)
                    for c in out.completions
                ]
        return []

    async def _score(
        self, problem: Problem, verifier: Verifier | None, cands: list[Candidate], ledger: Ledger
    ) -> bool:
        """Score unscored drafts against the original problem (one verifier call); False if
        the budget refused the verifier's own engine call."""
        todo = [c for c in cands if c.score is None]
        if verifier is None or not todo:
            return True
        rows = await score_texts(problem, verifier, [c.text for c in todo], ledger)
        for cand, row in zip(todo, rows or [], strict=False):
            cand.step_scores, cand.score = row, aggregate(row, self.agg)
        return rows is not None

    async def _distill(
        self, problem: Problem, gen: Generator, ledger: Ledger, cands: list[Candidate], r: int
    ) -> tuple[str, dict[str, Any]]:
        """Bounded workspace from a round's drafts, and what it cost."""
        if self.distill == "summary":
            drafts = "\n\n".join(f"Attempt {i + 1}:\n{c.text}" for i, c in enumerate(cands))
            text = self.summary_template.format(
                problem=problem.prompt, count=len(cands), drafts=drafts
            )
            template = GenerationRequest(
                gen.render(Problem(text, system_prompt=None)),
                temperature=self.temperature,
                top_p=self.top_p,
                seed=self.seed + 2 * r + 1,
            )
            reqs = fit_step(
                ledger,
                gen,
                [(template.prompt_token_ids, 1, self.workspace_tokens)],
                template,
                min_tokens=min(32, self.workspace_tokens),
            )
            if reqs:
                comp = (await ledger.generate(gen, reqs))[0].completions[0]
                return comp.text, {
                    "distill": "summary",
                    "summary_tokens": comp.num_tokens,
                    "workspace_tokens": len(gen.encode(comp.text)),
                    "workspace": comp.text,
                }
            log.info("round %d: no budget for a summary; selecting drafts instead", r)
        if any(c.score is not None for c in cands):
            chosen = sorted(cands, key=lambda c: -(c.score or 0.0))[: self.keep]
        else:  # one draft per leading answer, then answerless drafts in order
            firsts = [cands[g.members[0]] for g in group_answers([c.answer for c in cands])]
            chosen = (firsts + [c for c in cands if c not in firsts])[: self.keep]
        workspace = build_workspace(
            [c.text for c in chosen], self.workspace_tokens, gen.encode, gen.decode
        )
        return workspace, {
            "distill": "select",
            "summary_tokens": 0,
            "workspace_tokens": len(gen.encode(workspace)),
            "workspace": workspace,
        }


@dataclass(frozen=True, slots=True)
class SequentialRefine(PDR):
    """Sequential Refinement: one draft per round, each refining the previous one."""

    name: ClassVar[str] = "sequential_refine"

    drafts: tuple[int, ...] = (1, 1, 1)
    keep: int = 1
    workspace_tokens: int = 1024
