"""Errors raised by ttscale.

Hierarchy::

    TTScaleError                 root; catch this to handle anything ttscale raises
    ├── ConfigError (ValueError) a parameter, budget or prompt is malformed
    │   └── VerifierRequired     the strategy or selection needs a verifier; none was given
    ├── BudgetError              the budget cannot pay for even the first step
    ├── ModelError               a model path or embedded model is missing or corrupt
    ├── BackendError             the engine failed
    │   ├── BackendUnavailable   engine not installed, server unreachable (retryable)
    │   └── ContextLengthError   the prompt does not fit the model's context
    ├── VerifierError            a verifier returned unusable scores (NaN, wrong shape)
    ├── GradingError             an answer could not be graded (evals only)
    └── SandboxError             the program sandbox failed (never a program's own failure)
        └── SandboxUnavailable   no isolation on this host and weak mode not opted into

Every message says what went wrong, shows the value received and names the fix.
When work was already spent, the error carries the partial ``Result`` (with its
ledger) in ``.partial`` so no compute is silently lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ttscale.types import Result

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "BudgetError",
    "ConfigError",
    "ContextLengthError",
    "GradingError",
    "ModelError",
    "RETRYABLE_ERRORS",
    "SandboxError",
    "SandboxUnavailable",
    "TTScaleError",
    "VerifierError",
    "VerifierRequired",
]


class TTScaleError(Exception):
    """Root of all ttscale errors.

    Attributes:
        partial: The partial result (with its ledger) when compute was already spent.
    """

    def __init__(self, message: str, *, partial: Result | None = None) -> None:
        super().__init__(message)
        self.partial = partial


class ConfigError(TTScaleError, ValueError):
    """A user-supplied value (prompt, budget, strategy option, backend name) is invalid."""


class VerifierRequired(ConfigError):
    """A strategy or selection mode ranks candidates with a verifier and none was given.

    The message names the Python fix; ``cli_message()`` names the command-line flags.
    """

    def __init__(self, what: str, *, python_fix: str, cli_fix: str) -> None:
        super().__init__(
            f"{what}; pass verifier=... (e.g. load_verifier('llm_judge')) or {python_fix}"
        )
        self.what, self.cli_fix = what, cli_fix

    def cli_message(self) -> str:
        return (
            f"{self.what}; add --verifier llm_judge (the policy model judges) or "
            f"--verifier PRM_DIR, or {self.cli_fix}"
        )


class BudgetError(TTScaleError):
    """The budget is too small to pay for a single step of the chosen strategy."""


class ModelError(TTScaleError):
    """A model could not be found, verified or converted."""


class BackendError(TTScaleError):
    """The generation engine failed while serving a request."""


class BackendUnavailable(BackendError):
    """The engine is not installed or the server cannot be reached."""


class ContextLengthError(BackendError):
    """A prompt plus its requested completion exceeds the model's context window."""


class VerifierError(TTScaleError):
    """A verifier produced unusable scores (NaN, inf, wrong count)."""


class GradingError(TTScaleError):
    """A gold answer or a prediction could not be graded."""


class SandboxError(TTScaleError):
    """The program sandbox itself failed: a worker would not start, or it was closed.

    A program's own failure (exception, timeout, crash) is never raised; it is reported in
    its ``ExecResult``.
    """


class SandboxUnavailable(SandboxError):
    """This host cannot isolate programs (no usable bubblewrap) and weak mode was not chosen."""


RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (BackendUnavailable,)
"""Errors worth retrying with backoff; everything else is final."""


def describe(value: Any, limit: int = 80) -> str:
    """Short repr of a user value for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
