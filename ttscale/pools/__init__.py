"""Sample pools: draw K samples per problem once, then evaluate sampling-based strategies by
replaying subsets of them exactly (the method of Snell et al. 2024 and Large Language
Monkeys). ``ttscale pool build`` draws one (``ttscale.evals.pool``); ``load_pool`` reads it;
``ReplayGenerator(pool, order_seed=...)`` serves it as a ``Generator``."""

from ttscale.pools.pool import (
    Pool,
    PoolProblem,
    PoolSample,
    Sampling,
    load_pool,
    problem_file,
    write_problem,
)
from ttscale.pools.replay import ReplayGenerator

__all__ = [
    "Pool",
    "PoolProblem",
    "PoolSample",
    "ReplayGenerator",
    "Sampling",
    "load_pool",
    "problem_file",
    "write_problem",
]
