"""The CPU kernel: ``csrc/block_topk.cpp`` JIT-built with ``torch.utils.cpp_extension.load``.

Built once per (source, flags, torch version, host ISA) under
``ttscale.host.cache_dir() / "kernels"`` (``-O3 -march=native -fopenmp``; the ISA is part of
the cache key because ``-march=native`` binaries do not run on older CPUs of the same class).
The first build takes about a minute; later processes load the cached library in well under
a second. Needs a C++ compiler (``c++``/``$CXX``) and ``ninja``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import torch

from ttscale.errors import BackendUnavailable

__all__ = ["cpu_decode", "load_extension"]

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).parent / "csrc" / "block_topk.cpp"
_CFLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=fast", "-DNDEBUG"]
if platform.machine() in ("x86_64", "AMD64"):
    # GCC tunes some AVX2 hosts (``-march=znver1``) for 128-bit vectors; the kernel's loops are
    # memory-bound streams over 64/128-float rows, which run faster 256 bits wide.
    _CFLAGS.append("-mprefer-vector-width=256")
_LDFLAGS = ["-fopenmp"]


@functools.cache
def load_extension() -> Any:
    """Build (first call) or load the extension; returns ``torch.ops.ttscale_kernels``.

    The source registers a torch operator (``TORCH_LIBRARY``) instead of a pybind11 module:
    its headers compile in a fraction of the time of ``torch/extension.h``.

    Raises:
        BackendUnavailable: No compiler or ninja, or the build failed; the message names the
            fix. ``impl="auto"`` catches this, logs it once and uses the torch reference.
    """
    from ttscale.host import cache_dir, host_info

    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise BackendUnavailable(
            f"no C++ compiler ({cxx!r} not on PATH) to build the block top-k CPU kernel; "
            f"fix: apt-get install g++ (or set $CXX), or pass impl='reference'"
        )
    from torch.utils import cpp_extension

    if not cpp_extension.is_ninja_available():
        raise BackendUnavailable(
            "ninja is missing (torch builds C++ extensions with it); "
            "fix: pip install ninja, or pass impl='reference'"
        )
    source = _SOURCE.read_text()
    key = "\0".join([source, *_CFLAGS, torch.__version__, host_info().isa, cxx])
    tag = hashlib.sha256(key.encode()).hexdigest()[:12]
    name = f"ttscale_block_topk_{tag}"
    build = cache_dir() / "kernels" / name
    build.mkdir(parents=True, exist_ok=True)
    try:
        cpp_extension.load(
            name=name,
            sources=[str(_SOURCE)],
            extra_cflags=_CFLAGS,
            extra_ldflags=_LDFLAGS,
            build_directory=str(build),
            is_python_module=False,
            verbose=False,
        )
    except (RuntimeError, OSError, ImportError) as exc:
        raise BackendUnavailable(
            f"building the block top-k CPU kernel failed in {build}: {str(exc)[-800:]}; "
            f"fix: check the compiler output above (delete {build} to retry), "
            f"or pass impl='reference'"
        ) from None
    return torch.ops.ttscale_kernels


def cpu_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    summaries: torch.Tensor,
    seq_lens: torch.Tensor,
    starts: torch.Tensor,
    *,
    block_size: int,
    k: int,
    num_sink: int,
    num_local: int,
    scale: float,
) -> torch.Tensor:
    """Run the C++ kernel (CPU tensors, fp32/bf16/fp16, last dims contiguous)."""
    return load_extension().block_topk_decode(
        q,
        k_cache,
        v_cache,
        summaries,
        seq_lens,
        starts,
        block_size,
        k,
        num_sink,
        num_local,
        float(scale),
    )
