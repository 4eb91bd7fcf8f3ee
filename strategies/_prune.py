"""KV-cost-aware leaf selection for ETS-style tree search, as pure functions.

Hooper et al. 2025, "ETS: Efficient Tree Search for Inference-Time Scaling"
(arXiv:2503.13288): at each step choose the set S of leaves to keep that maximises

    value(S) - lambda_kv * kv(S) + lambda_div * coverage(S)

- ``value``: sum of the leaves' reward weights (``softmax(score / T)``, summing to 1 over
  the candidates; ETS uses the REBASE allocation, which is this weight rounded).
- ``kv``: distinct tokens that must stay cached to keep S, every shared ancestor step
  counted once, as a fraction of the tokens of all candidates' paths (keeping every leaf
  costs exactly ``lambda_kv``; the prompt is always held and left out).
- ``coverage``: semantic clusters with at least one kept leaf, as a fraction of all
  clusters (ETS divides ``lambda_s`` by the cluster count the same way).

``select_leaves`` solves it exactly as a 0/1 ILP with PuLP's bundled CBC (leaf variables x_i, node
variables y_v >= x_i for every node v on leaf i's path, cluster variables c_k <= sum of x_i in
cluster k, at least one leaf kept) and falls back to a greedy marginal-gain heuristic when PuLP is
missing, the solver fails, or it stops without a proven optimum (an incumbent it found is used if it
beats the greedy set). CBC runs single-threaded under a branch-and-bound *node* limit, not a
wall-clock one, so which method answers depends only on the problem, never on machine load (ETS
problems of <= 64 leaves prove optimal in a few nodes); an optional time cap exists for callers who
prefer latency to determinism.

``cluster_steps``: semantic clusters without a hub model. The ETS code embeds steps with a
math sentence-transformer; no such weights can be downloaded here, and embeddings from the
policy model's hidden states would cost a forward pass per step on CPU. We use TF-IDF
vectors of character 2-4-grams of the whitespace-normalised, lower-cased step text
(scikit-learn), clustered by average-linkage hierarchical clustering on cosine distance cut
at ``threshold`` (SciPy): cheap (milliseconds), deterministic, and good at what the term
needs, telling near-duplicate steps (same equations, reworded) from different ones. It
does not see paraphrases with no surface overlap as equal. The default cut, 0.3, was chosen
on the embedded model's own samples (``benchmarks/results/verifier_candidates.jsonl``, 24
MATH problems x 8): it keeps apart openings that pick different methods for one problem
(Heron's formula / the right-triangle area formula / Pythagoras), which 0.5 merges; at 0.3
the 8 first steps of a problem form 0.64 x 8 clusters on average, second steps 0.81 x 8.

``rebase_allocate``: REBASE's split of the sampling width over kept leaves (Wu et al. 2024,
"Inference Scaling Laws", arXiv:2408.00724): best first, ``ceil(width * w_i / sum of the
remaining weights)``.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttscale.errors import ConfigError

__all__ = [
    "PruneProblem",
    "Selection",
    "cluster_steps",
    "objective",
    "rebase_allocate",
    "require_clustering",
    "reward_values",
    "select_greedy",
    "select_ilp",
    "select_leaves",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PruneProblem:
    """One step's selection problem over N candidate leaves."""

    values: Sequence[float]
    """Reward weight of each leaf (>= 0)."""
    paths: Sequence[Sequence[Hashable]]
    """Per leaf: the tree nodes that keeping it holds in cache (the leaf and its non-root
    ancestors); nodes shared by several leaves appear in several paths."""
    tokens: Mapping[Hashable, int]
    """Token count of every node named in ``paths``."""
    clusters: Sequence[int]
    """Semantic cluster label of each leaf."""
    lambda_kv: float = 1.0
    lambda_div: float = 1.0

    def __post_init__(self) -> None:
        n = len(self.values)
        if len(self.paths) != n or len(self.clusters) != n:
            raise ConfigError(
                f"values, paths and clusters must have one entry per leaf; got "
                f"{n}, {len(self.paths)}, {len(self.clusters)}"
            )
        if self.lambda_kv < 0 or self.lambda_div < 0:
            raise ConfigError(
                f"lambda_kv={self.lambda_kv} and lambda_div={self.lambda_div} must be >= 0"
            )

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens[v] for v in {v for p in self.paths for v in p})

    @property
    def num_clusters(self) -> int:
        return len(set(self.clusters))


