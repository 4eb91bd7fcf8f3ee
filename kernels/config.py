"""``TopKBlocks``: the sparse decode-attention setting users pass to ``HFBackend`` (no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from ttscale.cost import BlockSparseDecode
from ttscale.errors import ConfigError

__all__ = ["IMPLS", "TopKBlocks"]

IMPLS = ("auto", "reference", "cpu", "triton")
"""``auto``: Triton on CUDA tensors, the C++ kernel on CPU, else the torch reference."""


@dataclass(frozen=True, slots=True)
class TopKBlocks:
    """Block top-k sparse attention for decode steps of long rollouts.

    Decode steps whose KV length exceeds ``threshold`` attend to ``k`` blocks of
    ``block_size`` tokens per KV head: the first ``num_sink`` blocks, the last ``num_local``
    blocks, and the blocks with the highest estimated attention mass (Quest min/max key
    bounds). Prefill and shorter contexts stay dense, and so does any step where the
    selection would not read less than dense attention (see ``sparse_at``).

    Examples:
        >>> TopKBlocks(k=32).kv_budget_tokens
        2048
        >>> TopKBlocks(k=32, threshold=4096).sparse_at(16384)
        True
    """

    block_size: int = 64
    """Tokens per KV block (a power of two >= 16 for the Triton path)."""
    k: int = 32
    """Blocks attended per KV head, sink and local blocks included."""
    threshold: int = 4096
    """KV length above which decode goes sparse; shorter contexts stay dense."""
    num_sink: int = 1
    """Leading blocks always kept (attention sinks)."""
    num_local: int = 2
    """Trailing blocks always kept (the most recent tokens; the last block may be partial)."""
    impl: str = "auto"
    """``auto``, ``reference``, ``cpu`` or ``triton`` (see ``IMPLS``)."""

    def __post_init__(self) -> None:
        for name in ("block_size", "k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TopKBlocks.{name}={getattr(self, name)} must be >= 1")
        if self.num_sink < 0 or self.num_local < 0 or self.threshold < 0:
            raise ConfigError(
                f"TopKBlocks num_sink={self.num_sink}, num_local={self.num_local}, "
                f"threshold={self.threshold} must be >= 0"
            )
        if self.k < self.num_sink + self.num_local:
            raise ConfigError(
                f"TopKBlocks.k={self.k} must cover num_sink + num_local = "
                f"{self.num_sink + self.num_local} forced blocks; raise k"
            )
        if self.impl not in IMPLS:
            raise ConfigError(f"TopKBlocks.impl={self.impl!r}; use one of {', '.join(IMPLS)}")

    @property
    def kv_budget_tokens(self) -> int:
        """Most KV tokens one sparse decode step attends to per KV head."""
        return self.k * self.block_size

    @property
    def cost(self) -> BlockSparseDecode:
        """The eFLOPs model of this setting (``ttscale.cost``)."""
        return BlockSparseDecode(self.block_size, self.k, self.threshold)

    def sparse_at(self, kv_len: int) -> bool:
        """Whether a decode step over ``kv_len`` cached tokens runs sparse.

        True once ``kv_len > threshold`` and the dropped blocks outweigh the block summaries
        read to choose them; the eFLOPs model uses the same rule.
        """
        return self.cost.active(kv_len)
