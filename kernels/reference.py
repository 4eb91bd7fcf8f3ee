"""Plain PyTorch block top-k decode attention: the semantics, and the oracle for the tests.

Shapes (one decode token per row):

- ``q``: ``(B, Hq, D)``; ``k_cache``/``v_cache``: ``(B, Hkv, T, D)`` with ``Hq % Hkv == 0``;
- ``summaries``: ``(B, Hkv, NB, 2, D)``, per-block per-channel ``[min, max]`` of the keys
  (Quest), ``NB * block_size >= max(seq_lens)`` (see ``block_summaries``);
- ``seq_lens``/``starts``: ``(B,)`` int; row ``b`` attends to tokens ``[starts[b], seq_lens[b])``
  (``starts`` > 0 for left padding). A row with no valid token returns zeros.

Selection, per (row, KV head) so every query head of a GQA group reads the same blocks:
the blocks ``fb .. lb`` holding valid tokens are numbered from absolute position 0 in
``block_size`` steps. If there are at most ``k`` of them, every valid token is attended (exact
dense attention). Otherwise the first ``num_sink`` and the last ``num_local`` blocks are kept
and the remaining ``k - num_sink - num_local`` are the candidate blocks with the largest group
score ``sum_h softmax_j(bound_h(j))``, where ``bound_h(j) = sum_d max(q_hd*min_jd, q_hd*max_jd)``
(scaled by ``scale``) is Quest's upper bound of ``q_h . k`` over block ``j`` and the softmax runs
over the candidate blocks: the estimated attention mass each head would put on a block, summed
over the group. Then each head takes exact softmax attention over the selected tokens.
"""

from __future__ import annotations

import torch

__all__ = [
    "block_summaries",
    "quest_bounds",
    "reference_decode",
    "select_blocks",
    "select_from_bounds",
    "update_summaries",
]


