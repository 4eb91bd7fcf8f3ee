"""Block top-k sparse decode attention (``ttscale.kernels``) vs dense, on this host.

``--engine hf`` (default; the **HF-backend rows**: transformers, ``HFBackend``) has three parts,
each measured side by side in one process:

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

``--engine vllm``: the default engine, ``VLLMBackend(sparse=...)`` (``ttscale.kernels.vllm_sparse``)
on the embedded 0.5B model. One engine serves both modes: ``set_sparse(None)`` is the stock
kernel path (dense), ``set_sparse(cfg)`` the block top-k path, so weights, cache and threads
are shared and the modes alternate per measurement.

1. **speed**, per context length (``--vllm-lengths``) and sequences in flight (1 and 8, one
   prompt sampled ``n`` times: its KV is shared by prefix caching, attention still reads it
   once per sequence): decode tok/s = ``n * (T - 1) / (t(T) - t(1))`` with the prompt already
   cached, median over ``--reps``; the share of a decode step spent in the attention layers
   (timed around the attention impl, selection included), per mode.
2. **accuracy**: multi-key needle retrieval (RULER's MK-NIAH), ``--cases`` questions per length:
   haystacks of filler text (fixed seeds), each hiding the 5-digit pass keys of 10 names, one
   per tenth of the text at a seeded depth inside it; each question asks one name's key and is
   answered greedily in both modes. The questions about one haystack share its prefill, and
   the second mode's is a prefix-cache hit (prefill is dense in both), so 50 cases at 32k cost
   5 long prefills, not 100.

Resumable: every finished unit (a speed row, a case) is appended to
``benchmarks/results/sparse_attention_vllm.jsonl`` and skipped on the next run (``--fresh``
starts over; ``--redo GLOB`` measures matching units again, e.g. ``--redo 'speed/*/1/*' --reps
7`` for steadier one-sequence rows; the newest row of a unit wins). Run it alone on the machine:

    flock /tmp/ttscale-cpu.lock .venv/bin/python benchmarks/sparse_attention.py --engine vllm \\
        [--vllm-lengths 2048,4096,8192,16384,32768] [--cases 50] [--k 32 --block-size 64]

``--smoke`` checks the whole path in minutes (2k/4k context, 3 cases, few tokens) and writes
``*_smoke`` files. Results: ``benchmarks/results/sparse_attention_vllm.json``; last line
``RESULT engine=vllm ctx=16384 decode_speedup=<n=8> acc_dense=<> acc_sparse=<>
crossover=<shortest measured context where the sparse path is not slower, n=8> isa=<>``. A
length at or under ``--threshold`` would run the stock path in both modes: its speed rows run
the sparse path anyway (threshold 0), so the crossover is measured, not assumed.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
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


# -- the default engine (vLLM) ------------------------------------------------------------
PASSKEY_Q = "What is the pass key? Answer with the number only."


def passkey_case(tok: Any, length: int, seed: int) -> tuple[list[int], str]:
    """A ~``length``-token prompt hiding a 5-digit pass key at a seeded depth (speed rows)."""
    rng = random.Random(seed * 1_000_003 + length)
    key = str(rng.randint(10000, 99999))
    per = len(tok.encode(FILLER, add_special_tokens=False))
    n_fill = max(2, (length - 160) // per)  # room for the template and the decode tokens
    depth = rng.randint(0, n_fill - 1)
    parts = [FILLER] * n_fill
    parts.insert(depth, f"The pass key is {key}. Remember it. {key} is the pass key. ")
    intro = "There is a pass key hidden inside a lot of irrelevant text. Find it.\n\n"
    return chat_ids(tok, intro + "".join(parts), PASSKEY_Q), key


NEEDLES_PER_CONTEXT = 10


def needle_context(tok: Any, length: int, group: int) -> tuple[str, list[tuple[str, str]]]:
    """A ~``length``-token haystack hiding one 5-digit pass key per name of ``NAMES``, one
    name per tenth of the text at a seeded depth inside it (multi-key needle retrieval, as
    RULER's MK-NIAH): the questions about one haystack share its prefill (prefix cache)."""
    rng = random.Random(group * 1_000_003 + length)
    per = len(tok.encode(FILLER, add_special_tokens=False))
    n_fill = max(NEEDLES_PER_CONTEXT * 2, (length - 200) // per)
    names = rng.sample(NAMES, NEEDLES_PER_CONTEXT)
    slot = n_fill / NEEDLES_PER_CONTEXT
    at = {int(i * slot + rng.random() * slot): i for i in range(NEEDLES_PER_CONTEXT)}
    keys = [str(rng.randint(10000, 99999)) for _ in names]
    parts = []
    for j in range(n_fill):
        if j in at:
            name, key = names[at[j]], keys[at[j]]
            parts.append(f"The pass key of {name} is {key}. Remember it. ")
        parts.append(FILLER)
    intro = "Pass keys of several people are hidden inside a lot of irrelevant text.\n\n"
    return intro + "".join(parts), list(zip(names, keys, strict=True))


def needle_case(tok: Any, length: int, case: int) -> tuple[list[int], str]:
    """Case ``case`` of a length: haystack ``case // 10``, the question about one of its names."""
    context, facts = needle_context(tok, length, case // NEEDLES_PER_CONTEXT)
    name, key = facts[case % NEEDLES_PER_CONTEXT]
    q = f"What is the pass key of {name}? Answer with the number only."
    return chat_ids(tok, context, q), key


class _Units:
    """Finished units of a resumable run, one JSON object per line."""

    def __init__(self, path: Path, fresh: bool, redo: str | None = None) -> None:
        self.path = path
        if fresh and path.exists():
            path.unlink()
        self.done: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.done[row["unit"]] = row  # the newest row of a unit wins
        if redo:  # measured again and appended; the older rows stay in the file
            self.done = {u: r for u, r in self.done.items() if not fnmatch.fnmatch(u, redo)}

    def add(self, unit: str, row: dict[str, Any]) -> dict[str, Any]:
        row = {"unit": unit, **row}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self.done[unit] = row
        return row


def _timed_attention() -> dict[str, float]:
    """Wrap the attention impl's forward with a timer (this process only); returns the
    accumulator, reset by the caller."""
    from ttscale.kernels.vllm_sparse import SparseCPUAttentionImpl

    acc = {"s": 0.0}
    if getattr(SparseCPUAttentionImpl, "_bench_timed", False):
        return SparseCPUAttentionImpl._bench_acc  # type: ignore[attr-defined,no-any-return]
    inner = SparseCPUAttentionImpl.forward

    def forward(self: Any, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return inner(self, *a, **kw)
        finally:
            acc["s"] += time.perf_counter() - t

    SparseCPUAttentionImpl.forward = forward  # type: ignore[method-assign]
    SparseCPUAttentionImpl._bench_timed = True  # type: ignore[attr-defined]
    SparseCPUAttentionImpl._bench_acc = acc  # type: ignore[attr-defined]
    return acc


def _gen_seconds(
    be: Any, ids: list[int], n: int, tokens: int, seed: int
) -> tuple[float, float, int]:
    """Wall seconds of one generate call, the attention seconds inside it, tokens made."""
    import asyncio

    from ttscale.types import GenerationRequest

    acc = _timed_attention()
    req = GenerationRequest(
        tuple(ids), n=n, max_tokens=tokens, temperature=0.8, top_p=0.95, seed=seed
    )
    acc["s"] = 0.0
    t = time.perf_counter()
    out = asyncio.run(be.generate([req]))[0]
    return time.perf_counter() - t, acc["s"], sum(len(c.token_ids) for c in out.completions)


def vllm_bench(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    from ttscale.backends import VLLMBackend
    from ttscale.types import GenerationRequest

    suffix = "_smoke" if args.smoke else ""
    lengths = [int(x) for x in args.vllm_lengths.split(",")]
    cfg = TopKBlocks(
        block_size=args.block_size,
        k=args.k,
        threshold=args.threshold,
        num_sink=args.sink,
        num_local=args.recent,
    )
    units = _Units(RESULTS.with_name(f"sparse_attention_vllm{suffix}.jsonl"), args.fresh, args.redo)
    be = VLLMBackend(
        args.model,
        sparse=cfg,
        max_model_len=max(lengths),
        kv_cache_gib=args.kv_cache_gib,
        seeding="engine",
    )
    tok = be._tokenizer
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    speed: list[dict[str, Any]] = []
    # At or under the threshold the sparse setting runs the stock path: measure the sparse
    # path there anyway (threshold 0), so the rows show where it starts to pay (crossover).
    forced = dataclasses.replace(cfg, threshold=0)
    for length in lengths:
        ids, _ = passkey_case(tok, length, seed=10_000)
        run_cfg = forced if forced.sparse_at(len(ids)) and not cfg.sparse_at(len(ids)) else cfg
        for n in [int(x) for x in args.vllm_batches.split(",")]:
            unit = f"speed/{length}/{n}/{run_cfg}"
            if unit in units.done:
                row = units.done[unit]
                row.setdefault("threshold", run_cfg.threshold)
                row.setdefault("sparse_path", run_cfg.sparse_at(row["kv_len"]))
                speed.append(row)
                continue
            be.set_sparse(None)
            _gen_seconds(be, ids, 1, 1, 0)  # prefill once: later calls hit the prefix cache
            rows: dict[str, dict[str, list[float]]] = {}
            for rep in range(args.reps):
                for mode in ("dense", "sparse"):
                    be.set_sparse(None if mode == "dense" else run_cfg)
                    t1, a1, m1 = _gen_seconds(be, ids, n, 1, rep)
                    tt, at, mt = _gen_seconds(be, ids, n, args.decode_tokens, rep)
                    r = rows.setdefault(mode, {"tok_s": [], "attn_share": []})
                    r["tok_s"].append((mt - m1) / max(tt - t1, 1e-9))  # an EOS stops early
                    r["attn_share"].append((at - a1) / max(tt - t1, 1e-9))
            med = {m: {k: statistics.median(v) for k, v in r.items()} for m, r in rows.items()}
            row = units.add(
                unit,
                {
                    "kv_len": len(ids),
                    "context": length,
                    "n": n,
                    "threshold": run_cfg.threshold,
                    "sparse_path": run_cfg.sparse_at(len(ids)),
                    "dense_tok_s": med["dense"]["tok_s"],
                    "sparse_tok_s": med["sparse"]["tok_s"],
                    "speedup": med["sparse"]["tok_s"] / med["dense"]["tok_s"],
                    "attn_share_dense": med["dense"]["attn_share"],
                    "attn_share_sparse": med["sparse"]["attn_share"],
                    "reps": args.reps,
                    "decode_tokens": args.decode_tokens,
                },
            )
            speed.append(row)
            log(
                f"speed ctx={length} n={n}: dense {row['dense_tok_s']:.2f} tok/s, sparse "
                f"{row['sparse_tok_s']:.2f} tok/s ({row['speedup']:.2f}x); attention share "
                f"dense {row['attn_share_dense']:.0%} sparse {row['attn_share_sparse']:.0%}"
            )

    acc: dict[int, dict[str, Any]] = {}
    for length in lengths:
        hits = {"dense": 0, "sparse": 0}
        for case in range(args.cases):
            unit = f"needle/{length}/{case}/{cfg}"
            if unit not in units.done:
                ids, key = needle_case(tok, length, case)
                got = {}
                for mode in ("dense", "sparse"):
                    be.set_sparse(None if mode == "dense" else cfg)
                    req = GenerationRequest(tuple(ids), n=1, max_tokens=12, temperature=0.0)
                    text = asyncio.run(be.generate([req]))[0].completions[0].text
                    got[mode] = {"text": text, "correct": key in text}
                units.add(unit, {"context": length, "kv_len": len(ids), "key": key, **got})
            row = units.done[unit]
            for mode in hits:
                hits[mode] += bool(row[mode]["correct"])
        if args.cases:
            acc[length] = {m: h / args.cases for m, h in hits.items()} | {"cases": args.cases}
            log(f"passkey ctx={length}: {acc[length]}")
    return {
        "config": dataclasses.asdict(cfg),
        "speed": speed,
        "passkey": acc,
        "sparse_stats": be.sparse_stats(),
        "engine": be.profile(),
    }


def vllm_main(args: argparse.Namespace) -> None:
    if args.smoke:
        args.vllm_lengths, args.cases, args.reps, args.decode_tokens = "2048,4096", 3, 1, 6
        args.threshold = min(args.threshold, 1024)
    info = host_info()
    t0 = time.perf_counter()
    result = {"host": {"isa": info.isa, "cpu": info.cpu_model, "cores": info.cores}}
    result["config"] = {**vars(args), "out": str(args.out)}
    result["vllm"] = vllm_bench(args)
    result["wall_s"] = time.perf_counter() - t0
    out = RESULTS.with_name(f"sparse_attention_vllm{'_smoke' if args.smoke else ''}.json")
    out.write_text(json.dumps(result, indent=2, default=str))
    speed = result["vllm"]["speed"]
    ctxs = sorted({r["context"] for r in speed})
    report = 16384 if 16384 in ctxs else max(ctxs)
    n8 = [r for r in speed if r["n"] == max(x["n"] for x in speed)]
    at = next((r for r in n8 if r["context"] == report), None)
    # Rows where the sparse path ran (k blocks cover less than the context).
    engaged = sorted((r for r in n8 if r.get("sparse_path", True)), key=lambda r: r["context"])
    cross = next((r["context"] for r in engaged if r["speedup"] >= 1.0), None)
    pk = result["vllm"]["passkey"].get(report, {})
    fmt = lambda x: "na" if x is None else f"{x:.3g}"  # noqa: E731
    print(
        "| context (KV tokens) | n | dense tok/s | sparse tok/s | speedup "
        "| attention share dense | sparse |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in sorted(speed, key=lambda r: (r["context"], r["n"])):
        note = "" if r.get("sparse_path", True) else " (k covers every block: stock in both)"
        print(
            f"| {r['context']} ({r['kv_len']}) | {r['n']} | {r['dense_tok_s']:.2f} | "
            f"{r['sparse_tok_s']:.2f} | {r['speedup']:.2f}x{note} | {r['attn_share_dense']:.0%} "
            f"| {r['attn_share_sparse']:.0%} |"
        )
    for ctx, a in sorted(result["vllm"]["passkey"].items()):
        print(f"passkey {ctx}: dense {a['dense']:.2f} sparse {a['sparse']:.2f} ({a['cases']})")
    print(f"results: {out}")
    print(
        f"RESULT engine=vllm ctx={report} decode_speedup={fmt(at and at['speedup'])} "
        f"acc_dense={fmt(pk.get('dense'))} acc_sparse={fmt(pk.get('sparse'))} "
        f"crossover={cross if cross is not None else 'na'} isa={info.isa}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", choices=("hf", "vllm"), default="hf")
    ap.add_argument("--model", default=None, help="--engine vllm: model (default embedded)")
    ap.add_argument("--vllm-lengths", default="2048,4096,8192,16384,32768")
    ap.add_argument("--vllm-batches", default="1,8")
    ap.add_argument("--cases", type=int, default=50, help="passkey cases per length")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--sink", type=int, default=1)
    ap.add_argument("--recent", type=int, default=2)
    ap.add_argument("--kv-cache-gib", type=int, default=2, help="fp32 0.5B: ~24 KiB/token")
    ap.add_argument("--smoke", action="store_true", help="--engine vllm: minutes, 2k/4k")
    ap.add_argument("--fresh", action="store_true", help="--engine vllm: ignore saved units")
    ap.add_argument(
        "--redo",
        default=None,
        help="--engine vllm: measure saved units matching this glob again (e.g. 'speed/*/1/*')",
    )
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
    if args.engine == "vllm":
        vllm_main(args)
        return

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
