"""``TopKBlocks`` (alias ``SparseConfig``): the sparse decode-attention setting users pass to
``HFBackend(sparse_attention=...)`` and ``VLLMBackend(sparse=...)``, and ``sparse_config``, which
reads it from the command line (``--sparse``, ``-B sparse=...``). No torch."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ttscale.cost import BlockSparseDecode
from ttscale.errors import ConfigError

__all__ = ["IMPLS", "SparseConfig", "TopKBlocks", "sparse_config"]

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


SparseConfig = TopKBlocks
"""The name the vLLM engine's options use: top-k blocks (``k``), sink blocks (``num_sink``),
recent blocks (``num_local``) and the context threshold (``threshold``) of one setting."""

_ALIASES = {
    "top_k": "k",
    "topk": "k",
    "sink": "num_sink",
    "sinks": "num_sink",
    "recent": "num_local",
    "local": "num_local",
    "block": "block_size",
}


def sparse_config(value: Any) -> TopKBlocks | None:
    """A ``TopKBlocks`` from what a user or a command line passes.

    Accepts ``None``/``False``/``"off"`` (dense), ``True``/``"on"``/``""`` (the defaults), a
    ``TopKBlocks``, a mapping of its fields, JSON text of one, or ``"k=64,threshold=8192"``
    (also ``top_k``, ``sink``, ``recent``, ``block`` as names).

    Raises:
        ConfigError: An unknown field or a value that is not an integer; the message lists
            the fields.
    """
    if (
        value is None
        or value is False
        or (isinstance(value, str) and value.lower() in ("off", "false", "0", "none"))
    ):
        return None
    if isinstance(value, TopKBlocks):
        return value
    if value is True or (isinstance(value, str) and value.strip().lower() in ("", "on", "true")):
        return TopKBlocks()
    items: Mapping[str, Any]
    if isinstance(value, Mapping):
        items = value
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                items = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"sparse={value!r} is not valid JSON ({exc})") from None
        else:
            items = {}
            for part in filter(None, (p.strip() for p in text.split(","))):
                key, sep, raw = part.partition("=")
                if not sep:
                    raise ConfigError(
                        f"sparse={value!r}: {part!r} is not key=value; e.g. k=64,threshold=8192"
                    )
                items[key.strip()] = raw.strip()
    else:
        raise ConfigError(f"sparse={value!r}: pass a TopKBlocks, a dict or 'k=64,threshold=8192'")
    names = {f.name for f in fields(TopKBlocks)}
    kwargs: dict[str, Any] = {}
    for key, raw in items.items():
        name = _ALIASES.get(key, key)
        if name not in names:
            raise ConfigError(f"sparse option {key!r} is unknown; use {', '.join(sorted(names))}")
        if name == "impl":
            kwargs[name] = str(raw)
            continue
        try:
            kwargs[name] = int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"sparse option {key}={raw!r} must be an integer") from None
    return TopKBlocks(**kwargs)
