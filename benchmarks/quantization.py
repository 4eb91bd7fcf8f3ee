"""Quantized vs unquantized serving, side by side in one run on one host.

Variants: ``fp32`` and ``bf16`` (unquantized), ``w8a8`` and ``w4a16`` (``ttscale quantize``,
round-to-nearest unless ``--calibrate``). Each variant runs in its own child process (clean
resident-memory figures; an engine that refuses or crashes cannot take the others down) on
in-process vLLM (``--backend hf`` for transformers). Per variant: load seconds, resident
memory after load and peak (KV cache included: the same ``VLLM_CPU_KVCACHE_SPACE`` for all),
checkpoint size, tok/s at n=1 (greedy) and n=16 (sampled) on one prompt, then greedy accuracy
on a fixed GSM8K-test slice (the first ``--problems`` problems, one batched call) and answer
agreement with the unquantized reference (the profile's unquantized dtype). A variant the
engine refuses is reported as ``unsupported on this host: <engine's message>``.

``best`` is the fastest variant (n=16 tok/s) whose accuracy is within 1 point of the
reference: the choice ``ttscale.engine.profile`` should make on this host. ``mem_ratio`` uses
resident memory after load on CPU and checkpoint size on GPU. The quantized
figures on the RESULT line are those of the fastest quantized variant that ran, so a slower
quantized model shows up as ``speedup_vs_unquantized`` < 1. Last line::

    RESULT best=<variant> speedup_vs_unquantized=<> mem_ratio=<unquantized_rss/quantized_rss>
        acc_unquantized=<> acc_quantized=<> quantized=<variant> isa=<host ISA>   (one line)

Heavy: on 2 AVX2 cores with the 0.5B model expect ~30-40 min (W8A8 is 3-4x slower than
fp32 there). Run it under the CPU lock::

    flock /tmp/ttscale-cpu.lock python benchmarks/quantization.py
    python benchmarks/quantization.py --model /tmp/tiny --problems 4 --max-tokens 16  # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = ("fp32", "bf16", "w8a8", "w4a16")
_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
RESULTS = Path(__file__).resolve().parent / "results"


def _gsm8k(n: int) -> list[dict[str, Any]]:
    """The first ``n`` GSM8K-test problems (fixed slice), from the packaged copy."""
    root = Path(__file__).resolve().parents[1]
    for cand in (
        root / "evals" / "data" / "gsm8k_test.jsonl",
        root.parent / "shared" / "data" / "gsm8k_test.jsonl",
    ):
        if cand.is_file():
            rows = [json.loads(line) for line in cand.read_text().splitlines() if line.strip()]
            return rows[:n]
    raise SystemExit("gsm8k_test.jsonl not found (evals/data/ or ../shared/data/)")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _failed(row: dict[str, Any], exc: Exception) -> dict[str, Any]:
    """ttscale's own validation errors are bench misconfiguration, not host support."""
    from ttscale.errors import TTScaleError

    key = "error" if isinstance(exc, TTScaleError) else "unsupported"
    row[key] = f"{type(exc).__name__}: {str(exc).strip()[:400]}"
    return row


# -- child: one variant ----------------------------------------------------------------------
def worker(args: argparse.Namespace) -> dict[str, Any]:
    from ttscale.backends import make_backend
    from ttscale.cli.doctor import speed_probe
    from ttscale.types import GenerationRequest, Problem
    from ttscale.verifiers.answers import extract_answer, grade

    row: dict[str, Any] = {"variant": args.worker, "model_path": args.path}
    kwargs: dict[str, Any] = {"model": args.path, "dtype": args.dtype, "seed": 0}
    if args.backend == "vllm":
        kwargs["max_model_len"] = args.max_model_len
    t0 = time.perf_counter()
    try:
        backend = make_backend(args.backend, **kwargs)
    except Exception as exc:  # the engine's own reason is the result
        msg = str(exc).strip().splitlines()
        row["unsupported"] = (msg[-1] if msg else type(exc).__name__)[:400]
        row["error_type"] = type(exc).__name__
        return row
    row["load_s"] = round(time.perf_counter() - t0, 1)
    row["rss_after_load_mb"] = round(_rss_mb())
    row["profile"] = backend.profile()
    try:
        row["probe"] = speed_probe(backend, max_tokens=args.probe_tokens)
    except Exception as exc:  # an engine that loads but cannot run: report its reason
        return _failed(row, exc)
    problems = _gsm8k(args.problems)
    reqs = [
        GenerationRequest(
            backend.render(Problem(p["problem"])), n=1, max_tokens=args.max_tokens, temperature=0.0
        )
        for p in problems
    ]
    t0 = time.perf_counter()
    try:
        outs = asyncio.run(backend.generate(reqs))
    except Exception as exc:  # an engine that loads but cannot run: report its reason
        return _failed(row, exc)
    dt = time.perf_counter() - t0
    texts = [o.completions[0].text for o in outs]
    toks = sum(len(o.completions[0].token_ids) for o in outs)
    row["greedy"] = {
        "seconds": round(dt, 1),
        "tokens": toks,
        "tok_s": round(toks / dt, 1),
        "capped": sum(o.completions[0].finish_reason == "length" for o in outs),
    }
    row["answers"] = [extract_answer(t) for t in texts]
    row["correct"] = [bool(grade(t, p["answer"])) for t, p in zip(texts, problems, strict=True)]
    row["accuracy"] = round(100 * sum(row["correct"]) / max(len(problems), 1), 1)
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    asyncio.run(backend.close())
    return row


