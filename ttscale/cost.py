"""eFLOPs cost model (Kinetics, Sadhukhan et al. 2025, "Rethinking Test-Time Scaling Laws").

eFLOPs = compute FLOPs + memory bytes x I, where I = peak FLOP/s / memory bandwidth is the
hardware's arithmetic intensity. Decode reads the whole KV cache for every generated token,
so a long rollout costs more per token than a short one; counting only 2 x params x tokens
misprices exactly the long generations test-time scaling produces.

Per processed token at context position t (summed over layers):
  compute  = 2 * P_active + 4 * L * H_q * d * t           (matmuls + QK^T and AV)
  memory   = 2 * L * H_kv * d * t * bytes_per_el          (K and V reads, decode only)
Weight reads are shared by every sequence in a decode batch, so they are amortised over
``batch`` sequences (Kinetics assumes large batches and drops them).

Block top-k sparse decode (``ModelSpec.sparse_decode``, ``ttscale.kernels.TopKBlocks``)
replaces ``t`` in both decode terms by the KV positions actually touched: the selected
tokens plus one token-equivalent per block summary (Quest keeps a per-channel key min and
max per block and KV head: the bytes of one token's K and V, and about the FLOPs of one
token's QK and AV to score). See ``decode_kv_reads``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError
from ttscale.host import HostInfo, cache_dir, host_info

__all__ = [
    "HARDWARE",
    "BlockSparseDecode",
    "Hardware",
    "ModelSpec",
    "block_sparse_decode_eflops",
    "calibrated_path",
    "decode_kv_reads",
    "default_hardware",
    "host_key",
    "host_preset",
    "load_preset",
    "prefill_eflops",
    "request_eflops",
    "sample_eflops",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BlockSparseDecode:
    """Block top-k sparse decode attention as priced here (see ``ttscale.kernels.TopKBlocks``).

    A decode step over ``t`` KV positions is sparse iff ``active(t)``; it then reads ``k``
    blocks of ``block_size`` tokens (the last one partial) plus ``ceil(t / block_size)``
    block summaries instead of ``t`` tokens.
    """

    block_size: int
    k: int
    """Blocks attended per KV head (sink and local blocks included)."""
    threshold: int = 0
    """Contexts up to this length stay dense."""

    def active(self, t: int) -> bool:
        """Sparse at context ``t``: past the threshold and fewer reads than dense.

        With ``n = ceil(t / block_size)`` blocks, selection drops ``(n - k)`` full blocks and
        reads ``n`` summaries, so it pays iff ``(n - k) * block_size > n``.
        """
        n = -(-t // self.block_size)
        return t > self.threshold and (n - self.k) * self.block_size > n


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Shape of a decoder-only transformer, read from its HF ``config.json``."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    bytes_per_param: float = 2.0
    """Bytes per weight/KV element as served (4 for fp32, 2 for bf16, ~0.56 for Q4_K)."""
    sparse_decode: BlockSparseDecode | None = None
    """Decode attention as served: ``None`` = dense, else block top-k (``HFBackend``
    ``sparse_attention=``); ``request_eflops`` prices decode KV reads with it."""

    @property
    def params(self) -> int:
        """Parameters touched per token: attention + MLP + LM head (embedding lookup is free)."""
        attn = self.hidden_size * self.head_dim * (2 * self.num_heads + 2 * self.num_kv_heads)
        mlp = 3 * self.hidden_size * self.intermediate_size
        return self.num_layers * (attn + mlp) + self.hidden_size * self.vocab_size

    @classmethod
    def from_hf_config(cls, cfg: dict, bytes_per_param: float = 2.0) -> ModelSpec:
        """Build from a transformers config dict (Qwen2/Llama naming)."""
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        return cls(
            num_layers=int(cfg["num_hidden_layers"]),
            hidden_size=hidden,
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads", heads)),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate_size=int(cfg["intermediate_size"]),
            vocab_size=int(cfg["vocab_size"]),
            bytes_per_param=bytes_per_param,
        )


@dataclass(frozen=True, slots=True)
class Hardware:
    """Peak compute and memory bandwidth; their ratio prices a byte in FLOPs."""

    name: str
    peak_flops: float
    """Dense FLOP/s at the serving dtype."""
    mem_bandwidth: float
    """Bytes/s."""

    @property
    def intensity(self) -> float:
        return self.peak_flops / self.mem_bandwidth


HARDWARE: dict[str, Hardware] = {
    # Datasheet figures (dense bf16 tensor core, HBM bandwidth).
    "h100": Hardware("h100", 989e12, 3.35e12),
    "h200": Hardware("h200", 989e12, 4.8e12),
    # 2-vCPU AVX2 cloud host, fp32: 2 cores x 2 FMA units x 8 lanes x 2 FLOP x ~2.5 GHz,
    # ~10 GB/s effective per 2 vCPUs. A rough preset until `ttscale calibrate` measures it.
    "cpu-avx2-2c": Hardware("cpu-avx2-2c", 160e9, 10e9),
    # 2-vCPU AVX-512 host with AMX, serving bf16: bf16 matmul and sum bandwidth measured
    # with `ttscale calibrate --hardware` on an Intel Xeon (AMX) host of this machine class
    # (benchmarks/results/hw_calibration_amx.json).
    "cpu-amx-2c": Hardware("cpu-amx-2c", 1.69e12, 38.2e9),
}
"""Named presets. CPU hosts get one by ISA (``host_preset``) unless calibrated."""


def host_preset(info: HostInfo | None = None) -> Hardware:
    """The preset for this CPU's ISA: ``cpu-amx-2c`` on AMX hosts (the engine serves bf16
    there), else ``cpu-avx2-2c``. Other ISAs (AVX-512 without AMX) have no measured preset
    and get ``cpu-avx2-2c``; ``ttscale calibrate --hardware`` measures the host instead."""
    info = info or host_info()
    return HARDWARE["cpu-amx-2c" if "amx_bf16" in info.flags else "cpu-avx2-2c"]


def calibrated_path() -> Path:
    """Where ``ttscale calibrate --hardware`` stores this host's measured preset."""
    return cache_dir() / "hardware" / "calibrated.json"


