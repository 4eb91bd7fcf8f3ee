"""The Triton path (GPUs; on CPU only under ``TRITON_INTERPRET=1``, which the tests use).

Three steps, the semantics of ``reference.py``:

1. ``_bounds_kernel``: Quest bounds ``(B, Hq, NB)``, one program per (row, query head, tile of
   blocks);
2. selection in torch (``select_from_bounds``: softmax over blocks, sum over the GQA group,
   ``topk``) — ``NB`` is at most a few thousand, so this is cheap on the GPU;
3. ``_attn_kernel``: flash-decoding over the selected blocks. One program per (row, KV head,
   split of the block table) loads each selected K/V block once for all ``G`` query heads
   of the group (``tl.dot`` with the group padded to 16 rows), keeps an online softmax, and
   writes a partial (max, sum, acc) that torch combines across splits.

Needs ``block_size`` a power of two >= 16 (``tl.dot`` tiles); fp32 dots use IEEE precision so
results match the reference to ~1e-5.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .reference import select_from_bounds

__all__ = ["triton_decode"]

_BLOCKS_PER_SPLIT = 4


@triton.jit
def _bounds_kernel(
    Q,
    S,
    OUT,
    sq_b,
    sq_h,
    ss_b,
    ss_h,
    ss_n,
    ss_m,
    so_b,
    so_h,
    Hq,
    NB,
    scale,
    G: tl.constexpr,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_bh = tl.program_id(0)
    pid_n = tl.program_id(1)
    b = pid_bh // Hq
    h = pid_bh % Hq
    kvh = h // G
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    q = tl.load(Q + b * sq_b + h * sq_h + offs_d, mask=dmask, other=0.0).to(tl.float32) * scale
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = offs_n < NB
    ptr = S + b * ss_b + kvh * ss_h + offs_n[:, None] * ss_n + offs_d[None, :]
    m2 = nmask[:, None] & dmask[None, :]
    mn = tl.load(ptr, mask=m2, other=0.0).to(tl.float32)
    mx = tl.load(ptr + ss_m, mask=m2, other=0.0).to(tl.float32)
    bound = tl.sum(tl.maximum(q[None, :] * mn, q[None, :] * mx), axis=1)
    tl.store(OUT + b * so_b + h * so_h + offs_n, bound, mask=nmask)


@triton.jit
def _attn_kernel(
    Q,
    K,
    V,
    TABLE,
    LENS,
    STARTS,
    ACC,
    MAX,
    SUM,
    sq_b,
    sq_h,
    sk_b,
    sk_h,
    sk_t,
    sv_b,
    sv_h,
    sv_t,
    st_b,
    st_h,
    sa_b,
    sa_h,
    sa_s,
    sa_g,
    sm_b,
    sm_h,
    sm_s,
    Hkv,
    W,
    blocks_per_split,
    scale,
    G: tl.constexpr,
    BLOCK_G: tl.constexpr,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BS: tl.constexpr,
):
    pid = tl.program_id(0)
    split = tl.program_id(1)
    b = pid // Hkv
    kvh = pid % Hkv
    seq_len = tl.load(LENS + b)
    start = tl.load(STARTS + b)
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    offs_t = tl.arange(0, BS)
    gmask = offs_g < G
    dmask = offs_d < D
    q = (
        tl.load(
            Q + b * sq_b + (kvh * G + offs_g)[:, None] * sq_h + offs_d[None, :],
            mask=gmask[:, None] & dmask[None, :],
            other=0.0,
        ).to(tl.float32)
        * scale
    )
    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    lo = split * blocks_per_split
    hi = tl.minimum(lo + blocks_per_split, W)
    for i in range(lo, hi):
        blk = tl.load(TABLE + b * st_b + kvh * st_h + i)
        if blk >= 0:
            pos = blk * BS + offs_t
            tmask = (pos >= start) & (pos < seq_len)
            m2 = tmask[:, None] & dmask[None, :]
            kt = tl.load(
                K + b * sk_b + kvh * sk_h + pos[:, None] * sk_t + offs_d[None, :],
                mask=m2,
                other=0.0,
            ).to(tl.float32)
            vt = tl.load(
                V + b * sv_b + kvh * sv_h + pos[:, None] * sv_t + offs_d[None, :],
                mask=m2,
                other=0.0,
            ).to(tl.float32)
            s = tl.dot(q, tl.trans(kt), input_precision="ieee")
            s = tl.where(tmask[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p, vt, input_precision="ieee")
            m_i = m_new
    base = b * sm_b + kvh * sm_h + split * sm_s + offs_g
    tl.store(MAX + base, m_i, mask=gmask)
    tl.store(SUM + base, l_i, mask=gmask)
    tl.store(
        ACC + b * sa_b + kvh * sa_h + split * sa_s + offs_g[:, None] * sa_g + offs_d[None, :],
        acc,
        mask=gmask[:, None] & dmask[None, :],
    )


def triton_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    summaries: torch.Tensor,
    seq_lens: torch.Tensor,
    starts: torch.Tensor,
    *,
    block_size: int,
    k: int,
    num_sink: int,
    num_local: int,
    scale: float,
) -> torch.Tensor:
    """Run the Triton kernels (inputs validated by ``block_topk_decode_attention``)."""
    B, Hq, D = q.shape
    Hkv, NB = k_cache.shape[1], summaries.shape[2]
    G = Hq // Hkv
    dev = q.device
    lens = seq_lens.to(dev, torch.int32).contiguous()
    st = starts.to(dev, torch.int32).contiguous()
    block_d = max(16, triton.next_power_of_2(D))

    bounds = torch.empty(B, Hq, NB, dtype=torch.float32, device=dev)
    block_n = 32
    _bounds_kernel[(B * Hq, triton.cdiv(NB, block_n))](
        q,
        summaries,
        bounds,
        q.stride(0),
        q.stride(1),
        summaries.stride(0),
        summaries.stride(1),
        summaries.stride(2),
        summaries.stride(3),
        bounds.stride(0),
        bounds.stride(1),
        Hq,
        NB,
        float(scale),
        G=G,
        D=D,
        BLOCK_D=block_d,
        BLOCK_N=block_n,
    )
    table = (
        select_from_bounds(
            bounds,
            Hkv,
            seq_lens,
            starts,
            block_size=block_size,
            k=k,
            num_sink=num_sink,
            num_local=num_local,
        )
        .to(torch.int32)
        .contiguous()
    )
    W = table.shape[2]
    splits = triton.cdiv(W, _BLOCKS_PER_SPLIT)
    acc = torch.empty(B, Hkv, splits, G, D, dtype=torch.float32, device=dev)
    mx = torch.empty(B, Hkv, splits, G, dtype=torch.float32, device=dev)
    sm = torch.empty_like(mx)
    _attn_kernel[(B * Hkv, splits)](
        q,
        k_cache,
        v_cache,
        table,
        lens,
        st,
        acc,
        mx,
        sm,
        q.stride(0),
        q.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        v_cache.stride(0),
        v_cache.stride(1),
        v_cache.stride(2),
        table.stride(0),
        table.stride(1),
        acc.stride(0),
        acc.stride(1),
        acc.stride(2),
        acc.stride(3),
        mx.stride(0),
        mx.stride(1),
        mx.stride(2),
        Hkv,
        W,
        _BLOCKS_PER_SPLIT,
        float(scale),
        G=G,
        BLOCK_G=max(16, triton.next_power_of_2(G)),
        D=D,
        BLOCK_D=block_d,
        BS=block_size,
    )
    top = mx.amax(dim=2, keepdim=True)
    w = torch.exp(mx - top).nan_to_num(0.0)  # splits without blocks: exp(-inf - m) = 0
    total = (sm * w).sum(dim=2)  # (B, Hkv, G)
    out = (acc * w[..., None]).sum(dim=2) / total.clamp_min(1e-30)[..., None]
    out = out.masked_fill((total == 0)[..., None], 0.0)  # rows without valid tokens
    return out.reshape(B, Hq, D).to(q.dtype)
