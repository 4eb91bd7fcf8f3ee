"""ttscale: test-time compute scaling for small local models.

Give it a prompt and a compute budget; it spends the budget on a strategy (best-of-N,
search, refinement) running on a local engine, and returns the answer with an honest ledger.

    >>> from ttscale import solve
    >>> result = solve("What is 12*7?", budget="rollouts=4", backend="scripted")
    >>> result.answer
    '84'
"""

from ttscale.api import (
    asolve,
    asolve_batch,
    close_default_engines,
    default_engine,
    solve,
    solve_batch,
)
from ttscale.budget import Budget, Ledger
from ttscale.errors import (
    BackendError,
    BackendUnavailable,
    BudgetError,
    ConfigError,
    ContextLengthError,
    GradingError,
    ModelError,
    TTScaleError,
    VerifierError,
)
from ttscale.protocols import Generator, Strategy, Verifier
from ttscale.types import (
    DEFAULT_SYSTEM_PROMPT,
    Candidate,
    Completion,
    GenerationOutput,
    GenerationRequest,
    Problem,
    Result,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "BackendError",
    "BackendUnavailable",
    "Budget",
    "BudgetError",
    "Candidate",
    "Completion",
    "ConfigError",
    "ContextLengthError",
    "GenerationOutput",
    "GenerationRequest",
    "Generator",
    "GradingError",
    "Ledger",
    "ModelError",
    "Problem",
    "Result",
    "Strategy",
    "TTScaleError",
    "Verifier",
    "VerifierError",
    "__version__",
    "asolve",
    "asolve_batch",
    "close_default_engines",
    "default_engine",
    "solve",
    "solve_batch",
]
