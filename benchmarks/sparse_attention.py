"""Block top-k sparse decode attention (``ttscale.kernels``) vs dense, on this host.

Three parts, each measured side by side in one process:

1. **kernel**: one decode step of attention, Qwen2-0.5B geometry (14 query / 2 KV heads, head
   dim 64), random fp32 tensors, KV length 4k/16k/32k, batch 1 and 8, ``k`` = 1/8 of the
   64-token blocks. Dense baselines: torch SDPA with ``enable_gqa`` (what transformers runs
   for an unpadded decode) and with the KV heads repeated (what it runs with a padding mask);
   then the torch reference, the C++ kernel with ``k`` covering every block (exact dense) and
   the C++ kernel sparse. Implementations run interleaved, round after round; medians.
2. **e2e**: the embedded 0.5B model decodes greedily after a ~16k-token context (one dense
   prefill, shared by all modes: prefill is dense in all). ``dense`` = stock transformers
   (``DynamicCache`` + ``sdpa``, what ``HFBackend`` runs by default); ``sparse`` =
   ``HFBackend(sparse_attention=TopKBlocks(...))`` (preallocated cache + block top-k);
   ``dense_prealloc`` (preallocated cache + ``sdpa``) splits the gain into its cache and
   sparsity parts. Modes rotate per question from the same caches (cropped back between
   runs); tokens/s is 1 / median step time. ``--batch-decode B`` adds a B-row decode
   (cache repeated), where KV reads outweigh the weight reads and sparsity pays more.
3. **quality**: the same context hides ``--keys`` "secret code" facts at evenly spread
   depths; each question is answered greedily in both modes (retrieval accuracy, greedy
   agreement), plus one long math rollout after the same context.

    flock /tmp/ttscale-cpu.lock .venv/bin/python benchmarks/sparse_attention.py \\
        [--context 16384] [--keys 6] [--kernel-lengths 4096,16384,32768] [--skip-e2e]

Results go to ``benchmarks/results/sparse_attention.json``. Last line:
``RESULT kernel_speedup_32k=<dense SDPA / C++ sparse, batch 1> e2e_decode_speedup_16k=<>
retrieval_acc_dense=<> retrieval_acc_sparse=<> isa=<>``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ttscale.host import host_info
from ttscale.kernels import TopKBlocks, block_summaries, block_topk_decode_attention

RESULTS = Path(__file__).parent / "results" / "sparse_attention.json"
FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
)
NAMES = ["Alice", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Jun"]
MATH = (
    "Now a different task. Solve this step by step: a store sells pencils at 3 for $1 and "
    "notebooks at $4 each. Maria buys 12 pencils and 3 notebooks and pays with a $20 bill. "
    "How much change does she get? Put the final answer within \\boxed{}."
)


# -- timing helper -------------------------------------------------------------------------
def interleaved(fns: dict[str, Any], reps: int, max_s: float) -> dict[str, list[float]]:
    """Run every function once per round, rounds until ``reps`` or ``max_s`` (>= 3 rounds)."""
    for f in fns.values():
        f()  # warm-up (JIT build, allocator)
    times: dict[str, list[float]] = {n: [] for n in fns}
    t0 = time.perf_counter()
    for r in range(reps):
        for name, f in fns.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
        if r >= 2 and time.perf_counter() - t0 > max_s:
            break
    return times


def summary(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    q = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))]  # noqa: E731
    return {
        "median_ms": statistics.median(xs) * 1e3,
        "p10_ms": q(0.1) * 1e3,
        "p90_ms": q(0.9) * 1e3,
        "n": len(xs),
    }


# -- 1. kernel -----------------------------------------------------------------------------
def kernel_bench(lengths: list[int], batches: list[int], reps: int, max_s: float) -> list[dict]:
    Hq, Hkv, D, bs = 14, 2, 64, 64
    rows = []
    for B in batches:
        for T in lengths:
            g = torch.Generator().manual_seed(T + B)
            q = torch.randn(B, Hq, D, generator=g)
            kc = torch.randn(B, Hkv, T, D, generator=g)
            vc = torch.randn(B, Hkv, T, D, generator=g)
            summ = block_summaries(kc, bs)
            nb = -(-T // bs)
            k = max(nb // 8, 3)
            q4 = q[:, :, None]

            def run(impl: str, kk: int) -> Any:
                return lambda: block_topk_decode_attention(
                    q, kc, vc, summ, block_size=bs, k=kk, num_sink=1, num_local=2, impl=impl
                )

            fns = {
                "sdpa_gqa": lambda: F.scaled_dot_product_attention(q4, kc, vc, enable_gqa=True),
                "sdpa_repeat_kv": lambda: F.scaled_dot_product_attention(
                    q4, kc.repeat_interleave(Hq // Hkv, 1), vc.repeat_interleave(Hq // Hkv, 1)
                ),
                "reference_sparse": run("reference", k),
                "cpu_dense": run("cpu", nb),
                "cpu_sparse": run("cpu", k),
            }
            times = interleaved(fns, reps, max_s)
            res = {n: summary(t) for n, t in times.items()}
            dense = res["sdpa_gqa"]["median_ms"]
            row = {
                "batch": B,
                "kv_len": T,
                "k_blocks": k,
                "num_blocks": nb,
                "times": res,
                "speedup_vs_sdpa_gqa": dense / res["cpu_sparse"]["median_ms"],
                "speedup_vs_cpu_dense": res["cpu_dense"]["median_ms"]
                / res["cpu_sparse"]["median_ms"],
            }
            rows.append(row)
            print(
                f"kernel B={B} T={T} k={k}/{nb}: "
                + " ".join(f"{n}={v['median_ms']:.2f}ms" for n, v in res.items())
                + f" -> sparse {row['speedup_vs_sdpa_gqa']:.1f}x vs sdpa_gqa",
                flush=True,
            )
    return rows


# -- 2./3. model ---------------------------------------------------------------------------
def build_context(tok: Any, target: int, n_keys: int, seed: int) -> tuple[str, list[tuple]]:
    """Filler text of ~``target`` tokens with ``n_keys`` secret codes at spread depths."""
    rng = random.Random(seed)
    per = len(tok.encode(FILLER, add_special_tokens=False))
    n_fill = max(target // per, n_keys + 1)
    facts = []
    for i in range(n_keys):
        name, code = NAMES[i % len(NAMES)], rng.randint(10000, 99999)
        depth = (i + 0.5) / n_keys
        facts.append((int(depth * n_fill), name, code, depth))
    parts = []
    for j in range(n_fill):
        for pos, name, code, _ in facts:
            if pos == j:
                parts.append(f"The secret code of {name} is {code}. ")
        parts.append(FILLER)
    return "".join(parts), [(name, code, depth) for _, name, code, depth in facts]


def chat_ids(tok: Any, context: str, question: str) -> list[int]:
    msgs = [{"role": "user", "content": context + "\n\n" + question}]
    out = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if not isinstance(out, list) else out)


def forward(model: Any, ids: torch.Tensor, cache: Any) -> torch.Tensor:
    out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1]


def prefill(model: Any, ids: list[int], cache: Any, chunk: int) -> torch.Tensor:
    logits = None
    for i in range(0, len(ids), chunk):
        logits = forward(model, torch.tensor([ids[i : i + chunk]]), cache)
    return logits


def crop_to(cache: Any, length: int) -> None:
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def greedy(model: Any, cache: Any, first: torch.Tensor, steps: int, eos: set[int]) -> tuple:
    """Decode ``steps`` tokens (rows keep going after EOS); returns tokens and step times."""
    nxt, toks, times = first, [first[:, 0].tolist()], []
    for _ in range(steps - 1):
        t = time.perf_counter()
        nxt = forward(model, nxt, cache).argmax(-1, keepdim=True)
        times.append(time.perf_counter() - t)
        toks.append(nxt[:, 0].tolist())
    rows = [list(r) for r in zip(*toks, strict=True)]
    for r in rows:
        cut = next((i for i, t in enumerate(r) if t in eos), None)
        if cut is not None:
            del r[cut + 1 :]
    return rows, times


def agreement(a: list[int], b: list[int]) -> dict[str, Any]:
    n = min(len(a), len(b))
    prefix = next((i for i in range(n) if a[i] != b[i]), n)
    return {"identical": a == b, "common_prefix": prefix, "len_dense": len(a), "len_sparse": len(b)}


def boxed(text: str) -> str | None:
    m = re.findall(r"\\boxed\{([^{}]*)\}", text)
    return m[-1].strip() if m else None


def model_bench(args: argparse.Namespace, cfg: TopKBlocks) -> dict[str, Any]:
    from transformers import DynamicCache

    from ttscale.backends import HFBackend
    from ttscale.kernels.hf_attention import ATTN_NAME, preallocated_cache

    backend = HFBackend(seed=0, max_model_len=32768, sparse_attention=cfg)
    model, tok, state = backend._model, backend._tokenizer, backend._sparse
    eos = set(backend._eos_ids())
    torch.set_grad_enabled(False)

    context, facts = build_context(tok, args.context, args.keys, args.seed)
    questions = [
        (f"What is the secret code of {n}? Reply with the number only.", str(c), d)
        for n, c, d in facts
    ]
    all_ids = [chat_ids(tok, context, q) for q, _, _ in questions] + [chat_ids(tok, context, MATH)]
    plen = min(
        next((i for i, (x, y) in enumerate(zip(all_ids[0], ids, strict=False)) if x != y), len(ids))
        for ids in all_ids[1:]
    )
    print(f"context: {plen} shared tokens, {len(questions)} questions + 1 math", flush=True)

    # Two caches holding the same prefill: transformers' stock DynamicCache (torch.cat per
    # step) and the preallocated one HFBackend's sparse mode uses.
    longest = max(len(x) for x in all_ids) + max(args.answer_tokens, args.math_tokens) + 8
    caches = {
        "stock": DynamicCache(config=model.config),
        "prealloc": preallocated_cache(model, longest),
    }
    model.set_attn_implementation("sdpa")
    t0 = time.perf_counter()
    prefill(model, all_ids[0][:plen], caches["prealloc"], args.prefill_chunk)
    prefill_s = time.perf_counter() - t0
    for i, layer in enumerate(caches["prealloc"].layers):
        caches["stock"].update(layer.keys.clone(), layer.values.clone(), i)
    print(f"prefill {plen} tokens: {prefill_s:.0f}s", flush=True)

    # mode -> (cache, attention implementation)
    modes = {
        "dense": ("stock", "sdpa"),
        "dense_prealloc": ("prealloc", "sdpa"),
        "sparse": ("prealloc", ATTN_NAME),
    }
    step_times: dict[str, list[float]] = {m: [] for m in modes}
    cases = []
    tasks = [(q, a, d, args.answer_tokens) for q, a, d in questions]
    tasks.append((MATH, "4", None, args.math_tokens))  # pencils $4 + notebooks $12 -> $4 change
    for i, (ids, (_, answer, depth, steps)) in enumerate(zip(all_ids, tasks, strict=True)):
        model.set_attn_implementation("sdpa")
        base, first = {}, None
        for name, cache in caches.items():
            crop_to(cache, plen)
            logits = prefill(model, ids[plen:], cache, args.prefill_chunk)
            first = logits.argmax(-1, keepdim=True) if first is None else first
            base[name] = cache.get_seq_length()
        run = list(modes) if depth is not None else ["dense", "sparse"]
        run = run[i % len(run) :] + run[: i % len(run)]  # rotate the order per question
        out = {}
        for mode in run:
            cname, attn = modes[mode]
            crop_to(caches[cname], base[cname])
            state.reset()
            model.set_attn_implementation(attn)
            rows, times = greedy(model, caches[cname], first, steps, eos)
            step_times[mode] += times
            text = tok.decode(rows[0], skip_special_tokens=True)
            correct = (answer in text) if depth is not None else (boxed(text) == answer)
            out[mode] = {"text": text, "tokens": rows[0], "correct": correct}
        case = {
            "kind": "retrieval" if depth is not None else "math",
            "depth": depth,
            "answer": answer,
            "kv_len": base["stock"],
            **{m: {k: v for k, v in o.items() if k != "tokens"} for m, o in out.items()},
            "agreement": agreement(out["dense"]["tokens"], out["sparse"]["tokens"]),
        }
        if "dense_prealloc" in out:
            case["prealloc_identical"] = out["dense_prealloc"]["tokens"] == out["dense"]["tokens"]
        cases.append(case)
        print(
            f"case {i} {case['kind']} depth={depth}: dense={out['dense']['correct']} "
            f"sparse={out['sparse']['correct']} agree={case['agreement']} "
            f"| {out['dense']['text'][:60]!r} | {out['sparse']['text'][:60]!r}",
            flush=True,
        )
    e2e: dict[str, Any] = {m: summary(t) for m, t in step_times.items()}
    for m in modes:
        e2e[m]["tokens_per_s"] = 1e3 / e2e[m]["median_ms"]
    e2e["speedup"] = e2e["dense"]["median_ms"] / e2e["sparse"]["median_ms"]
    e2e["speedup_cache_only"] = e2e["dense"]["median_ms"] / e2e["dense_prealloc"]["median_ms"]
    e2e["speedup_sparsity_only"] = e2e["dense_prealloc"]["median_ms"] / e2e["sparse"]["median_ms"]
    e2e["kv_len"] = cases[0]["kv_len"]
    print(
        f"e2e batch 1 at {e2e['kv_len']} tokens: "
        + ", ".join(f"{m} {e2e[m]['tokens_per_s']:.2f} tok/s" for m in modes)
        + f" -> sparse {e2e['speedup']:.2f}x (cache {e2e['speedup_cache_only']:.2f}x, "
        f"sparsity {e2e['speedup_sparsity_only']:.2f}x)",
        flush=True,
    )

    batched = None
    if args.batch_decode > 1:
        B = args.batch_decode
        model.set_attn_implementation("sdpa")
        base, first = {}, None
        for name, cache in caches.items():
            crop_to(cache, plen)
            logits = prefill(model, all_ids[0][plen:], cache, args.prefill_chunk)
            first = logits.argmax(-1, keepdim=True) if first is None else first
            base[name] = cache.get_seq_length()
            cache.batch_repeat_interleave(B)
        first = first.repeat(B, 1)
        bmodes = ["dense", "sparse"]
        bt: dict[str, list[float]] = {m: [] for m in bmodes}
        for r in range(2):
            for mode in bmodes if r == 0 else bmodes[::-1]:
                cname, attn = modes[mode]
                crop_to(caches[cname], base[cname])
                state.reset()
                model.set_attn_implementation(attn)
                bt[mode] += greedy(model, caches[cname], first, args.batch_steps, eos)[1]
        batched = {m: summary(t) for m, t in bt.items()}
        for m in bmodes:
            batched[m]["tokens_per_s"] = B * 1e3 / batched[m]["median_ms"]
        batched["speedup"] = batched["dense"]["median_ms"] / batched["sparse"]["median_ms"]
        batched["batch"] = B
        print(
            f"e2e batch {B}: dense {batched['dense']['tokens_per_s']:.2f} tok/s, sparse "
            f"{batched['sparse']['tokens_per_s']:.2f} tok/s -> {batched['speedup']:.2f}x",
            flush=True,
        )

    ret = [c for c in cases if c["kind"] == "retrieval"]
    acc = {m: sum(c[m]["correct"] for c in ret) / max(len(ret), 1) for m in ("dense", "sparse")}
    return {
        "prefill_tokens": plen,
        "prefill_s": prefill_s,
        "e2e": e2e,
        "e2e_batched": batched,
        "cases": cases,
        "retrieval_acc": acc,
        "greedy_identical": sum(c["agreement"]["identical"] for c in cases),
        "profile": backend.profile(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernel-lengths", default="4096,16384,32768")
    ap.add_argument("--kernel-batches", default="1,8")
    ap.add_argument("--kernel-reps", type=int, default=15)
    ap.add_argument("--kernel-max-s", type=float, default=20.0, help="per shape")
    ap.add_argument("--context", type=int, default=16384, help="context tokens (approx.)")
    ap.add_argument("--keys", type=int, default=6, help="retrieval questions")
    ap.add_argument("--answer-tokens", type=int, default=12)
    ap.add_argument("--math-tokens", type=int, default=160)
    ap.add_argument("--batch-decode", type=int, default=4, help="0 to skip")
    ap.add_argument("--batch-steps", type=int, default=8)
    ap.add_argument("--prefill-chunk", type=int, default=2048)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--k", type=int, default=32, help="blocks per KV head in the model")
    ap.add_argument("--threshold", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-kernel", action="store_true")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    info = host_info()
    cfg = TopKBlocks(block_size=args.block_size, k=args.k, threshold=args.threshold)
    result: dict[str, Any] = {
        "host": {
            "isa": info.isa,
            "cpu": info.cpu_model,
            "cores": info.cores,
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "config": {**vars(args), "out": str(args.out), "topk": str(cfg)},
    }
    t0 = time.perf_counter()
    if not args.skip_kernel:
        lengths = [int(x) for x in args.kernel_lengths.split(",")]
        batches = [int(x) for x in args.kernel_batches.split(",")]
        result["kernel"] = kernel_bench(lengths, batches, args.kernel_reps, args.kernel_max_s)
    if not args.skip_e2e:
        result["model"] = model_bench(args, cfg)
    result["wall_s"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    k32 = next(
        (r for r in result.get("kernel", []) if r["kv_len"] == 32768 and r["batch"] == 1), None
    )
    m = result.get("model")
    fmt = lambda x: "na" if x is None else f"{x:.3g}"  # noqa: E731
    print(f"results: {args.out}")
    print(
        f"RESULT kernel_speedup_32k={fmt(k32 and k32['speedup_vs_sdpa_gqa'])} "
        f"e2e_decode_speedup_16k={fmt(m and m['e2e']['speedup'])} "
        f"retrieval_acc_dense={fmt(m and m['retrieval_acc']['dense'])} "
        f"retrieval_acc_sparse={fmt(m and m['retrieval_acc']['sparse'])} isa={info.isa}"
    )


if __name__ == "__main__":
    main()
