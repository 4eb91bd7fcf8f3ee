"""ETS: efficient tree search with KV sharing. Spends: tokens, rollouts, eFLOPs, seconds.

Hooper, Kim, Tiwari, Keutzer, Mahoney, Gholami et al. 2025, "ETS: Efficient Tree Search for
Inference-Time Scaling" (arXiv:2503.13288; code: SqueezeAILab/ETS). ETS is REBASE
(reward-weighted expansion of a search tree) with a pruning step that trades reward
against the KV cache the kept branches pin, plus a semantic-coverage term that keeps
distinct lines of reasoning alive. It needs no engine change here: every expansion is a
request whose prompt token ids extend its parent's, so vLLM's prefix cache shares the
common prefix, and the engine's per-request ``cached_tokens`` measure how much it did.

With ``width`` = W:

1. The tree (a ``networkx.DiGraph``) starts at the prompt; the root gets all W samples.
2. **One** engine call per step samples every allocated leaf up to the step delimiter
   (``Problem.step_delimiter``), ``n`` = its allocation, so siblings share one prefill.
3. **One** verifier call scores the new children (aggregated with ``agg``). A child is
   finished on EOS, a closed ``\\boxed{}`` or ``max_tokens``; each finished sample uses one
   unit of width (as in REBASE), so the step after samples W - finished. Identical siblings
   (same parent, same token ids) are one tree node with a ``copies`` count: the prefix
   cache holds them once, so the tree does too (every copy still counts as a sample).
4. Selection among the open children (``_prune.select_leaves``): the kept set maximises
   ``sum softmax(score/T) - lambda_kv * kv + lambda_div * coverage`` (normalised KV tokens
   held, with shared ancestors once, and clusters covered), exactly by ILP (PuLP/CBC,
   ``ilp_node_limit``) with a greedy fallback.
5. The remaining width is split over the kept leaves by REBASE's softmax allocation; a leaf
   that gets no sample is pruned too. ``lambda_kv = lambda_div = 0`` gives plain REBASE.
6. Stop when the width is used up, nothing is open, after ``expansions`` steps, or when the
   budget cannot pay for a step of at least ``min_step_tokens`` per sample (the lowest
   allocations are dropped first). The answer is a verifier-weighted vote over finished
   leaves and, as partial answers, the open ones.

KV accounting, per step (trace) and in total (``Result.extras``): ``kv_tree`` = distinct
tokens of the tree that the step's samples attend to once generated (prompt, every expanded
leaf's path with shared ancestors once, the new children) = what a perfect prefix-sharing
cache holds; ``kv_no_sharing`` = the same samples each holding its own full sequence;
``kv_kept`` = distinct tokens still held after pruning; the engine's ``prompt_tokens`` and
``cached_tokens`` of the step's requests -> ``hit_rate`` (measured, not assumed; vLLM
counts full 16-token blocks only).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import networkx as nx

from ttscale.budget import Budget, Ledger
from ttscale.errors import BudgetError, ConfigError, VerifierRequired
from ttscale.protocols import Generator, Verifier
from ttscale.strategies._prune import (
    PruneProblem,
    Selection,
    cluster_steps,
    rebase_allocate,
    require_clustering,
    reward_values,
    select_leaves,
)
from ttscale.strategies.search import (
    Node,
    check_positive,
    check_sampling,
    fit_step,
    merge_prompts,
    score_nodes,
    search_result,
    step_logprobs,
    to_candidate,
)
from ttscale.types import GenerationRequest, Problem, Result

__all__ = ["ETS", "held_tokens"]

log = logging.getLogger(__name__)


def held_tokens(tree: nx.DiGraph, nodes: Iterable[int]) -> int:
    """Distinct tokens of ``nodes`` and all their ancestors (the root/prompt included once):
    what a perfect prefix-sharing KV cache must hold to keep them. Nodes need ``tokens``."""
    held: set[int] = set()
    for v in nodes:
        if v not in held:
            held.add(v)
            held |= nx.ancestors(tree, v)
    return sum(tree.nodes[v]["tokens"] for v in held)


def _path(tree: nx.DiGraph, v: int, root: int = 0) -> list[int]:
    """Non-root nodes from ``v`` up to the root."""
    out = []
    while v != root:
        out.append(v)
        v = next(iter(tree.predecessors(v)))
    return out


@dataclass(frozen=True, slots=True)
class ETS:
    """Efficient tree search: REBASE expansion + KV/diversity-aware ILP pruning."""

    name: ClassVar[str] = "ets"

    width: int = 16
    """W: samples per step and trajectories in total (each finished leaf uses one)."""
    expansions: int = 40
    """Maximum expansion steps (tree depth)."""
    lambda_kv: float = 1.0
    """Weight of the KV term (keeping every candidate's path costs ``lambda_kv``)."""
    lambda_div: float = 1.5
    """Weight of the coverage term (covering every cluster earns ``lambda_div``); the
    defaults are the ETS paper's MATH500 width-16 settings (lambda_c=1, lambda_s=1.5)."""
    softmax_temperature: float = 0.2
    """T of the reward weights and of REBASE's allocation (ETS default 0.2)."""
    cluster_threshold: float = 0.3
    """Cosine distance (TF-IDF char n-grams) under which steps share a cluster."""
    ilp: bool = True
    """Solve the selection exactly (PuLP/CBC); ``False`` uses the greedy heuristic."""
    ilp_node_limit: int = 10_000
    """Branch-and-bound nodes CBC may explore per step before the greedy fallback: a
    deterministic bound, so machine load never changes which leaves are kept."""
    ilp_time_limit: float | None = None
    """Optional wall-clock cap per step (seconds); ``None`` (default) keeps runs
    reproducible under any load."""
    step_tokens: int = 256
    max_tokens: int = 1024
    min_step_tokens: int = 32
    temperature: float = 0.8
    top_p: float = 1.0
    agg: str = "last"
    select: Literal["weighted", "majority", "best"] = "weighted"
    verifier_reserve: int = 1
    """Tokens and rollouts held back per child for the verifier's engine call."""
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive(self, "width", "expansions", "step_tokens", "max_tokens", "min_step_tokens")
        if self.lambda_kv < 0 or self.lambda_div < 0:
            raise ConfigError(
                f"lambda_kv={self.lambda_kv} and lambda_div={self.lambda_div} "
                f"must be >= 0 (0 turns the term off)"
            )
        if not self.softmax_temperature > 0:
            raise ConfigError(
                f"softmax_temperature={self.softmax_temperature} must be > 0 (e.g. 0.2)"
            )
        if not 0 <= self.cluster_threshold <= 2:
            raise ConfigError(f"cluster_threshold={self.cluster_threshold} must be in [0, 2]")
        if self.ilp_time_limit is not None and not self.ilp_time_limit > 0:
            raise ConfigError(f"ilp_time_limit={self.ilp_time_limit} must be > 0 (or None)")
        if self.verifier_reserve < 0:
            raise ConfigError(f"verifier_reserve={self.verifier_reserve} must be >= 0")
        check_positive(self, "ilp_node_limit")
        check_sampling(self)

    def verifier_requirement(self) -> VerifierRequired | None:
        """What running without a verifier would raise (checked before any engine work)."""
        return VerifierRequired(
            "ets ranks steps with a verifier",
            python_fix="use best_of_n",
            cli_fix="use --strategy best_of_n",
        )

    async def run(
        self, problem: Problem, generator: Generator, verifier: Verifier | None, budget: Budget
    ) -> Result:
        if verifier is None and (need := self.verifier_requirement()) is not None:
            raise need
        if self.lambda_div > 0:
            require_clustering()
        ledger = Ledger(budget)
        ledger.engine = generator.profile()
        delim = problem.step_delimiter
        root = Node(generator.render(problem))
        tree = nx.DiGraph()
        tree.add_node(
            0,
            text="",
            tokens=len(root.prompt_ids),
            score=0.0,
            depth=0,
            finished=False,
            token_ids=root.prompt_ids,
            pruned=False,
        )
        nodes: dict[int, Node] = {0: root}
        alloc: dict[int, int] = {0: self.width}
        finished: list[Node] = []
        open_: list[Node] = []
        trace: list[dict[str, Any]] = []
        stop, next_id = "width_used", 1
        for step in range(self.expansions):
            leaves = sorted((v for v, k in alloc.items() if k > 0), key=lambda v: -alloc[v])
            if not leaves:
                stop = "no_open_leaves"
                break
            groups = merge_prompts([nodes[v].ids for v in leaves])
            demands = [
                (
                    ids,
                    sum(alloc[leaves[p]] for p in pos),
                    min(self.step_tokens, self.max_tokens - len(nodes[leaves[pos[0]]].token_ids)),
                )
                for ids, pos in groups
            ]
            template = GenerationRequest(
                (),
                temperature=self.temperature,
                top_p=self.top_p,
                stop=(delim,),
                include_stop=True,
                seed=self.seed + step * (self.width + 1),
                logprobs=step_logprobs(verifier),
            )
            samples = sum(alloc[v] for v in leaves)
            reqs = fit_step(
                ledger,
                generator,
                demands,
                template,
                min_tokens=self.min_step_tokens,
                reserve=self.verifier_reserve * samples,
                allow_drop=True,
            )
            if not reqs:
                if step == 0:
                    raise BudgetError(
                        f"budget {budget} cannot pay for one ets step of "
                        f">= {self.min_step_tokens} tokens per sample; raise the "
                        f"budget or lower width/min_step_tokens"
                    )
                stop = f"budget:{ledger.exhausted() or 'insufficient'}"
                break
            outs = await ledger.generate(generator, reqs)
            expanded: list[int] = []
            children: list[Node] = []
            copies: dict[int, int] = {}  # identical siblings are one node (one KV copy)
            no_sharing = 0
            # strict=False: groups the budget dropped (fit_step) get no children
            for (_, pos), out in zip(groups, outs, strict=False):
                parents = [leaves[p] for p in pos]
                expanded += parents
                slots = [v for v in parents for _ in range(alloc[v])]
                seen: dict[tuple[int, tuple[int, ...]], int] = {}
                for v, comp in zip(slots, out.completions, strict=True):
                    no_sharing += len(nodes[v].ids) + comp.num_tokens
                    twin = seen.get((v, comp.token_ids))
                    if twin is not None:
                        copies[twin] += 1
                        continue
                    child = nodes[v].extend(
                        comp, id=next_id, delimiter=delim, max_tokens=self.max_tokens
                    )
                    seen[(v, comp.token_ids)] = next_id
                    copies[next_id] = 1
                    nodes[next_id] = child
                    tree.add_node(
                        next_id,
                        text=comp.text,
                        token_ids=comp.token_ids,
                        tokens=comp.num_tokens,
                        score=0.0,
                        depth=tree.nodes[v]["depth"] + 1,
                        finished=child.done,
                        pruned=False,
                        copies=1,
                    )
                    tree.add_edge(v, next_id)
                    children.append(child)
                    next_id += 1
            for c in children:
                tree.nodes[c.id]["copies"] = copies[c.id]
            kv = {
                "kv_tree": held_tokens(tree, [c.id for c in children]),
                "kv_no_sharing": no_sharing,
                "prompt_tokens": sum(o.prompt_tokens for o in outs),
                "cached_tokens": sum(o.cached_tokens for o in outs),
            }
            kv["hit_rate"] = round(kv["cached_tokens"] / max(kv["prompt_tokens"], 1), 6)
            record: dict[str, Any] = {
                "step": step,
                "expanded": len(expanded),
                "samples": sum(r.n for r in reqs),
                "requests": len(reqs),
                "max_tokens": max(r.max_tokens for r in reqs),
                "generated_tokens": sum(c.num_tokens for o in outs for c in o.completions),
                **kv,
            }
            trace.append(record)
            scored = await score_nodes(problem, verifier, children, ledger, self.agg)
            if scored is None:  # the verifier's own call did not fit: keep children unscored
                finished += [c for c in children if c.done for _ in range(copies[c.id])]
                open_ = [c for c in children if not c.done] or open_
                record["children"] = [
                    c.record(kept=False, copies=copies[c.id], depth=tree.nodes[c.id]["depth"])
                    for c in children
                ]
                record["kv_kept"] = kv["kv_tree"]
                stop = f"budget:{ledger.exhausted() or 'verifier'}"
                break
            children = scored
            for c in children:
                nodes[c.id] = c
                tree.nodes[c.id]["score"] = c.score
            finished += [c for c in children if c.done for _ in range(copies[c.id])]
            open_ = [c for c in children if not c.done]
            left = self.width - len(finished)
            sel, alloc = self._select(tree, open_, left) if open_ and left > 0 else (None, {})
            for c in open_:
                tree.nodes[c.id]["pruned"] = alloc.get(c.id, 0) == 0
            record["kv_kept"] = held_tokens(tree, [v for v, k in alloc.items() if k > 0] or [0])
            record["selection"] = None if sel is None else sel.to_dict()
            record["children"] = [
                c.record(
                    kept=alloc.get(c.id, 0) > 0,
                    alloc=alloc.get(c.id, 0),
                    copies=copies[c.id],
                    cluster=tree.nodes[c.id].get("cluster"),
                    depth=tree.nodes[c.id]["depth"],
                )
                for c in children
            ]
            log.debug(
                "step %d: expanded=%d children=%d kept=%d finished=%d kv=%d/%d hit=%.2f %s",
                step,
                len(expanded),
                len(children),
                sum(k > 0 for k in alloc.values()),
                len(finished),
                kv["kv_tree"],
                kv["kv_no_sharing"],
                kv["hit_rate"],
                ledger.brief(),
            )
            if left <= 0:
                stop = "width_used"
                break
            if not open_:
                stop = "all_finished"
                break
        else:
            stop = "expansions" if alloc else stop
        return search_result(
            self.name,
            self.select,
            [to_candidate(n) for n in finished + open_],
            trace,
            ledger,
            stop,
            finished=len(finished),
            prompt_len=len(root.prompt_ids),
            tree_nodes=tree.number_of_nodes(),
            **kv_summary(trace),
            solver=_solver_counts(trace),
        )

    def _select(
        self, tree: nx.DiGraph, open_: list[Node], width: int
    ) -> tuple[Selection, dict[int, int]]:
        """Kept open leaves and their sample allocation (REBASE over the ILP's kept set)."""
        scores = [c.score for c in open_]
        texts = [tree.nodes[c.id]["text"] for c in open_]
        clusters = (
            cluster_steps(texts, self.cluster_threshold)
            if self.lambda_div > 0
            else list(range(len(open_)))
        )
        for c, k in zip(open_, clusters, strict=True):
            tree.nodes[c.id]["cluster"] = k
        paths = [_path(tree, c.id) for c in open_]
        problem = PruneProblem(
            values=reward_values(scores, self.softmax_temperature),
            paths=paths,
            tokens={v: tree.nodes[v]["tokens"] for p in paths for v in p},
            clusters=clusters,
            lambda_kv=self.lambda_kv,
            lambda_div=self.lambda_div,
        )
        if self.lambda_kv == 0 and self.lambda_div == 0:  # plain REBASE: keep every leaf
            t0 = time.perf_counter()
            sel = Selection(
                tuple(range(len(open_))),
                0.0,
                0,
                len(set(clusters)),
                "rebase",
                seconds=time.perf_counter() - t0,
            )
        else:
            sel = select_leaves(
                problem,
                node_limit=self.ilp_node_limit,
                time_limit=self.ilp_time_limit,
                use_ilp=self.ilp,
            )
        kept = [open_[i] for i in sel.keep]
        counts = rebase_allocate([c.score for c in kept], width, self.softmax_temperature)
        return sel, {c.id: k for c, k in zip(kept, counts, strict=True)}


def _solver_counts(trace: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for rec in trace:
        sel = rec.get("selection")
        if sel:
            out[sel["method"]] = out.get(sel["method"], 0) + 1
    return out


def kv_summary(trace: list[dict[str, Any]]) -> dict[str, Any]:
    """Peak and mean KV figures over a tree-search trace (ETS's own step records)."""
    if not trace:
        return {
            "kv_peak": 0,
            "kv_mean": 0.0,
            "kv_no_sharing_peak": 0,
            "kv_no_sharing_mean": 0.0,
            "kv_sharing_ratio": None,
            "policy_hit_rate": None,
        }
    tree = [r["kv_tree"] for r in trace]
    flat = [r["kv_no_sharing"] for r in trace]
    prompt = sum(r["prompt_tokens"] for r in trace)
    return {
        "kv_peak": max(tree),
        "kv_mean": round(sum(tree) / len(tree), 3),
        "kv_no_sharing_peak": max(flat),
        "kv_no_sharing_mean": round(sum(flat) / len(flat), 3),
        "kv_sharing_ratio": round(sum(flat) / max(sum(tree), 1), 4),
        "policy_hit_rate": round(sum(r["cached_tokens"] for r in trace) / max(prompt, 1), 6),
    }