@dataclass(frozen=True, slots=True)
class Selection:
    """The kept leaves (indices into the problem, ascending) and how they were found."""

    keep: tuple[int, ...]
    objective: float
    kv_tokens: int
    """Distinct tokens held by the kept leaves' paths (prompt excluded)."""
    covered: int
    """Clusters with a kept leaf."""
    method: str
    """``ilp`` (proven optimal), ``ilp_incumbent`` (a limit hit, incumbent beat greedy),
    ``greedy``, ``trivial`` (one candidate) or ``rebase`` (both lambdas 0: keep all)."""
    reason: str | None = None
    """Why the ILP was not used or not proven optimal."""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "keep": list(self.keep),
            "objective": round(self.objective, 6),
            "kv_tokens": self.kv_tokens,
            "covered": self.covered,
            "method": self.method,
            "reason": self.reason,
            "seconds": round(self.seconds, 4),
        }


def reward_values(scores: Sequence[float], temperature: float) -> list[float]:
    """``softmax(score / temperature)``: the value of keeping each leaf (sums to 1)."""
    if temperature <= 0:
        raise ConfigError(f"softmax temperature={temperature} must be > 0 (e.g. 0.2)")
    if not scores:
        return []
    x = np.asarray(scores, dtype=np.float64) / temperature
    e = np.exp(x - x.max())
    return (e / e.sum()).tolist()


def _parts(problem: PruneProblem, keep: Sequence[int]) -> tuple[float, int, int]:
    held = {v for i in keep for v in problem.paths[i]}
    kv = sum(problem.tokens[v] for v in held)
    covered = len({problem.clusters[i] for i in keep})
    return sum(problem.values[i] for i in keep), kv, covered


def objective(problem: PruneProblem, keep: Sequence[int]) -> float:
    """The selection objective of keeping leaves ``keep`` (see the module docstring)."""
    value, kv, covered = _parts(problem, keep)
    total, k = problem.total_tokens, problem.num_clusters
    kv_term = problem.lambda_kv * kv / total if total else 0.0
    div_term = problem.lambda_div * covered / k if k else 0.0
    return value - kv_term + div_term


def _selection(
    problem: PruneProblem, keep: Sequence[int], method: str, reason: str | None, t0: float
) -> Selection:
    keep = tuple(sorted(keep))
    _, kv, covered = _parts(problem, keep)
    return Selection(
        keep, objective(problem, keep), kv, covered, method, reason, time.perf_counter() - t0
    )


def select_greedy(problem: PruneProblem, *, reason: str | None = None) -> Selection:
    """Add the leaf with the largest objective gain until no leaf gains; keeps >= 1 leaf.

    Ties go to the lower index. Not optimal in general (the KV term rewards adding leaves
    in groups that share an ancestor), but never worse than keeping the best single leaf.
    """
    t0 = time.perf_counter()
    n = len(problem.values)
    if n == 0:
        return Selection((), 0.0, 0, 0, "greedy", reason)
    total, k = problem.total_tokens, problem.num_clusters
    kv_w = problem.lambda_kv / total if total else 0.0
    div_w = problem.lambda_div / k if k else 0.0
    held: set[Hashable] = set()
    covered: set[int] = set()
    keep: list[int] = []
    left = set(range(n))

    def gain(i: int) -> float:  # objective change of adding leaf i to ``keep``
        new_tokens = sum(problem.tokens[v] for v in set(problem.paths[i]) - held)
        return problem.values[i] - kv_w * new_tokens + div_w * (problem.clusters[i] not in covered)

    while left:
        best = max(sorted(left), key=gain)  # max keeps the first (lowest index) of ties
        if keep and gain(best) <= 1e-12:
            break
        keep.append(best)
        left.discard(best)
        held.update(problem.paths[best])
        covered.add(problem.clusters[best])
    return _selection(problem, keep, "greedy", reason, t0)