def host_key() -> dict[str, Any]:
    """What identifies a host for a measured preset (CPU model, ISA, cores)."""
    info = host_info()
    return {"cpu_model": info.cpu_model, "isa": info.isa, "cores": info.cores}


def load_preset(path: Path) -> Hardware:
    """Read a preset JSON (name, peak_flops, mem_bandwidth).

    Raises:
        ConfigError: Unreadable file or missing/non-positive fields, naming the fix.
    """
    try:
        data = json.loads(Path(path).read_text())
        hw = Hardware(str(data["name"]), float(data["peak_flops"]), float(data["mem_bandwidth"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"hardware preset {path} is unusable ({exc!r}); rerun `ttscale calibrate --hardware` "
            f"or delete the file"
        ) from None
    if not (hw.peak_flops > 0 and hw.mem_bandwidth > 0):
        raise ConfigError(f"hardware preset {path} has non-positive figures; rerun calibration")
    return hw


def default_hardware() -> Hardware:
    """The preset ledgers use when none is given; its name is on every ledger.

    Order: ``$TTSCALE_HARDWARE`` (a preset name in ``HARDWARE`` or a JSON path), else this
    host's preset measured by ``ttscale calibrate --hardware`` (only on the host it was
    measured on), else the preset for this host's ISA (``host_preset``).
    """
    env = os.environ.get("TTSCALE_HARDWARE")
    if env:
        if env in HARDWARE:
            return HARDWARE[env]
        if Path(env).is_file():
            return load_preset(Path(env))
        raise ConfigError(
            f"TTSCALE_HARDWARE={env!r} is neither a preset ({', '.join(HARDWARE)}) nor a file"
        )
    path = calibrated_path()
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        return host_preset()
    cached = _CACHE.get(str(path))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    hw = _from_cache_file(path)
    _CACHE[str(path)] = (stamp, hw)
    return hw


_CACHE: dict[str, tuple[tuple[int, int, int], Hardware]] = {}


def _from_cache_file(path: Path) -> Hardware:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("ignoring unreadable hardware preset %s", path)
        return host_preset()
    if data.get("host") == host_key():
        try:
            return load_preset(path)
        except ConfigError as exc:
            log.warning("%s", exc)
    else:
        log.info("hardware preset %s was measured on another host; not used", path)
    return host_preset()


def request_eflops(
    spec: ModelSpec,
    hw: Hardware,
    *,
    prompt_tokens: int,
    cached_tokens: int,
    generated: list[int] | tuple[int, ...],
) -> float:
    """eFLOPs of one request: prefill of the uncached prompt, then decode of each sample.

    Args:
        spec: Model shape.
        hw: Hardware preset that converts bytes to FLOPs.
        prompt_tokens: Prompt length (shared by all samples of the request).
        cached_tokens: Prompt tokens served from the prefix cache (no prefill compute).
        generated: Generated token count of each sample.

    Returns:
        Estimated eFLOPs (float). Monotone in every length argument. Equals
        ``prefill_eflops`` plus ``sample_eflops`` of every sample.
    """
    batch = max(len(generated), 1)
    total = prefill_eflops(spec, prompt_tokens=prompt_tokens, cached_tokens=cached_tokens)
    for g in generated:
        total += sample_eflops(spec, hw, prompt_tokens=prompt_tokens, generated=g, batch=batch)
    return float(total)


def prefill_eflops(spec: ModelSpec, *, prompt_tokens: int, cached_tokens: int) -> float:
    """Prefill FLOPs of a prompt's uncached positions (attention over all earlier ones)."""
    L, hq, d = spec.num_layers, spec.num_heads, spec.head_dim
    fresh = max(prompt_tokens - cached_tokens, 0)
    attn_prefill = 4 * L * hq * d * _sum_range(cached_tokens, prompt_tokens)
    return float(2.0 * spec.params * fresh + attn_prefill)


def sample_eflops(
    spec: ModelSpec, hw: Hardware, *, prompt_tokens: int, generated: int, batch: int = 1
) -> float:
    """Decode eFLOPs of one sample of ``generated`` tokens after a ``prompt_tokens`` prompt:
    compute, its own KV reads, and its share of the weight reads of a ``batch``-sample call."""
    L, hq, hkv, d = spec.num_layers, spec.num_heads, spec.num_kv_heads, spec.head_dim
    weight_bytes = spec.params * spec.bytes_per_param
    kv_bytes_per_pos = 2 * L * hkv * d * spec.bytes_per_param
    positions = _attended(prompt_tokens, prompt_tokens + generated, spec.sparse_decode)
    compute = 2.0 * spec.params * generated + 4 * L * hq * d * positions
    memory = kv_bytes_per_pos * positions + weight_bytes * generated / max(batch, 1)
    return float(compute + memory * hw.intensity)


def decode_kv_reads(t: int, sparse: BlockSparseDecode | None = None) -> int:
    """KV positions one decode step at context ``t`` reads, in token-equivalents.

    Dense: ``t``. Block top-k when ``sparse.active(t)``: ``(k - 1) * block_size`` full blocks,
    the partial last block's ``t - (n - 1) * block_size`` tokens, and ``n`` block summaries
    (``n = ceil(t / block_size)``); never more than ``t``, equal to ``t`` while inactive.
    """
    if sparse is None or not sparse.active(t):
        return t
    bs = sparse.block_size
    n = -(-t // bs)
    return (sparse.k - 1) * bs + (t - (n - 1) * bs) + n


def block_sparse_decode_eflops(
    spec: ModelSpec,
    hw: Hardware,
    *,
    context: int,
    generated: int,
    sparse: BlockSparseDecode | None,
) -> float:
    """Attention eFLOPs (compute + KV bytes x intensity) of decoding ``generated`` tokens.

    Only the context-dependent part of decode: ``4 L Hq d`` FLOPs and ``2 L Hkv d`` elements
    per KV position read (``decode_kv_reads``). ``sparse=None`` prices dense attention, so
    ``dense - sparse`` is what block top-k saves. Never exceeds the dense figure; equal to it
    while ``k * block_size`` covers the whole context.
    """
    L, hq, hkv, d = spec.num_layers, spec.num_heads, spec.num_kv_heads, spec.head_dim
    reads = _attended(context, context + generated, sparse)
    kv_bytes = 2 * L * hkv * d * spec.bytes_per_param
    return float(4 * L * hq * d * reads + kv_bytes * reads * hw.intensity)


def _attended(a: int, b: int, sparse: BlockSparseDecode | None) -> int:
    """Sum of ``decode_kv_reads(t)`` for t in [a, b), in O(blocks) rather than O(tokens)."""
    if sparse is None or b <= a:
        return _sum_range(a, b)
    total, t, bs = 0, a, sparse.block_size
    while t < b:
        n = -(-t // bs)
        end = min(b, n * bs + 1)  # positions sharing n = ceil(t / bs)
        if t <= sparse.threshold:
            end = min(end, sparse.threshold + 1)
        if not sparse.active(t):
            total += _sum_range(t, end)
        else:  # (k - 1) * bs + (t - (n - 1) * bs) + n, linear in t within the block
            total += (end - t) * ((sparse.k - 1) * bs - (n - 1) * bs + n) + _sum_range(t, end)
        t = end
    return total


def _sum_range(a: int, b: int) -> int:
    """Sum of t for t in [a, b): total context positions attended over."""
    return (b - a) * (a + b - 1) // 2 if b > a else 0
