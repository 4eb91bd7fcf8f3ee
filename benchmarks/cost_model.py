"""Does the eFLOPs cost model predict wall time? Prefill and decode of the embedded model.

For each context length L (default 256 ... 8192) on transformers (fp32 on AVX2 hosts,
``cpu_dtype()``):

- prefill: one forward pass over L random token ids (no cache);
- decode: ``--decode`` single-token steps on top of that KV cache (greedy on the logits).

Each timing is the best of ``--repeats``. The prediction is ``eFLOPs / peak_flops`` of the
hardware preset ledgers use (``default_hardware()``: this host's calibrated preset when
``ttscale calibrate --hardware`` has run, else ``cpu-avx2-2c``), with the eFLOPs of exactly
that work from ``request_eflops``. Reported: Pearson (of log times, as the lengths span
32x) and Spearman correlation of predicted vs measured, per phase and together, and the
same for the naive ``2 x params x tokens`` model (which has no KV term), so the gain from
the Kinetics terms is visible. ``--tiny`` runs a small random Qwen2 config instead of the
embedded model (a smoke test of the script, not a measurement).

Run at full size under the shared CPU lock (~10-20 min on 2 vCPUs)::

    flock /tmp/ttscale-cpu.lock .venv/bin/python benchmarks/cost_model.py

Writes ``benchmarks/results/cost_model.json``; last line
``RESULT pearson_log=<> spearman=<> naive_pearson_log=<> decode_spearman=<> hardware=<> isa=<>``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from ttscale.cost import ModelSpec, default_hardware, request_eflops
from ttscale.host import cpu_dtype, host_info

ROOT = Path(__file__).resolve().parent.parent


def pearson(x: list[float], y: list[float]) -> float:
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sx = math.sqrt(sum((a - mx) ** 2 for a in x))
    sy = math.sqrt(sum((b - my) ** 2 for b in y))
    if sx * sy == 0:  # a constant series (the naive model prices every decode step alike)
        return float("nan")
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / (sx * sy)


def spearman(x: list[float], y: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):  # average ranks over ties
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    return pearson(ranks(x), ranks(y))


def load(tiny: bool, dtype: str) -> tuple[Any, ModelSpec]:
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from ttscale.backends.common import spec_from_dir

    if tiny:
        cfg = Qwen2Config(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=16384,
        )
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(cfg).to(getattr(torch, dtype)).eval()
        spec = ModelSpec.from_hf_config(
            cfg.to_dict(), bytes_per_param=4 if dtype == "float32" else 2
        )
        return model, spec
    from ttscale.engine.models import resolve_model

    path = resolve_model(None)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    spec = spec_from_dir(path, dtype)
    assert spec is not None, f"no config.json in {path}"
    return model, spec


def time_one(model: Any, length: int, decode: int, vocab: int, seed: int) -> tuple[float, float]:
    """(prefill seconds, decode seconds) for one context length."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (1, length), generator=g)
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(ids, use_cache=True)
        prefill = time.perf_counter() - t0
        past = out.past_key_values
        tok = out.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(decode):
            out = model(tok, past_key_values=past, use_cache=True)
            past = out.past_key_values
            tok = out.logits[:, -1:].argmax(-1)
        dec = time.perf_counter() - t0
    return prefill, dec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", default="256,512,1024,2048,4096,8192")
    ap.add_argument("--decode", type=int, default=32, help="decode steps per length")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="small random model (smoke test)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cost_model.json")
    args = ap.parse_args()
    import torch

    info = host_info()
    torch.set_num_threads(info.cores)
    dtype = cpu_dtype(info)
    hw = default_hardware()
    lengths = [int(x) for x in args.lengths.split(",")]
    model, spec = load(args.tiny, dtype)
    vocab = spec.vocab_size
    time_one(model, min(lengths), 2, vocab, 0)  # warm-up
    rows = []
    for length in lengths:
        best_p = best_d = math.inf
        for r in range(args.repeats):
            p, d = time_one(model, length, args.decode, vocab, r)
            best_p, best_d = min(best_p, p), min(best_d, d)
        pre_fl = request_eflops(spec, hw, prompt_tokens=length, cached_tokens=0, generated=[])
        dec_fl = request_eflops(
            spec, hw, prompt_tokens=length, cached_tokens=length, generated=[args.decode]
        )
        for phase, secs, fl, toks in (
            ("prefill", best_p, pre_fl, length),
            ("decode", best_d, dec_fl, args.decode),
        ):
            rows.append(
                {
                    "phase": phase,
                    "length": length,
                    "tokens": toks,
                    "measured_s": secs,
                    "eflops": fl,
                    "predicted_s": fl / hw.peak_flops,
                    "naive_s": 2.0 * spec.params * toks / hw.peak_flops,
                }
            )
        print(
            f"L={length:5d} prefill {best_p:8.4f}s (pred {pre_fl / hw.peak_flops:8.4f}s)  "
            f"decode x{args.decode} {best_d:8.4f}s (pred {dec_fl / hw.peak_flops:8.4f}s)",
            flush=True,
        )

    def corr(sel: list[dict[str, Any]], key: str) -> dict[str, float]:
        meas = [r["measured_s"] for r in sel]
        pred = [r[key] for r in sel]
        if len(sel) < 3:
            return {"pearson_log": float("nan"), "spearman": float("nan")}
        return {
            "pearson_log": pearson([math.log(a) for a in pred], [math.log(b) for b in meas]),
            "spearman": spearman(pred, meas),
        }

    dec = [r for r in rows if r["phase"] == "decode"]
    report = {
        "host": {"cpu": info.cpu_model, "isa": info.isa, "cores": info.cores},
        "dtype": dtype,
        "hardware": {
            "name": hw.name,
            "peak_flops": hw.peak_flops,
            "mem_bandwidth": hw.mem_bandwidth,
        },
        "model": "tiny-random-qwen2" if args.tiny else "embedded default",
        "spec": {"params": spec.params, "layers": spec.num_layers, "kv_heads": spec.num_kv_heads},
        "decode_steps": args.decode,
        "rows": rows,
        "all": corr(rows, "predicted_s"),
        "all_naive": corr(rows, "naive_s"),
        "decode": corr(dec, "predicted_s"),
        "decode_naive": corr(dec, "naive_s"),
        "prefill": corr([r for r in rows if r["phase"] == "prefill"], "predicted_s"),
        "decode_per_token_growth": (dec[-1]["measured_s"] / dec[0]["measured_s"]) if dec else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    a, n, d = report["all"], report["all_naive"], report["decode"]
    print(
        f"RESULT pearson_log={a['pearson_log']:.3f} spearman={a['spearman']:.3f} "
        f"naive_pearson_log={n['pearson_log']:.3f} decode_spearman={d['spearman']:.3f} "
        f"decode_naive_spearman={report['decode_naive']['spearman']:.3f} "
        f"hardware={hw.name} isa={info.isa} model={report['model']}"
    )


if __name__ == "__main__":
    main()