NODE_LIMIT = 10_000
"""Branch-and-bound nodes CBC may explore before the greedy fallback: a deterministic bound
on the work (a time cap would let machine load decide the method)."""

SolverFactory = Callable[[int, "float | None"], Any]
"""``(node_limit, time_limit) -> pulp solver``; default ``pulp.PULP_CBC_CMD`` (bundled CBC)."""


def _cbc(node_limit: int, time_limit: float | None) -> Any:
    import pulp

    with warnings.catch_warnings():  # PuLP 3.x warns that 4.0 unbundles CBC; we pin < 4
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(msg=False, maxNodes=node_limit, timeLimit=time_limit, threads=1)


def select_ilp(
    problem: PruneProblem,
    *,
    node_limit: int = NODE_LIMIT,
    time_limit: float | None = None,
    solver: SolverFactory | None = None,
) -> tuple[list[int] | None, str | None]:
    """Solve the selection ILP. Returns ``(keep, None)`` for a proven optimum, or
    ``(incumbent or None, reason)`` when the solver stopped early or failed.

    Raises:
        ImportError: PuLP is not installed.
    """
    import pulp

    with warnings.catch_warnings():  # PuLP 3.x: deprecation notes about its 4.0 API
        warnings.simplefilter("ignore", DeprecationWarning)
        return _solve_ilp(pulp, problem, node_limit, time_limit, solver or _cbc)


def _solve_ilp(
    pulp: Any,
    problem: PruneProblem,
    node_limit: int,
    time_limit: float | None,
    solver: SolverFactory,
) -> tuple[list[int] | None, str | None]:
    n = len(problem.values)
    nodes = sorted({v for p in problem.paths for v in p}, key=repr)
    node_ix = {v: j for j, v in enumerate(nodes)}
    labels = sorted(set(problem.clusters))
    total, k = problem.total_tokens, len(labels)
    lp = pulp.LpProblem("ets_selection", pulp.LpMaximize)
    x = [pulp.LpVariable(f"x{i}", cat="Binary") for i in range(n)]
    y = [pulp.LpVariable(f"y{j}", cat="Binary") for j in range(len(nodes))]
    c = [pulp.LpVariable(f"c{m}", cat="Binary") for m in range(k)]
    kv_w = problem.lambda_kv / total if total else 0.0
    lp += (
        pulp.lpSum(problem.values[i] * x[i] for i in range(n))
        - pulp.lpSum(kv_w * problem.tokens[v] * y[node_ix[v]] for v in nodes)
        + pulp.lpSum(problem.lambda_div / k * c[m] for m in range(k))
    )
    for i, path in enumerate(problem.paths):
        for v in set(path):
            lp += y[node_ix[v]] >= x[i]
    for m, label in enumerate(labels):
        lp += c[m] <= pulp.lpSum(x[i] for i in range(n) if problem.clusters[i] == label)
    lp += pulp.lpSum(x) >= 1
    try:
        lp.solve(solver(node_limit, time_limit))
    except pulp.PulpSolverError as exc:
        return None, f"solver error: {exc}"
    chosen = [i for i in range(n) if (x[i].value() or 0) > 0.5]
    if lp.sol_status == pulp.LpSolutionOptimal:
        return chosen, None
    status = pulp.LpSolution.get(lp.sol_status, str(lp.sol_status))
    limits = f"node limit {node_limit}" + (f", time cap {time_limit:g}s" if time_limit else "")
    if lp.sol_status == pulp.LpSolutionIntegerFeasible and chosen:
        return chosen, f"no proven optimum within the {limits} ({status})"
    return None, f"solver stopped without a solution ({status}, {limits})"


