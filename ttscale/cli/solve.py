"""``ttscale solve``: answer one prompt under a budget."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer

from ttscale.cli.options import (
    Backend,
    BaseUrl,
    Model,
    Script,
    SparseOption,
    Verbose,
    backend_kwargs,
    check_verifier,
    err,
    load_backend,
    parse_options,
    print_result,
)
from ttscale.errors import ConfigError


def solve(
    prompt: Annotated[str, typer.Argument(help="The question to answer.")],
    strategy: Annotated[
        str | None,
        typer.Option(help="Registered strategy name (default: best_of_n; code with --test)."),
    ] = None,
    budget: Annotated[
        str,
        typer.Option(
            help="Caps, e.g. tokens=4000,seconds=60 (units: tokens, rollouts, flops, seconds)."
        ),
    ] = "rollouts=8",
    backend: Backend = "vllm",
    model: Model = None,
    base_url: BaseUrl = None,
    script: Script = None,
    sparse: SparseOption = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Strategy option key=value (repeatable)."),
    ] = None,
    verifier: Annotated[
        str,
        typer.Option(
            help="Verifier: default (best_of_n on the embedded model uses the one measured "
            "best for it), none, confidence, probe, llm_judge, or a PRM/probe directory."
        ),
    ] = "default",
    verifier_option: Annotated[
        list[str] | None,
        typer.Option("--verifier-option", "-V", help="Verifier argument key=value (mode=step)."),
    ] = None,
    test: Annotated[
        list[str] | None,
        typer.Option(
            "--test",
            "-t",
            help="Code: a public test the program must pass, e.g. 'add(2, 3) == 5' or "
            "'assert add(2, 3) == 5' (repeatable; selects the code strategy).",
        ),
    ] = None,
    entry_point: Annotated[
        str | None,
        typer.Option(help="Code: the function to write (default: from the tests or prompt)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full Result as JSON.")] = False,
    verbose: Verbose = False,
) -> None:
    """Answer PROMPT by spending BUDGET on STRATEGY."""
    from ttscale.api import solve as run_solve
    from ttscale.budget import Budget
    from ttscale.evals.runner import make_verifier
    from ttscale.verifiers.defaults import DEFAULT

    if verbose:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    options = parse_options(option or [])
    parsed = Budget.parse(budget)  # validate before loading anything heavy
    if not prompt.strip():
        raise ConfigError("prompt is empty; pass the question as the first argument")
    verifier_options = parse_options(verifier_option or [])
    shown = strategy or ("code" if test or entry_point else "best_of_n")
    check_verifier(shown, options, None if verifier in (DEFAULT, "none") else verifier)
    gen = load_backend(
        backend,
        backend_kwargs(backend, model=model, base_url=base_url, script=script, sparse=sparse),
    )
    scorer: Any
    if verifier == DEFAULT:
        scorer = DEFAULT  # solve() resolves it for the model the backend serves
    elif verifier == "none":
        scorer = None
    else:
        scorer = make_verifier(verifier, gen, verifier_options)
    with err.status(f"solving with {shown} under {parsed}...", spinner="dots"):
        result = run_solve(
            prompt,
            parsed,
            strategy=strategy,
            backend=gen,
            verifier=scorer,
            tests=test or None,
            entry_point=entry_point,
            **options,
        )
    if as_json:
        sys.stdout.write(result.to_json(indent=2) + "\n")
        return
    print_result(result)
