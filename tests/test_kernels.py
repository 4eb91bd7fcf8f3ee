"""Block top-k decode attention (``ttscale.kernels``): every implementation against the torch
reference, the reference against plain SDPA where it must be exact, and the eFLOPs model.

Tolerances: fp32 outputs within 2e-5 absolute / 1e-4 relative of the reference (only the
summation order differs); bf16 within 2e-2 (inputs and outputs are bf16, math in fp32).
The C++ kernel is built on first use (about a minute, then cached); the Triton path runs
under ``TRITON_INTERPRET=1`` in a subprocess (the interpreter must be set before import).
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttscale.cost import (
    HARDWARE,
    BlockSparseDecode,
    ModelSpec,
    block_sparse_decode_eflops,
    decode_kv_reads,
    request_eflops,
)
from ttscale.errors import BackendUnavailable, ConfigError
from ttscale.kernels import TopKBlocks

torch = pytest.importorskip("torch")
F = torch.nn.functional

from ttscale.kernels import (  # noqa: E402
    block_summaries,
    block_topk_decode_attention,
    update_summaries,
)
from ttscale.kernels.reference import select_blocks  # noqa: E402

FP32 = dict(atol=2e-5, rtol=1e-4)

# (B, Hq, Hkv, D, T, block_size, k, num_sink, num_local, seq_lens, starts)
CASES = [
    (1, 14, 2, 64, 1000, 64, 4, 1, 1, [1000], [0]),  # Qwen2-0.5B geometry, ragged last block
    (3, 14, 2, 64, 777, 64, 5, 1, 2, [777, 500, 65], [0, 0, 0]),  # varied lengths, one dense row
    (2, 8, 8, 32, 300, 16, 6, 2, 1, [300, 299], [17, 0]),  # MHA, left padding
    (4, 6, 2, 16, 200, 8, 3, 0, 1, [200, 9, 150, 1], [0, 3, 40, 0]),  # no sink, tiny rows
    (2, 4, 1, 128, 513, 32, 7, 1, 1, [513, 257], [0, 31]),  # head dim 128, MQA
    (2, 4, 2, 64, 256, 64, 2, 1, 1, [256, 0], [0, 0]),  # k = sink + local, an empty row
]


def _inputs(B, Hq, Hkv, D, T, bs, seq_lens, starts, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, D, generator=g).to(dtype)
    kc = torch.randn(B, Hkv, T, D, generator=g).to(dtype)
    vc = torch.randn(B, Hkv, T, D, generator=g).to(dtype)
    lens, st_ = torch.tensor(seq_lens), torch.tensor(starts)
    summ = block_summaries(kc, bs, seq_lens=lens, starts=st_)
    return q, kc, vc, summ, lens, st_


def _run(impl, q, kc, vc, summ, lens, st_, bs, k, sink, local, scale=None):
    return block_topk_decode_attention(
        q,
        kc,
        vc,
        summ,
        lens,
        block_size=bs,
        k=k,
        num_sink=sink,
        num_local=local,
        starts=st_,
        scale=scale,
        impl=impl,
    )


def _sdpa_rows(q, kc, vc, lens, st_):
    """Plain dense attention of each row over its valid tokens (GQA via enable_gqa)."""
    out = []
    for b in range(q.shape[0]):
        lo, hi = int(st_[b]), int(lens[b])
        if hi <= lo:
            out.append(torch.zeros_like(q[b]))
            continue
        o = F.scaled_dot_product_attention(
            q[b : b + 1, :, None].float(),
            kc[b : b + 1, :, lo:hi].float(),
            vc[b : b + 1, :, lo:hi].float(),
            enable_gqa=True,
        )
        out.append(o[0, :, 0].to(q.dtype))
    return torch.stack(out)


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_cpu_kernel_matches_reference(case):
    B, Hq, Hkv, D, T, bs, k, sink, local, lens, starts = case
    inp = _inputs(B, Hq, Hkv, D, T, bs, lens, starts)
    ref = _run("reference", *inp, bs, k, sink, local)
    got = _run("cpu", *inp, bs, k, sink, local)
    torch.testing.assert_close(got, ref, **FP32)


@pytest.mark.parametrize("impl", ["reference", "cpu"])
@pytest.mark.parametrize("case", CASES[:5], ids=[f"case{i}" for i in range(5)])
def test_k_covering_all_blocks_is_dense_sdpa(impl, case):
    B, Hq, Hkv, D, T, bs, _, sink, local, lens, starts = case
    q, kc, vc, summ, lens_t, st_ = _inputs(B, Hq, Hkv, D, T, bs, lens, starts, seed=1)
    k = -(-T // bs) + 1  # more than the number of blocks
    got = _run(impl, q, kc, vc, summ, lens_t, st_, bs, k, sink, local)
    torch.testing.assert_close(got, _sdpa_rows(q, kc, vc, lens_t, st_), **FP32)


def test_random_shapes_cpu_vs_reference():
    g = torch.Generator().manual_seed(7)
    for trial in range(12):
        r = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
        Hkv = r(1, 3)
        Hq, D, bs = Hkv * r(1, 7), 8 * r(1, 12), 2 ** r(2, 6)
        B, T = r(1, 4), r(1, 600)
        lens = [r(0, T) for _ in range(B)]
        starts = [r(0, max(0, x - 1)) for x in lens]
        sink, local = r(0, 2), r(0, 2)
        k = max(r(1, 12), sink + local)
        inp = _inputs(B, Hq, Hkv, D, T, bs, lens, starts, seed=trial)
        ref = _run("reference", *inp, bs, k, sink, local, scale=0.1)
        got = _run("cpu", *inp, bs, k, sink, local, scale=0.1)
        msg = f"trial {trial}"
        torch.testing.assert_close(got, ref, **FP32, msg=lambda m, s=msg: f"{s}: {m}")


def test_bf16_cpu_vs_reference():
    B, Hq, Hkv, D, T, bs = 2, 14, 2, 64, 700, 64
    inp = _inputs(B, Hq, Hkv, D, T, bs, [700, 333], [0, 5], dtype=torch.bfloat16)
    ref = _run("reference", *inp, bs, 4, 1, 1)
    got = _run("cpu", *inp, bs, 4, 1, 1)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref.float(), atol=2e-2, rtol=2e-2)


def test_strided_cache_views():
    """A view into a preallocated cache (capacity > length) works without copies."""
    B, Hq, Hkv, D, T, bs = 2, 14, 2, 64, 300, 32
    q, kc, vc, summ, lens, st_ = _inputs(B, Hq, Hkv, D, 512, bs, [T, T], [0, 0])
    kv, vv = kc[:, :, :T], vc[:, :, :T]
    assert not kv.is_contiguous()
    summ = block_summaries(kv, bs)
    ref = _run("reference", q, kv.contiguous(), vv.contiguous(), summ, lens, st_, bs, 3, 1, 1)
    torch.testing.assert_close(_run("cpu", q, kv, vv, summ, lens, st_, bs, 3, 1, 1), ref, **FP32)


def test_planted_block_is_selected():
    """A middle block whose keys align with every query wins the selection (retrieval)."""
    B, Hq, Hkv, D, T, bs = 1, 14, 2, 64, 64 * 40, 64
    g = torch.Generator().manual_seed(3)
    q = torch.randn(B, Hq, D, generator=g)
    kc = torch.randn(B, Hkv, T, D, generator=g) * 0.1
    vc = torch.randn(B, Hkv, T, D, generator=g)
    needle = 17
    for h in range(Hkv):
        kc[0, h, needle * bs : (needle + 1) * bs] = q[0, h * 7 : (h + 1) * 7].mean(0) * 3
        vc[0, h, needle * bs : (needle + 1) * bs] = 5.0
    summ = block_summaries(kc, bs)
    lens, st_ = torch.tensor([T]), torch.tensor([0])
    sel = select_blocks(
        q, summ, lens, st_, block_size=bs, k=3, num_sink=1, num_local=1, scale=D**-0.5
    )
    assert sel.tolist() == [[[0, needle, 39], [0, needle, 39]]]
    for impl in ("reference", "cpu"):
        out = _run(impl, q, kc, vc, summ, lens, st_, bs, 3, 1, 1)
        assert out.mean() > 4.0  # attention concentrates on the planted values


def test_incremental_summaries_match_recomputed():
    g = torch.Generator().manual_seed(5)
    B, H, D, bs = 2, 2, 16, 8
    keys = torch.randn(B, H, 100, D, generator=g)
    summ = block_summaries(keys[:, :, :13], bs, num_blocks=13)
    pos = 13
    for step in (1, 1, 5, 30, 1, 49):
        update_summaries(summ, keys[:, :, pos : pos + step], pos, bs)
        pos += step
    torch.testing.assert_close(summ, block_summaries(keys, bs, num_blocks=13), atol=0, rtol=0)


def test_summaries_ignore_padding():
    keys = torch.randn(1, 1, 20, 4)
    keys[:, :, :5] = 100.0  # left padding garbage
    s = block_summaries(keys, 8, starts=torch.tensor([5]))
    assert s[0, 0, 0, 1].max() < 100 and s[0, 0, 0, 0].min() > -100
    torch.testing.assert_close(s[0, 0, 0, 1], keys[0, 0, 5:8].amax(0))


TRITON_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    assert os.environ["TRITON_INTERPRET"] == "1"
    from ttscale.kernels import block_summaries, block_topk_decode_attention
    cases = [
        (2, 6, 2, 32, 300, 16, 5, 1, 1, [300, 133], [0, 21]),
        (1, 14, 2, 64, 400, 32, 4, 1, 2, [400], [0]),
        (3, 4, 4, 16, 100, 16, 20, 1, 1, [100, 50, 0], [0, 7, 0]),  # k >= blocks: dense
    ]
    for i, (B, Hq, Hkv, D, T, bs, k, sink, local, lens, starts) in enumerate(cases):
        g = torch.Generator().manual_seed(i)
        q = torch.randn(B, Hq, D, generator=g)
        kc = torch.randn(B, Hkv, T, D, generator=g)
        vc = torch.randn(B, Hkv, T, D, generator=g)
        lens, starts = torch.tensor(lens), torch.tensor(starts)
        summ = block_summaries(kc, bs, seq_lens=lens, starts=starts)
        kw = dict(block_size=bs, k=k, num_sink=sink, num_local=local, starts=starts)
        ref = block_topk_decode_attention(q, kc, vc, summ, lens, impl="reference", **kw)
        got = block_topk_decode_attention(q, kc, vc, summ, lens, impl="triton", **kw)
        torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)
        print("case", i, "ok", float((got - ref).abs().max()))
    """
)


