"""What every ``ttscale`` command shares: the consoles (progress and errors on stderr,
results on stdout), ``key=value`` option lists, backend construction from command-line flags,
problem-selection flags, and how a ``Result`` is printed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ttscale.errors import ConfigError

__all__ = [
    "backend_kwargs",
    "check_verifier",
    "err",
    "load_backend",
    "load_script",
    "out",
    "parse_options",
    "preload_env",
    "print_result",
    "selection",
    "split_list",
]

out = Console()
err = Console(stderr=True)

# -- flags several commands take (one definition each) -----------------------------------
Backend = Annotated[str, typer.Option(help="vllm | hf | openai | scripted | replay")]
Model = Annotated[str | None, typer.Option(help="Embedded model name or local HF model dir.")]
BaseUrl = Annotated[
    str | None,
    typer.Option(help="Server URL for --backend openai (e.g. http://127.0.0.1:8000/v1)."),
]
Script = Annotated[
    Path | None,
    typer.Option(help="JSON {problem substring: [solutions]} for --backend scripted."),
]
PoolDir = Annotated[
    list[Path] | None,
    typer.Option(
        "--pool",
        help="Sample pool directory for --backend replay; repeat it to serve several (a CoT "
        "pool and a program pool for the hybrid strategy).",
    ),
]
BackendOptions = Annotated[
    list[str] | None,
    typer.Option("--backend-option", "-B", help="Backend argument key=value (dtype=float32)."),
]
SparseOption = Annotated[
    str | None,
    typer.Option(
        "--sparse",
        help="Block top-k sparse decode for long rollouts (vllm, hf): 'on' for the defaults "
        "or k=64,sink=1,recent=2,threshold=4096 (blocks; threshold in tokens).",
    ),
]
Dataset = Annotated[
    str | None,
    typer.Option(help="math500 | aime24 | amc23 | gsm8k | math_train200 | FILE.jsonl"),
]
Limit = Annotated[int | None, typer.Option(help="First N problems (after filters/sample).")]
Levels = Annotated[list[str] | None, typer.Option(help="Levels, e.g. 1,2,3.")]
Subjects = Annotated[list[str] | None, typer.Option(help="Subjects, e.g. Algebra.")]
Ids = Annotated[list[str] | None, typer.Option(help="Problem ids.")]
Sample = Annotated[int | None, typer.Option(help="Draw N problems with --sample-seed.")]
SampleSeed = Annotated[int, typer.Option(help="Seed of --sample.")]
Stratify = Annotated[bool, typer.Option(help="Draw --sample evenly across levels.")]
Progress = Annotated[bool, typer.Option(help="Progress bar on stderr.")]
Executor = Annotated[str, typer.Option(help="local | ray")]
Workers = Annotated[int, typer.Option(help="Ray workers (each its own backend).")]
RayAddress = Annotated[
    str | None, typer.Option(help="Ray cluster (auto, ray://head:10001); none = local.")
]
GpusPerWorker = Annotated[float, typer.Option(help="GPUs per Ray worker.")]
Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="Debug logging, engine messages included.")
]


def parse_options(items: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"option {item!r} is not key=value (e.g. -o n=16)")
        try:
            options[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.strip()] = raw
    return options


def load_script(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--script {path}: cannot read a JSON object ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(s, str) for s in v) for v in data.values()
    ):
        raise ConfigError(f"--script {path} must map problem substrings to lists of solutions")
    return data


def load_backend(backend: str, kwargs: dict[str, Any]) -> Any:
    """Build the backend named on the command line from ``backend_kwargs`` (plus -B extras)."""
    from ttscale.backends import make_backend

    with err.status(_loading_message(backend, kwargs), spinner="dots"):
        return make_backend(backend, **kwargs)


def _loading_message(backend: str, kwargs: dict[str, Any]) -> str:
    """The spinner's text; says so when the embedded model must be converted first."""
    if backend not in ("vllm", "hf", "auto"):
        return f"loading {backend} backend..."
    from ttscale.engine.models import DEFAULT_MODEL, EMBEDDED_MODELS, model_status
    from ttscale.engine.profile import choose_profile

    name = kwargs.get("model") or DEFAULT_MODEL
    if name in EMBEDDED_MODELS:
        dtype = choose_profile().dtype
        if dtype not in model_status(name)["converted_dtypes"]:
            return f"converting {name} to {dtype} once (~1 min), then loading {backend}..."
    return f"loading {backend} backend..."


