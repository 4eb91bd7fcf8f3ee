"""Block selection over a *paged* KV cache (vLLM's layout), in plain torch; no vLLM import.

vLLM stores keys in physical blocks of ``block_size`` tokens that requests reach through
their block tables, and prefix caching shares a physical block between requests. The
summaries therefore live per *physical* block, beside the cache:

- ``PagedSummaries``: per-block per-channel key ``[min, max]`` (Quest) and a count of the
  tokens folded in since the block's first slot was written. ``update`` folds the keys of
  one KV-cache write (``slot_mapping`` = ``block * block_size + offset``); a write to
  offset 0 starts the block afresh, because new computation always starts at a block
  boundary (prefix-cache hits are whole blocks), so a reused physical block is reset
  before anything is read from it.
- ``select_rows``: for decode rows, the blocks each row keeps, *one selection per row
  shared by every head* (a block table is per request, not per head): the first
  ``num_sink`` and last ``num_local`` blocks, every block whose summary is unknown (its
  count differs from the tokens the row says it holds: a block filled without passing
  through ``update``, or rewritten), and the top-scoring rest. A block's score is the
  attention mass each query head would put on it (softmax of Quest upper bounds over the
  candidate blocks) summed over all heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PagedSummaries", "quest_bounds_paged", "select_rows"]


@dataclass(slots=True)
class PagedSummaries:
    """Key summaries of one layer's paged cache: ``mn``/``mx`` ``(num_blocks, Hkv, D)``,
    ``count`` ``(num_blocks,)`` int32 (tokens folded in since the block's offset-0 write)."""

    mn: torch.Tensor
    mx: torch.Tensor
    count: torch.Tensor
    block_size: int

    @classmethod
    def empty(
        cls, num_blocks: int, num_kv_heads: int, head_size: int, block_size: int, dtype: torch.dtype
    ) -> PagedSummaries:
        """Summaries of a cache with no block written (every count 0: unknown)."""
        return cls(
            torch.zeros(num_blocks, num_kv_heads, head_size, dtype=dtype),
            torch.zeros(num_blocks, num_kv_heads, head_size, dtype=dtype),
            torch.zeros(num_blocks, dtype=torch.int32),
            block_size,
        )

    def update(self, keys: torch.Tensor, slot_mapping: torch.Tensor) -> None:
        """Fold ``keys`` ``(n, Hkv, D)`` written at ``slot_mapping`` ``(n,)`` (``-1`` = padding)."""
        n = slot_mapping.shape[0]
        slots = slot_mapping.to(torch.long)
        keys = keys[:n]
        if n and int(slots.min()) < 0:
            keep = slots >= 0
            slots, keys = slots[keep], keys[keep]
        if slots.numel() == 0:
            return
        keys = keys.to(self.mn.dtype)
        blk = torch.div(slots, self.block_size, rounding_mode="floor")
        fresh = blk[slots - blk * self.block_size == 0]
        if fresh.numel():
            self.mn[fresh] = float("inf")
            self.mx[fresh] = float("-inf")
            self.count[fresh] = 0
        where = blk[:, None, None].expand_as(keys)
        self.mn.scatter_reduce_(0, where, keys, "amin")
        self.mx.scatter_reduce_(0, where, keys, "amax")
        self.count.index_add_(0, blk, torch.ones_like(blk, dtype=torch.int32))


def quest_bounds_paged(
    q: torch.Tensor, mn: torch.Tensor, mx: torch.Tensor, scale: float
) -> torch.Tensor:
    """``(R, Hq, NB)`` fp32 upper bounds of ``scale * q_h . k`` over each block.

    ``q``: ``(R, Hq, D)``; ``mn``/``mx``: ``(R, NB, Hkv, D)`` (the rows' gathered summaries).
    ``max(q*mn, q*mx) = relu(q)*mx + min(q, 0)*mn`` channel-wise, so the bound is two batched
    matmuls instead of a ``(R, Hq, NB, D)`` temporary.
    """
    R, Hq, D = q.shape
    NB, Hkv = mn.shape[1], mn.shape[2]
    qs = (q.float() * scale).view(R, Hkv, Hq // Hkv, D)
    pos, neg = qs.clamp_min(0), qs.clamp_max(0)
    mxt = mx.float().permute(0, 2, 3, 1)  # (R, Hkv, D, NB)
    mnt = mn.float().permute(0, 2, 3, 1)
    return (torch.matmul(pos, mxt) + torch.matmul(neg, mnt)).view(R, Hq, NB)


def select_rows(
    q: torch.Tensor,
    tables: torch.Tensor,
    seq_lens: torch.Tensor,
    summaries: PagedSummaries,
    *,
    k: int,
    num_sink: int,
    num_local: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks kept per decode row, and how many.

    Args:
        q: ``(R, Hq, D)`` the rows' query tokens.
        tables: ``(R, NB)`` int physical block ids (row ``r`` uses its first
            ``ceil(seq_lens[r] / block_size)`` entries).
        seq_lens: ``(R,)`` tokens in each row's cache, the current token included.
        summaries: The layer's ``PagedSummaries``.
        k: Blocks kept per row (sinks and recent blocks included); rows with unknown
            summaries keep more (every unknown block is kept).
        num_sink: Leading blocks always kept.
        num_local: Trailing blocks always kept (``>= 1``: the last block holds the query).
        scale: Softmax scale of the attention.

    Returns:
        ``(sel, n)``: ``sel`` ``(R, W)`` int64 *logical* block indices, ascending, padded
        with ``-1`` past ``n[r]``; ``n`` ``(R,)`` the blocks kept. A row with at most ``k``
        blocks keeps every block.
    """
    bs = summaries.block_size
    R, NB = tables.shape
    dev = q.device
    lens = seq_lens.to(dev, torch.long)
    nblk = torch.div(lens + bs - 1, bs, rounding_mode="floor")  # (R,)
    j = torch.arange(NB, device=dev)[None, :]
    valid = j < nblk[:, None]
    phys = tables.to(torch.long).clamp_min(0)
    expected = (lens[:, None] - j * bs).clamp(0, bs)
    known = summaries.count[phys].to(torch.long) == expected
    forced = valid & (
        ~known | (j < num_sink) | (j >= nblk[:, None] - num_local) | (nblk[:, None] <= k)
    )
    cand = valid & ~forced
    bounds = quest_bounds_paged(q, summaries.mn[phys], summaries.mx[phys], scale)  # (R, Hq, NB)
    b = bounds.masked_fill(~cand[:, None, :], float("-inf"))
    top = b.amax(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).min)
    e = torch.exp(b - top)
    mass = (e / e.sum(-1, keepdim=True).clamp_min(1e-30)).sum(1)  # (R, NB)
    score = mass.masked_fill(forced, float("inf")).masked_fill(~valid, float("-inf"))
    limit = forced.sum(1).clamp_min(k)  # (R,): k, or every forced block if there are more
    width = min(NB, int(limit.max()) if R else 0)
    val, idx = score.topk(width, dim=-1)  # descending: forced first, then by mass
    keep = (val > float("-inf")) & (torch.arange(width, device=dev)[None, :] < limit[:, None])
    big = torch.iinfo(torch.long).max
    sel = idx.masked_fill(~keep, big).sort(dim=-1).values
    return sel.masked_fill(sel == big, -1), keep.sum(1)