def select_leaves(
    problem: PruneProblem,
    *,
    node_limit: int = NODE_LIMIT,
    time_limit: float | None = None,
    use_ilp: bool = True,
    solver: SolverFactory | None = None,
) -> Selection:
    """Exact ILP selection with a greedy fallback; never raises for solver trouble."""
    t0 = time.perf_counter()
    n = len(problem.values)
    if n <= 1:
        return _selection(problem, range(n), "trivial", None, t0)
    if not use_ilp:
        return select_greedy(problem, reason="ilp disabled")
    try:
        keep, reason = select_ilp(
            problem, node_limit=node_limit, time_limit=time_limit, solver=solver
        )
    except ImportError:
        keep, reason = None, "pulp is not installed (pip install 'ttscale[search]')"
    except Exception as exc:  # noqa: BLE001 - any solver crash falls back, and is reported
        keep, reason = None, f"solver failed: {type(exc).__name__}: {exc}"
    if reason is None and keep:
        return _selection(problem, keep, "ilp", None, t0)
    log.info("ETS selection falls back to greedy: %s", reason)
    greedy = select_greedy(problem, reason=reason)
    if keep and objective(problem, keep) > greedy.objective + 1e-12:
        return _selection(problem, keep, "ilp_incumbent", reason, t0)
    return Selection(
        greedy.keep,
        greedy.objective,
        greedy.kv_tokens,
        greedy.covered,
        "greedy",
        reason,
        time.perf_counter() - t0,
    )


def require_clustering() -> None:
    """Raise ``ConfigError`` now (before any spending) if the clustering libraries are absent."""
    try:
        import scipy.cluster.hierarchy  # noqa: F401
        import sklearn.feature_extraction.text  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"semantic clusters need scikit-learn and SciPy ({exc}); "
            f"pip install 'ttscale[search]' or set lambda_div=0"
        ) from None


def cluster_steps(texts: Sequence[str], threshold: float = 0.3) -> list[int]:
    """Cluster labels (0, 1, ... in first-occurrence order) of step texts.

    Identical normalised texts share a cluster; the rest are TF-IDF char-2-4-gram vectors
    grouped by average-linkage clustering on cosine distance, cut at ``threshold`` (0 =
    only identical texts together, 1 = anything sharing no n-gram can still merge).

    Raises:
        ConfigError: scikit-learn/SciPy missing (``pip install 'ttscale[search]'``).
    """
    if not 0 <= threshold <= 2:
        raise ConfigError(f"cluster threshold={threshold} must be a cosine distance in [0, 2]")
    norm = [" ".join(t.split()).lower() for t in texts]
    uniq = list(dict.fromkeys(norm))
    labels_u = list(range(len(uniq)))
    words = [u for u in uniq if u]
    if len(words) > 1 and threshold > 0:
        try:
            from scipy.cluster.hierarchy import fcluster, linkage
            from scipy.spatial.distance import pdist
            from sklearn.feature_extraction.text import TfidfVectorizer
        except ImportError as exc:
            raise ConfigError(
                f"semantic clusters need scikit-learn and SciPy ({exc}); "
                f"pip install 'ttscale[search]' or set lambda_div=0"
            ) from None
        vecs = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)).fit_transform(words)
        dist = np.nan_to_num(pdist(vecs.toarray(), "cosine"), nan=1.0).clip(0.0, 2.0)
        raw = fcluster(linkage(dist, method="average"), t=threshold, criterion="distance")
        by_word = dict(zip(words, raw.tolist(), strict=True))
        labels_u = [by_word.get(u, -1 - i) for i, u in enumerate(uniq)]
    first: dict[int, int] = {}
    lab = dict(zip(uniq, labels_u, strict=True))
    return [first.setdefault(lab[t], len(first)) for t in norm]


def rebase_allocate(scores: Sequence[float], width: int, temperature: float) -> list[int]:
    """Samples per leaf: REBASE's ``ceil(width * w_i / sum of remaining w)``, best first.

    Every leaf gets >= 1 while width is left; the total is exactly ``min(width, ...)``:
    never more than ``width``.
    """
    if width <= 0 or not scores:
        return [0] * len(scores)
    w = reward_values(scores, temperature)
    order = sorted(range(len(w)), key=lambda i: -w[i])
    out = [0] * len(w)
    left, mass = width, sum(w)
    for i in order:
        if left <= 0 or mass <= 0:
            break
        k = min(left, max(1, math.ceil(left * w[i] / mass - 1e-9)))
        out[i] = k
        left -= k
        mass -= w[i]
    return out
