"""``ttscale`` command line: one module per command (``ttscale.cli.<command>``), sharing
``ttscale.cli.options``.

Errors print one line naming the fix and exit with status 2; no tracebacks for user errors.
Progress goes to stderr, results to stdout (``--json`` prints only JSON there).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import typer
from rich.markup import escape

from ttscale.cli import (
    calibrate,
    doctor,
    eval,
    models,
    pool,
    quantize,
    report,
    serve,
    solve,
    trace,
    train_verifier,
)
from ttscale.cli import mcp as mcp_command
from ttscale.cli.options import err, preload_env
from ttscale.errors import TTScaleError

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Test-time compute scaling: spend a compute budget to answer better.",
)
app.command("solve")(solve.solve)
app.command("serve")(serve.serve)
app.command("eval")(eval.eval_cmd)
app.command("report")(report.report)
app.command("models")(models.models)
app.add_typer(trace.trace_app, name="trace")
app.add_typer(pool.pool_app, name="pool")
app.command("calibrate")(calibrate.calibrate)
app.command("quantize")(quantize.quantize)
app.command("doctor")(doctor.doctor)
app.command("train-verifier")(train_verifier.train_verifier)
app.command("mcp")(mcp_command.mcp)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = sys.argv[1:] if argv is None else argv
    # Engines log to stdout by default (vLLM); stdout is for results (`--json` must parse).
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    verbose = "-v" in args or "--verbose" in args
    # Engine chatter (vLLM's per-worker warnings, load messages and bars, torch's C++
    # warnings, third-party deprecation notes) only with -v: a first `ttscale solve` shows
    # our progress and the answer, nothing else.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if verbose else "ERROR")
    if not verbose:
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
        os.environ.setdefault("TTSCALE_QUIET_ENGINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' load bars
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        warnings.filterwarnings("ignore", module=r"(vllm|torch|transformers|triton)(\.|$)")
        # vLLM warns while it is imported, before its own logging config exists (Python's
        # last-resort handler would print it): quiet its logger from the start.
        logging.getLogger("vllm").setLevel(logging.ERROR)
    engine_cmd = args[:1] in (["solve"], ["serve"], ["eval"], ["pool"], ["mcp"])
    engine_cmd = engine_cmd and "scripted" not in args and "replay" not in args
    engine_cmd = engine_cmd or args[:1] == ["doctor"]  # doctor reports the preload status
    if argv is None and engine_cmd and (env := preload_env()) is not None:
        os.execve(sys.executable, [sys.executable, "-m", "ttscale.cli", *args], env)
    try:
        app(args=args, standalone_mode=False)
    except TTScaleError as exc:
        message = exc.cli_message() if hasattr(exc, "cli_message") else str(exc)
        # escaped: a fix such as pip install 'ttscale[model-1-5b]' is not rich markup
        err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except ValueError as exc:  # pydantic validation at a boundary
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise SystemExit(130) from None
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        from ttscale.evals.runner import RunStopped

        if isinstance(exc, RunStopped):
            why = escape(str(exc))
            err.print(f"stopped by {why}: rows in flight were written; rerun to resume")
            raise SystemExit(128 + exc.signum) from None
        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        if isinstance(exc, click.exceptions.Exit):
            raise SystemExit(exc.exit_code) from None
        raise


if __name__ == "__main__":
    main()
