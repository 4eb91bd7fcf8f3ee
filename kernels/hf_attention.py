"""transformers integration: a registered attention function that goes sparse for long decode.

``install(model, TopKBlocks(...))`` registers ``"ttscale_block_topk"`` with transformers'
``AttentionInterface`` (and sdpa's mask builder with ``AttentionMaskInterface``), switches
the model to it and returns the ``SparseDecodeState`` the attention modules share. Per call:

- prefill, multi-token steps, and decode while ``not cfg.sparse_at(kv_len)``: transformers'
  own ``sdpa`` attention, so short contexts are bit-identical to ``attn_implementation="sdpa"``;
- long decode steps: ``block_topk_decode_attention`` over the layer's cache, with block
  summaries kept per layer and extended incrementally with the keys appended since the
  last step (rebuilt from scratch when the cache does not continue the summarised one).

``preallocated_cache(model, capacity)`` is a ``DynamicCache`` whose layers write into buffers
sized up front instead of concatenating: stock ``DynamicLayer.update`` copies the whole
cache every step (``torch.cat``), which at 16k tokens moves twice the bytes that dense
attention reads and would hide most of what sparse attention saves. ``HFBackend`` uses it
in sparse mode (capacity = padded prompt + ``max_tokens``).

Left padding is read from the decode mask (one contiguous valid suffix per row); any other
mask pattern, sliding-window layers or training mode run dense (logged once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .attention import block_topk_decode_attention
from .config import TopKBlocks
from .reference import block_summaries, update_summaries

__all__ = ["ATTN_NAME", "SparseDecodeState", "install", "preallocated_cache"]

log = logging.getLogger(__name__)

ATTN_NAME = "ttscale_block_topk"
_SLACK_BLOCKS = 64
_logged: set[str] = set()


def _log_once(key: str, msg: str, *args: object) -> None:
    if key not in _logged:
        _logged.add(key)
        log.warning(msg, *args)


@dataclass
class _LayerSummary:
    summaries: torch.Tensor  # (B, Hkv, capacity_blocks, 2, D)
    tokens: int  # keys folded in so far
    last_key: torch.Tensor  # (B, Hkv, D): key at tokens - 1, to detect a different cache


@dataclass
class SparseDecodeState:
    """What the attention modules of one model share: the setting, summaries, counters."""

    cfg: TopKBlocks
    layers: dict[int, _LayerSummary] = field(default_factory=dict)
    sparse_calls: int = 0
    """Layer calls that ran the sparse kernel."""
    dense_decode_calls: int = 0
    """Single-token layer calls that stayed dense (short context or fallback)."""
    _mask_key: tuple[Any, ...] | None = None
    _mask_starts: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget every summary (call before an unrelated generation)."""
        self.layers.clear()
        self._mask_key = self._mask_starts = None

    def starts(self, mask: torch.Tensor | None, B: int, kv_len: int) -> torch.Tensor | None:
        """First valid token per row from a decode mask; ``None`` if it is not left padding."""
        if mask is None:
            return torch.zeros(B, dtype=torch.long)
        key = (id(mask), mask.data_ptr(), tuple(mask.shape))
        if key == self._mask_key:
            return self._mask_starts
        m = mask[:, 0, -1, :] if mask.dim() == 4 else mask.reshape(B, -1)
        valid = m if m.dtype == torch.bool else m == 0
        if valid.shape != (B, kv_len):
            return None
        first = valid.to(torch.int8).argmax(dim=-1)
        count = valid.sum(dim=-1)
        ok = bool((count == kv_len - first).all()) and bool(valid[:, -1].all())
        starts = first.to("cpu", torch.long) if ok else None
        self._mask_key, self._mask_starts = key, starts
        return starts

    def summaries(self, layer: int, key: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Block summaries of ``key`` (the layer's whole cache), updated incrementally."""
        B, H, T, D = key.shape
        bs = self.cfg.block_size
        st = self.layers.get(layer)
        fresh = (
            st is None
            or st.summaries.shape[0] != B
            or st.tokens > T
            or not torch.equal(st.last_key, key[:, :, st.tokens - 1])
        )
        need = -(-T // bs)
        if fresh:
            summ = block_summaries(
                key, bs, starts=starts.to(key.device), num_blocks=need + _SLACK_BLOCKS
            )
            st = _LayerSummary(summ, T, key[:, :, T - 1].clone())
            self.layers[layer] = st
            return summ
        if need > st.summaries.shape[2]:
            grow = max(need - st.summaries.shape[2], st.summaries.shape[2] // 2, _SLACK_BLOCKS)
            pad = st.summaries.new_zeros(B, H, grow, 2, D)
            st.summaries = torch.cat([st.summaries, pad], dim=2)
        if T > st.tokens:
            update_summaries(st.summaries, key[:, :, st.tokens :], st.tokens, bs)
            st.tokens = T
            st.last_key = key[:, :, T - 1].clone()
        return st.summaries


def sparse_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function (same contract as ``sdpa_attention_forward``)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    state: SparseDecodeState | None = getattr(module, "_ttscale_sparse", None)
    B, Hq, q_len, D = query.shape
    kv_len = key.shape[2]
    dense = state is None or q_len != 1 or module.training or not state.cfg.sparse_at(kv_len)
    starts = None
    if not dense and kwargs.get("sliding_window") is not None:
        _log_once("sw", "sliding-window attention layers stay dense under TopKBlocks")
        dense = True
    if not dense:
        starts = state.starts(attention_mask, B, kv_len)
        if starts is None:
            _log_once("mask", "decode mask is not left padding; block top-k falls back to dense")
            dense = True
    if dense:
        if state is not None:
            if q_len == kv_len:  # a fresh prefill: any summary of this layer is stale
                state.layers.pop(getattr(module, "layer_idx", -1), None)
            elif q_len == 1:
                state.dense_decode_calls += 1
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    cfg = state.cfg
    summ = state.summaries(module.layer_idx, key, starts)
    out = block_topk_decode_attention(
        query[:, :, 0],
        key,
        value,
        summ,
        torch.full((B,), kv_len, dtype=torch.long),
        block_size=cfg.block_size,
        k=cfg.k,
        num_sink=cfg.num_sink,
        num_local=cfg.num_local,
        scale=scaling,
        starts=starts,
        impl=cfg.impl,
    )
    state.sparse_calls += 1
    return out.unsqueeze(1), None  # (B, 1, Hq, D), like sdpa's transposed output


def install(model: Any, cfg: TopKBlocks) -> SparseDecodeState:
    """Switch ``model`` (a transformers decoder) to block top-k decode attention.

    Returns:
        The shared state (summaries and counters); ``reset()`` it between generations.

    Raises:
        ConfigError: The model does not dispatch attention through ``AttentionInterface``.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    from ttscale.errors import ConfigError

    AttentionInterface.register(ATTN_NAME, sparse_attention_forward)
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)
    if not getattr(model, "_can_set_attn_implementation", lambda: False)():
        raise ConfigError(
            f"{type(model).__name__} does not dispatch attention through transformers' "
            f"AttentionInterface, so TopKBlocks cannot hook it; use sparse_attention=None"
        )
    state = SparseDecodeState(cfg)
    n = 0
    for mod in model.modules():
        if hasattr(mod, "layer_idx") and hasattr(mod, "num_key_value_groups"):
            mod._ttscale_sparse = state
            n += 1
    if n == 0:
        raise ConfigError(
            f"found no attention layers (modules with layer_idx and num_key_value_groups) in "
            f"{type(model).__name__}; TopKBlocks supports Llama/Qwen2-style decoders"
        )
    model.set_attn_implementation(ATTN_NAME)
    log.info("block top-k decode attention on %d layers: %s", n, cfg)
    return state


class _PreallocatedLayer(DynamicLayer):
    """``DynamicLayer`` writing into a buffer sized up front (see ``preallocated_cache``)."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self._cap, self._len = cap, 0
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def update(self, key_states, value_states, *args, **kwargs):  # type: ignore[override]
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        B, H, n, D = key_states.shape
        need = self._len + n
        if self._k is None or need > self._k.shape[2] or self._k.shape[0] != B:
            cap = max(need, self._cap if self._k is None else int(need * 1.5))
            k = key_states.new_empty(B, H, cap, D)
            v = value_states.new_empty(B, H, cap, value_states.shape[3])
            if self._k is not None and self._len:
                k[:, :, : self._len] = self._k[:, :, : self._len]
                v[:, :, : self._len] = self._v[:, :, : self._len]
            self._k, self._v = k, v
        self._k[:, :, self._len : need] = key_states
        self._v[:, :, self._len : need] = value_states
        self._len = need
        self.keys, self.values = self._k[:, :, :need], self._v[:, :, :need]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._len if self.is_initialized else 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:  # legacy: absolute target length
            tokens_to_remove = max(self._len - tokens_to_remove, 0)
        self._len = max(self._len - abs(tokens_to_remove), 0)
        if self._k is not None:
            self.keys, self.values = self._k[:, :, : self._len], self._v[:, :, : self._len]

    def _rebuild(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self._k, self._v, self._len = None, None, 0
        self.is_initialized = False
        self.update(keys, values)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._len:
            self._rebuild(
                self.keys.repeat_interleave(repeats, dim=0),
                self.values.repeat_interleave(repeats, dim=0),
            )

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._len:
            self._rebuild(self.keys[indices].contiguous(), self.values[indices].contiguous())

    def reset(self) -> None:
        self._k = self._v = None
        self._len = 0
        super().reset()


def preallocated_cache(model: Any, capacity: int) -> Any:
    """A ``DynamicCache`` for ``model`` whose layers hold ``capacity`` tokens without copies.

    Layers grow (by 1.5x) if a call overruns ``capacity``; ``crop`` and batch reordering work
    as in ``DynamicCache``. Keys/values are returned as views of the buffers (last dim
    contiguous), which SDPA and the block top-k kernels read in place.
    """
    cache = DynamicCache(config=model.config)
    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        return cache  # sliding-window / hybrid layouts keep transformers' own layers
    cache.layers = [_PreallocatedLayer(capacity) for _ in cache.layers]
    return cache
