"""Block top-k sparse decode attention for long rollouts (Kinetics, Quest).

The KV cache is split into fixed blocks (default 64 tokens) with a per-block, per-channel
key ``[min, max]`` summary. For each decode token and KV head the kernel keeps the first
(sink) and last (local) blocks plus the blocks with the most estimated attention mass
(Quest upper bounds, softmax over blocks, summed over the GQA group), then takes exact
softmax attention over the selected tokens. Memory traffic per decode step drops from the
whole context to ``k`` blocks, which is where long rollouts spend their time.

One function, three implementations with the same semantics:

- ``impl="reference"``: plain PyTorch (``reference.py``), the oracle of the tests;
- ``impl="cpu"``: a C++/OpenMP kernel (``csrc/block_topk.cpp``), JIT-built once into
  ``ttscale.host.cache_dir() / "kernels"``; needs a C++ compiler and ninja;
- ``impl="triton"``: Triton kernels for GPUs (CPU only under ``TRITON_INTERPRET=1``).

``impl="auto"`` picks Triton on CUDA and the C++ kernel on CPU, falling back to the
reference (logged once) when they cannot run. ``TopKBlocks`` turns the mode on for
``HFBackend(sparse_attention=TopKBlocks(...))``, which prices decode with the reduced KV
reads (``ttscale.cost.decode_kv_reads``), and for ``VLLMBackend(sparse=...)``, the default
engine: there ``vllm_sparse.py`` overrides vLLM's CPU attention backend so long decode rows run
vLLM's own kernel over a shortened block table of the selected blocks (``paged.py``).

Example:
    >>> from ttscale.kernels import TopKBlocks
    >>> TopKBlocks(block_size=64, k=32, threshold=4096).kv_budget_tokens
    2048

``TopKBlocks`` imports without torch; the functions below import torch on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import IMPLS, SparseConfig, TopKBlocks, sparse_config

if TYPE_CHECKING:
    from .attention import block_topk_decode_attention
    from .reference import block_summaries, update_summaries

__all__ = [
    "IMPLS",
    "SparseConfig",
    "TopKBlocks",
    "block_summaries",
    "block_topk_decode_attention",
    "sparse_config",
    "update_summaries",
]

_LAZY = {
    "block_topk_decode_attention": ".attention",
    "block_summaries": ".reference",
    "update_summaries": ".reference",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