# -- parent ------------------------------------------------------------------------------------
def _prepare(variant: str, args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    """Model path for a variant (quantizing first when needed) and what that cost."""
    from ttscale.engine.models import resolve_model
    from ttscale.engine.quantize import QuantizeOptions, quantize

    if variant in _DTYPES:
        return str(resolve_model(args.model)), {}
    t0 = time.perf_counter()
    path = quantize(
        args.model,
        variant,
        calibrate=args.calibrate,
        options=QuantizeOptions(num_samples=args.calib_samples),
        allow_unsupported=True,  # the engine, not ttscale, says whether it runs
    )
    manifest = json.loads((path / "ttscale-model.json").read_text())
    return str(path), {
        "quantize_wall_s": round(time.perf_counter() - t0, 1),
        "quantize_s": manifest["quantize_seconds"],
        "method": manifest["method"],
    }


def _run_child(variant: str, path: str, dtype: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        variant,
        "--path",
        path,
        "--dtype",
        dtype,
        "--backend",
        args.backend,
        "--problems",
        str(args.problems),
        "--max-tokens",
        str(args.max_tokens),
        "--probe-tokens",
        str(args.probe_tokens),
        "--max-model-len",
        str(args.max_model_len),
    ]
    # Let the engine itself say why it cannot run a variant (ttscale's own check would
    # refuse W4A16 on AVX2 before vLLM loads); ttscale's reason is recorded beside it.
    env = {**os.environ, "TTSCALE_CHECK_HOST": "0"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.variant_timeout, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        return {"variant": variant, "unsupported": f"timed out after {args.variant_timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {
            "variant": variant,
            "unsupported": f"engine process exited {proc.returncode}: {tail[:400]}",
        }
    row = json.loads(lines[-1][4:])
    row["child_wall_s"] = round(time.perf_counter() - t0, 1)
    return row


def _table(rows: list[dict[str, Any]], ref: str | None) -> str:
    head = (
        "| variant | load s | RSS MB (load / peak) | ckpt GB | tok/s n=1 | tok/s n=16 | "
        "greedy batch tok/s | accuracy % | agree w/ ref % | note |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = []
    for r in rows:
        if "unsupported" in r or "error" in r:
            note = (
                f"unsupported on this host: {r['unsupported']}"
                if "unsupported" in r
                else f"error: {r['error']}"
            )
            body.append(f"| {r['variant']} | - | - | - | - | - | - | - | - | {note} |")
            continue
        p = r["probe"]
        agree = "ref" if r["variant"] == ref else f"{r.get('agreement', float('nan')):.0f}"
        note = f"{r['profile'].get('dtype')}, {r['greedy']['capped']} capped"
        if "quantize_s" in r:
            note += f", {r['method']} quantize {r['quantize_s']} s"
        body.append(
            f"| {r['variant']} | {r['load_s']} | {r['rss_after_load_mb']} / {r['peak_rss_mb']} | "
            f"{r['ckpt_gb']:.2f} | {p['n1']['tok_s']} | {p['n16']['tok_s']} | "
            f"{r['greedy']['tok_s']} | {r['accuracy']} | {agree} | {note} |"
        )
    return head + "\n".join(body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=None, help="embedded name or HF dir (default model)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--problems", type=int, default=50, help="first N GSM8K-test problems")
    ap.add_argument("--max-tokens", type=int, default=512, help="greedy answer cap")
    ap.add_argument("--probe-tokens", type=int, default=64, help="tokens per sample in the probe")
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--backend", default="vllm", choices=("vllm", "hf"))
    ap.add_argument("--calibrate", default=None, help="GPTQ set (e.g. math_train200); RTN if unset")
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--quant-dtype", default="auto", help="activation dtype of quantized variants")
    ap.add_argument("--variant-timeout", type=int, default=3600)
    ap.add_argument("--tag", default=None, help="results file suffix (default: host ISA)")
    # child mode
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="auto", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("ROW " + json.dumps(worker(args)), flush=True)
        return

    from ttscale.engine.profile import choose_profile, variant_support
    from ttscale.host import host_info

    info = host_info()
    profile = choose_profile()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    print(
        f"host: {info.cpu_model} | isa {info.isa} | {info.cores} cores | profile {profile.rule} "
        f"(dtype {profile.dtype}, weights {profile.weights}) | backend {args.backend}",
        file=sys.stderr,
    )
    rows: list[dict[str, Any]] = []
    for v in variants:
        path, extra = _prepare(v, args)
        dtype = _DTYPES.get(v, args.quant_dtype)
        print(f"[{v}] {path} dtype={dtype}", file=sys.stderr, flush=True)
        row = _run_child(v, path, dtype, args)
        row.update(extra)
        if (why := variant_support(v if v not in _DTYPES else "none")) is not None:
            row["ttscale_check"] = why
        row["ckpt_gb"] = sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file()) / 1e9
        rows.append(row)
        status = row.get("unsupported") or row.get("error") or f"acc {row['accuracy']}%"
        print(f"[{v}] {status}", file=sys.stderr, flush=True)

    ran = [r for r in rows if "unsupported" not in r and "error" not in r]
    unq = [r for r in ran if r["variant"] in _DTYPES]
    ref_name = "fp32" if profile.dtype == "float32" else "bf16"
    ref = next((r for r in unq if r["variant"] == ref_name), unq[0] if unq else None)
    for r in ran:
        if ref is not None:
            same = [a == b for a, b in zip(r["answers"], ref["answers"], strict=True)]
            r["agreement"] = round(100 * sum(same) / max(len(same), 1), 1)

    def speed(r: dict[str, Any]) -> float:
        return float(r["probe"]["n16"]["tok_s"])

    ok = [r for r in ran if ref is None or r["accuracy"] >= ref["accuracy"] - 1.0]
    best = max(ok, key=speed) if ok else None
    quant = max((r for r in ran if r["variant"] not in _DTYPES), key=speed, default=None)
    table = _table(rows, ref["variant"] if ref else None)
    summary = {
        "host": {"cpu": info.cpu_model, "isa": info.isa, "cores": info.cores},
        "profile": profile.to_dict(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "path", "dtype")},
        "reference": ref["variant"] if ref else None,
        "best": best["variant"] if best else None,
        "rows": rows,
    }
    tag = args.tag or info.isa.replace("+", "_")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"quantization_{tag}.json").write_text(json.dumps(summary, indent=2, default=str))
    (RESULTS / f"quantization_{tag}.md").write_text(
        f"Host: {info.cpu_model}, ISA {info.isa}, {info.cores} cores; backend {args.backend}; "
        f"GSM8K-test first {args.problems}, greedy, max {args.max_tokens} tokens; "
        f"probe {args.probe_tokens} tokens/sample.\n\n{table}\n"
    )
    print(table)

    def fmt(x: float | None, nd: int = 2) -> str:
        return "nan" if x is None else f"{x:.{nd}f}"

    speedup = speed(quant) / speed(ref) if quant and ref else None
    # On a GPU host RSS is host memory; the weights' footprint is the checkpoint size there.
    key = "ckpt_gb" if profile.device == "cuda" else "rss_after_load_mb"
    mem = ref[key] / quant[key] if quant and ref else None
    print(
        f"RESULT best={best['variant'] if best else 'none'} "
        f"speedup_vs_unquantized={fmt(speedup)} mem_ratio={fmt(mem)} "
        f"acc_unquantized={fmt(ref['accuracy'] if ref else None, 1)} "
        f"acc_quantized={fmt(quant['accuracy'] if quant else None, 1)} "
        f"quantized={quant['variant'] if quant else 'none'} isa={info.isa}"
    )


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