def backend_kwargs(
    backend: str,
    *,
    model: str | None,
    base_url: str | None,
    script: Path | None,
    pool: list[Path] | None = None,
    sparse: str | None = None,
) -> dict[str, Any]:
    """Constructor arguments of the backend named on the command line (Ray workers get these).

    ``sparse`` (``--sparse``) is checked here, before any engine loads, and passed as text:
    ``VLLMBackend(sparse=)`` and ``auto`` read it; ``HFBackend`` gets the ``TopKBlocks``.
    ``-B sparse=k=64`` reaches ``VLLMBackend`` the same way on every command."""
    kwargs: dict[str, Any] = {}
    if sparse is not None:
        from ttscale.kernels.config import sparse_config

        cfg = sparse_config(sparse)  # raises ConfigError naming the fields
        if backend in ("vllm", "auto"):
            kwargs["sparse"] = sparse
        elif backend == "hf":
            kwargs["sparse_attention"] = cfg
        else:
            raise ConfigError(f"--sparse needs --backend vllm or hf (got {backend})")
    if backend == "replay":
        if not pool:
            raise ConfigError(
                "--backend replay needs --pool DIR (a pool from `ttscale pool build`)"
            )
        kwargs["pool"] = str(pool[0]) if len(pool) == 1 else [str(p) for p in pool]
    elif backend in ("vllm", "hf") and model is not None:
        kwargs["model"] = model
    elif backend == "openai":
        if base_url is None:
            raise ConfigError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        kwargs.update(base_url=base_url, model=model)
    elif backend == "scripted":
        kwargs["script"] = load_script(script)
    return kwargs


def split_list(items: list[str] | None) -> list[str]:
    return [x.strip() for item in items or [] for x in item.split(",") if x.strip()]


def check_verifier(strategy: str, options: dict[str, Any], verifier: str | None) -> None:
    """Refuse, before any engine loads, a strategy that needs ``--verifier`` without one.

    Raises:
        VerifierRequired: Its ``cli_message()`` names the flags to add.
    """
    from ttscale.strategies import make_strategy

    runner = make_strategy(strategy, **options)
    need = getattr(runner, "verifier_requirement", lambda: None)()
    if verifier is None and need is not None:
        raise need


def selection(
    *,
    limit: int | None,
    levels: list[str] | None,
    subjects: list[str] | None,
    ids: list[str] | None,
    sample: int | None,
    sample_seed: int,
    stratify: bool,
) -> Any:
    """The problem selection of ``--limit/--levels/--subjects/--ids/--sample...`` flags."""
    from ttscale.evals.datasets import Selection

    try:
        levels_i = tuple(int(x) for x in split_list(levels))
    except ValueError:
        raise ConfigError(f"--levels must be integers, got {levels}") from None
    return Selection(
        limit=limit,
        levels=levels_i,
        subjects=tuple(split_list(subjects)),
        ids=tuple(split_list(ids)),
        sample=sample,
        seed=sample_seed,
        stratify=stratify,
    )


def print_result(result: Any) -> None:
    if result.extras.get("entry_point") and result.answer is not None:  # code: the program
        out.print("[bold]program:[/bold]")
        out.print(result.answer, markup=False, highlight=False)
        for t in result.extras.get("tests") or []:
            mark = "pass" if t["passed"] else "FAIL"
            got = "" if t["passed"] else f" (got {t['actual'] or t['error']})"
            out.print(f"  {mark} {t['call']} == {t['expected']}{got}", markup=False)
    else:
        out.print(f"[bold]answer:[/bold] {result.answer}")
    votes = result.extras.get("votes") or []
    if votes:
        table = Table(title="votes", show_edge=False)
        for col in ("answer", "votes", "weight"):
            table.add_column(col)
        for row in votes:
            table.add_row(str(row["answer"]), str(row["votes"]), f"{row['weight']:.3g}")
        out.print(table)
    led = result.ledger.to_dict()
    out.print(
        "[bold]ledger:[/bold] "
        f"generated={led['generated_tokens']} prompt={led['prompt_tokens']} "
        f"cached={led['cached_tokens']} rollouts={led['rollouts']} "
        f"engine_calls={led['engine_calls']} eflops={led['eflops']:.3g} "
        + (
            f"programs={led['programs']} sandbox={led['sandbox_seconds']:.2f}s "
            if led.get("programs")
            else ""
        )
        + f"wall={led['wall_seconds']:.1f}s engine={led['engine_seconds']:.1f}s "
        f"stopped_by={led['stopped_by']} stop={result.extras.get('stop_reason')}"
    )


def preload_env() -> dict[str, str] | None:
    """tcmalloc + Intel OpenMP preload recommended by the vLLM CPU docs (+10% sampling,
    up to 2.7x on prefill-heavy batches, identical outputs). ``None`` if already set or
    the libraries are absent. ``TTSCALE_PRELOAD=0`` disables it."""
    if os.environ.get("TTSCALE_PRELOAD") == "0" or os.environ.get("_TTSCALE_PRELOADED"):
        return None
    libs = [
        p
        for p in (
            Path("/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"),
            Path(sys.prefix) / "lib" / "libiomp5.so",
        )
        if p.is_file()
    ]
    if len(libs) < 2 or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return None
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join([*map(str, libs), env.get("LD_PRELOAD", "")]).rstrip(":")
    env["_TTSCALE_PRELOADED"] = "1"
    return env