def block_summaries(
    k_cache: torch.Tensor,
    block_size: int,
    *,
    seq_lens: torch.Tensor | None = None,
    starts: torch.Tensor | None = None,
    num_blocks: int | None = None,
) -> torch.Tensor:
    """Per-block ``[min, max]`` of the keys over each block's valid tokens.

    Args:
        k_cache: ``(B, Hkv, T, D)`` keys.
        block_size: Tokens per block.
        seq_lens: ``(B,)`` valid length per row (default ``T``).
        starts: ``(B,)`` first valid token per row (default 0).
        num_blocks: Blocks to allocate (default ``ceil(T / block_size)``); extra ones are 0.

    Returns:
        ``(B, Hkv, NB, 2, D)`` in the keys' dtype; blocks without valid tokens are 0.
    """
    B, H, T, D = k_cache.shape
    nb = num_blocks if num_blocks is not None else -(-T // block_size)
    pos = torch.arange(nb * block_size, device=k_cache.device)
    lens = _per_row(seq_lens, B, T, k_cache.device)
    st = _per_row(starts, B, 0, k_cache.device)
    valid = (pos[None, :] >= st[:, None]) & (pos[None, :] < lens[:, None])  # (B, nb*bs)
    keys = torch.zeros(B, H, nb * block_size, D, dtype=k_cache.dtype, device=k_cache.device)
    n = min(T, nb * block_size)
    keys[:, :, :n] = k_cache[:, :, :n]
    keys = keys.view(B, H, nb, block_size, D)
    mask = valid.view(B, 1, nb, block_size, 1)
    big = torch.finfo(k_cache.dtype).max
    mn = keys.masked_fill(~mask, big).amin(dim=3)
    mx = keys.masked_fill(~mask, -big).amax(dim=3)
    any_valid = mask.any(dim=3)
    out = torch.stack([mn, mx], dim=3)
    return out.masked_fill(~any_valid.unsqueeze(3), 0)


def update_summaries(
    summaries: torch.Tensor, new_keys: torch.Tensor, position: int, block_size: int
) -> None:
    """Fold keys appended at ``[position, position + n)`` into ``summaries`` in place.

    All rows share ``position`` (a left-padded batch appends at the same index). Blocks that
    already hold tokens keep their min/max and are widened; fresh blocks start from the new keys.

    Args:
        summaries: ``(B, Hkv, NB, 2, D)``, large enough for ``position + n`` tokens.
        new_keys: ``(B, Hkv, n, D)``.
        position: Cache index of ``new_keys[:, :, 0]``.
        block_size: Tokens per block.
    """
    n = new_keys.shape[2]
    t = position
    while t < position + n:
        j = t // block_size
        end = min((j + 1) * block_size, position + n)
        chunk = new_keys[:, :, t - position : end - position]
        mn, mx = chunk.amin(dim=2), chunk.amax(dim=2)
        if t > j * block_size:  # the block already holds earlier tokens: widen it
            mn = torch.minimum(mn, summaries[:, :, j, 0])
            mx = torch.maximum(mx, summaries[:, :, j, 1])
        summaries[:, :, j, 0] = mn
        summaries[:, :, j, 1] = mx
        t = end


def quest_bounds(q: torch.Tensor, summaries: torch.Tensor, scale: float) -> torch.Tensor:
    """``(B, Hq, NB)`` fp32 upper bounds of ``scale * q_h . k`` over each block (Quest)."""
    B, Hq, D = q.shape
    Hkv = summaries.shape[1]
    qs = (q.float() * scale).view(B, Hkv, Hq // Hkv, 1, D)
    s = summaries.float()
    mn, mx = s[:, :, None, :, 0], s[:, :, None, :, 1]  # (B, Hkv, 1, NB, D)
    return torch.maximum(qs * mn, qs * mx).sum(-1).view(B, Hq, -1)


def select_from_bounds(
    bounds: torch.Tensor,
    num_kv_heads: int,
    seq_lens: torch.Tensor,
    starts: torch.Tensor,
    *,
    block_size: int,
    k: int,
    num_sink: int,
    num_local: int,
) -> torch.Tensor:
    """Selected blocks, ``(B, Hkv, W)`` int64, ascending, ``-1`` padded, ``W = min(k, NB)``.

    Forced blocks (sink, local, or every block of a row with at most ``k`` blocks) score
    ``+inf``, blocks outside a row's valid range ``-inf``, candidates their group score
    ``sum_h softmax_j(bounds_h)``; the top ``W`` by score are kept and ``-inf`` ones become ``-1``.
    """
    B, Hq, NB = bounds.shape
    dev = bounds.device
    j = torch.arange(NB, device=dev)[None, :]
    lens = seq_lens.to(dev, torch.long)[:, None]
    st = starts.to(dev, torch.long)[:, None]
    fb, lb = st // block_size, (lens - 1) // block_size
    valid = (j >= fb) & (j <= lb) & (lens > st)
    dense = (lb - fb + 1) <= k
    forced = valid & (dense | (j < fb + num_sink) | (j > lb - num_local))
    cand = (valid & ~forced)[:, None, None, :]  # (B, 1, 1, NB)
    b = bounds.float().view(B, num_kv_heads, Hq // num_kv_heads, NB)
    b = b.masked_fill(~cand, float("-inf"))
    top = b.amax(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).min)
    e = torch.exp(b - top)  # 0 outside the candidates
    mass = (e / e.sum(-1, keepdim=True).clamp_min(1e-30)).sum(2)  # (B, Hkv, NB)
    score = mass.masked_fill(forced[:, None], float("inf"))
    score = score.masked_fill(~valid[:, None], float("-inf"))
    val, idx = score.topk(min(k, NB), dim=-1)
    return _sorted(idx.masked_fill(val == float("-inf"), -1))


def select_blocks(
    q: torch.Tensor,
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
    """``select_from_bounds(quest_bounds(...))``: the blocks each (row, KV head) attends to."""
    return select_from_bounds(
        quest_bounds(q, summaries, scale),
        summaries.shape[1],
        seq_lens,
        starts,
        block_size=block_size,
        k=k,
        num_sink=num_sink,
        num_local=num_local,
    )


def reference_decode(
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
    """Gather-free reference: a token mask from ``select_blocks`` and masked SDPA."""
    B, Hq, D = q.shape
    Hkv, T = k_cache.shape[1], k_cache.shape[2]
    G = Hq // Hkv
    sel = select_blocks(
        q,
        summaries,
        seq_lens,
        starts,
        block_size=block_size,
        k=k,
        num_sink=num_sink,
        num_local=num_local,
        scale=scale,
    )
    NB = summaries.shape[2]
    blocks = torch.zeros(B, Hkv, NB + 1, dtype=torch.bool, device=q.device)
    blocks.scatter_(2, sel.clamp_min(-1) % (NB + 1), True)  # -1 lands in the spare slot NB
    pos = torch.arange(T, device=q.device)
    tok = blocks[:, :, :NB].repeat_interleave(block_size, dim=2)[:, :, :T]
    if tok.shape[2] < T:
        tok = torch.nn.functional.pad(tok, (0, T - tok.shape[2]))
    lens = seq_lens.to(q.device, torch.long)[:, None, None]
    st = starts.to(q.device, torch.long)[:, None, None]
    tok = tok & (pos >= st) & (pos < lens)  # (B, Hkv, T)
    mask = tok.repeat_interleave(G, dim=1)[:, :, None, :]  # (B, Hq, 1, T)
    kq = k_cache.repeat_interleave(G, dim=1).float()
    vq = v_cache.repeat_interleave(G, dim=1).float()
    out = torch.nn.functional.scaled_dot_product_attention(
        q.float()[:, :, None, :], kq, vq, attn_mask=mask, scale=scale
    )[:, :, 0]
    empty = ~mask.any(-1)  # rows without a valid token -> zeros
    return out.masked_fill(empty, 0).to(q.dtype)


def _sorted(idx: torch.Tensor) -> torch.Tensor:
    """Sort each row ascending with the ``-1`` padding moved to the end."""
    big = torch.iinfo(torch.long).max
    s = idx.masked_fill(idx < 0, big).sort(dim=-1).values
    return s.masked_fill(s == big, -1)


def _per_row(x: torch.Tensor | None, B: int, default: int, device: torch.device) -> torch.Tensor:
    if x is None:
        return torch.full((B,), default, dtype=torch.long, device=device)
    return x.to(device=device, dtype=torch.long).reshape(B)