def test_triton_interpreter_matches_reference():
    pytest.importorskip("triton")
    import os

    env = dict(os.environ, TRITON_INTERPRET="1")
    p = subprocess.run(
        [sys.executable, "-c", TRITON_SCRIPT], capture_output=True, text=True, env=env, timeout=600
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    assert p.stdout.count(" ok ") == 3


def test_triton_on_cpu_without_interpreter_names_the_fix(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    inp = _inputs(1, 4, 2, 16, 64, 16, [64], [0])
    with pytest.raises(ConfigError, match="TRITON_INTERPRET=1"):
        _run("triton", *inp, 16, 2, 1, 1)


def test_bad_inputs_raise_config_errors():
    q, kc, vc, summ, lens, st_ = _inputs(1, 4, 2, 16, 64, 16, [64], [0])
    with pytest.raises(ConfigError, match="forced blocks"):
        _run("reference", q, kc, vc, summ, lens, st_, 16, 1, 1, 1)
    with pytest.raises(ConfigError, match="summaries must be"):
        _run("reference", q, kc, vc, summ[:, :, :, 0], lens, st_, 16, 2, 1, 1)
    with pytest.raises(ConfigError, match="multiple of Hkv"):
        _run("reference", q[:, :3], kc, vc, summ, lens, st_, 16, 2, 1, 1)
    with pytest.raises(ConfigError, match="dtype"):
        _run("reference", q.to(torch.int32), kc, vc, summ, lens, st_, 16, 2, 1, 1)
    with pytest.raises(ConfigError, match="exceed"):
        _run("reference", q, kc, vc, summ, torch.tensor([65]), st_, 16, 2, 1, 1)
    with pytest.raises(ConfigError, match="impl="):
        _run("fast", q, kc, vc, summ, lens, st_, 16, 2, 1, 1)
    with pytest.raises(ConfigError, match="raise k"):
        TopKBlocks(k=2, num_sink=2, num_local=1)


def test_missing_compiler_names_fix_and_auto_falls_back(monkeypatch, caplog):
    from ttscale.kernels import attention, cpu

    monkeypatch.setenv("CXX", "/nonexistent/c++")
    cpu.load_extension.cache_clear()
    monkeypatch.setattr(attention, "_logged", set())
    try:
        inp = _inputs(1, 4, 2, 16, 64, 16, [64], [0])
        with pytest.raises(BackendUnavailable, match="apt-get install g\\+\\+"):
            _run("cpu", *inp, 16, 2, 1, 1)
        with caplog.at_level(logging.WARNING, logger="ttscale.kernels.attention"):
            a = _run("auto", *inp, 16, 2, 1, 1)
            b = _run("auto", *inp, 16, 2, 1, 1)
        torch.testing.assert_close(a, b)
        assert sum("CPU kernel unavailable" in r.message for r in caplog.records) == 1
    finally:
        cpu.load_extension.cache_clear()


# -- eFLOPs model --------------------------------------------------------------------------

QWEN05 = ModelSpec(24, 896, 14, 2, 64, 4864, 151936, bytes_per_param=4)


@settings(max_examples=200, deadline=None)
@given(
    bs=st.sampled_from([1, 16, 64, 128]),
    k=st.integers(1, 128),
    threshold=st.integers(0, 40000),
    context=st.integers(0, 40000),
    generated=st.integers(0, 3000),
)
def test_sparse_eflops_never_exceed_dense_and_match_when_budget_covers(
    bs, k, threshold, context, generated
):
    sp = BlockSparseDecode(bs, k, threshold)
    hw = HARDWARE["cpu-avx2-2c"]
    dense = block_sparse_decode_eflops(
        QWEN05, hw, context=context, generated=generated, sparse=None
    )
    sparse = block_sparse_decode_eflops(QWEN05, hw, context=context, generated=generated, sparse=sp)
    assert sparse <= dense
    if k * bs >= context + generated or threshold >= context + generated:
        assert sparse == dense
    full = dict(prompt_tokens=context, cached_tokens=0, generated=[generated, generated // 2])
    spec_sparse = dataclasses.replace(QWEN05, sparse_decode=sp)
    assert request_eflops(spec_sparse, hw, **full) <= request_eflops(QWEN05, hw, **full)


def test_decode_kv_reads_rule_matches_topkblocks():
    cfg = TopKBlocks(block_size=64, k=32, threshold=4096)
    for t in range(1, 20000, 37):
        reads = decode_kv_reads(t, cfg.cost)
        assert reads <= t
        assert (reads < t) == cfg.sparse_at(t)
    assert decode_kv_reads(16384, cfg.cost) == 31 * 64 + 64 + 256  # 31 full + last + summaries
    # k >= block_size: sparse only once dropping blocks outweighs reading the summaries
    big = BlockSparseDecode(64, 64, 0)
    assert not big.active(64 * 65) and big.active(64 * 66)


def test_request_eflops_dense_unchanged_by_default():
    hw = HARDWARE["h100"]
    kw = dict(prompt_tokens=1000, cached_tokens=100, generated=[50, 70])
    assert QWEN05.sparse_decode is None
    sparse = dataclasses.replace(QWEN05, sparse_decode=BlockSparseDecode(64, 4, 0))
    assert request_eflops(sparse, hw, **kw) < request_eflops(QWEN05, hw, **kw)
    wide = dataclasses.replace(QWEN05, sparse_decode=BlockSparseDecode(64, 100, 0))
    assert request_eflops(wide, hw, **kw) == request_eflops(QWEN05, hw, **kw)


def test_kernel_source_ships_with_the_package():
    import tomllib
    from pathlib import Path

    import ttscale.kernels

    src = Path(ttscale.kernels.__file__).parent / "csrc" / "block_topk.cpp"
    assert src.is_file()
    root = Path(__file__).resolve().parents[1]
    data = tomllib.loads((root / "pyproject.toml").read_text())
    setup = data["tool"]["setuptools"]
    assert "ttscale.kernels.csrc" in setup["packages"]
    assert "*.cpp" in setup["package-data"]["ttscale.kernels.csrc"]
