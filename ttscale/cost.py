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
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HARDWARE", "Hardware", "ModelSpec", "request_eflops"]


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
}


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
        Estimated eFLOPs (float). Monotone in every length argument.
    """
    L, hq, hkv, d = spec.num_layers, spec.num_heads, spec.num_kv_heads, spec.head_dim
    fresh = max(prompt_tokens - cached_tokens, 0)
    # Prefill: positions cached..prompt-1, attention over all previous positions.
    attn_prefill = 4 * L * hq * d * _sum_range(cached_tokens, prompt_tokens)
    total = 2.0 * spec.params * fresh + attn_prefill
    batch = max(len(generated), 1)
    weight_bytes = spec.params * spec.bytes_per_param
    kv_bytes_per_pos = 2 * L * hkv * d * spec.bytes_per_param
    for g in generated:
        positions = _sum_range(prompt_tokens, prompt_tokens + g)
        compute = 2.0 * spec.params * g + 4 * L * hq * d * positions
        memory = kv_bytes_per_pos * positions + weight_bytes * g / batch
        total += compute + memory * hw.intensity
    return float(total)


def _sum_range(a: int, b: int) -> int:
    """Sum of t for t in [a, b): total context positions attended over."""
    return (b - a) * (a + b - 1) // 2 if b > a else 0
