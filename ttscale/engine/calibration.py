"""Measure this host's effective FLOP/s and memory bandwidth; save them as a ``Hardware`` preset.

The eFLOPs cost model (``ttscale.cost``) prices a byte of memory traffic at the hardware's
FLOP/byte ratio, so a CPU preset built from datasheet guesses misprices KV reads. ``ttscale
calibrate --hardware`` runs for ~10-20 s:

- compute: square ``torch.matmul`` at fp32 (and at bf16 only where ``host_info()`` reports a
  native bf16 path; elsewhere oneDNN emulates it and the figure would be meaningless), 2 n^3
  FLOPs per product, best of several timed repeats;
- bandwidth: a tensor far larger than the last-level cache, copied (``dst.copy_(src)``: read +
  write = 2 x bytes) and summed (read = 1 x bytes); the larger effective figure is kept.

The preset is written to ``<cache>/hardware/calibrated.json`` together with the host it was
measured on (CPU model, ISA, cores). ``ttscale.cost.default_hardware()`` uses it
automatically, but only on a matching host, so a copied cache directory never prices another
machine; its name is recorded in every ledger (``Ledger.hardware.name``).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ttscale.cost import calibrated_path, host_key
from ttscale.host import cpu_dtype, host_info

__all__ = ["measure_hardware", "save_preset"]

log = logging.getLogger(__name__)


def _best_rate(fn: Callable[[], None], work: float, seconds: float, min_reps: int = 3) -> float:
    """Best ``work / time`` over repeats of ``fn`` for about ``seconds`` (after one warm-up)."""
    fn()
    best, t_end, reps = 0.0, time.perf_counter() + seconds, 0
    while reps < min_reps or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best = max(best, work / dt if dt > 0 else 0.0)
        reps += 1
    return best


def measure_hardware(
    *, seconds: float = 3.0, matmul_n: int = 1024, copy_mib: int = 256, threads: int | None = None
) -> dict[str, Any]:
    """Measure matmul FLOP/s and copy/reduction bandwidth with torch on this CPU.

    Args:
        seconds: Timed window per measurement (4-5 measurements: ~4-5 x ``seconds`` total).
        matmul_n: Square matrix size (1024: 2.1 GFLOP per product, fits the L2/L3 tiling).
        copy_mib: Size of the bandwidth tensor; must dwarf the last-level cache.
        threads: torch threads; default = CPUs this process may use.

    Returns:
        A JSON-ready dict: ``peak_flops`` (at the serving dtype, ``cpu_dtype()``),
        ``mem_bandwidth`` and every raw figure under ``measured``.
    """
    import torch

    info = host_info()
    torch.set_num_threads(threads or info.cores)
    measured: dict[str, float] = {}
    dtypes = [torch.float32]
    if cpu_dtype(info) == "bfloat16":
        dtypes.append(torch.bfloat16)
    with torch.inference_mode():
        for dt in dtypes:
            a = torch.randn(matmul_n, matmul_n, dtype=dt)
            b = torch.randn(matmul_n, matmul_n, dtype=dt)
            c = torch.empty(matmul_n, matmul_n, dtype=dt)
            name = "float32" if dt is torch.float32 else "bfloat16"
            measured[f"matmul_{name}_flops"] = _best_rate(
                lambda a=a, b=b, c=c: torch.matmul(a, b, out=c), 2.0 * matmul_n**3, seconds
            )
        elems = copy_mib * 2**20 // 4
        src = torch.ones(elems, dtype=torch.float32)
        dst = torch.empty_like(src)
        nbytes = float(src.numel() * src.element_size())
        measured["copy_bytes_per_s"] = _best_rate(lambda: dst.copy_(src), 2 * nbytes, seconds)
        measured["sum_bytes_per_s"] = _best_rate(lambda: src.sum(), nbytes, seconds)
    serving = cpu_dtype(info)
    return {
        "name": f"cpu-{info.isa}-{info.cores}c-measured",
        "peak_flops": measured[f"matmul_{serving}_flops"],
        "mem_bandwidth": max(measured["copy_bytes_per_s"], measured["sum_bytes_per_s"]),
        "dtype": serving,
        "measured": measured,
        "method": {
            "matmul_n": matmul_n,
            "copy_mib": copy_mib,
            "seconds_per_measurement": seconds,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "host": host_key(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def save_preset(preset: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``preset`` (from ``measure_hardware``) atomically; returns the path."""
    path = path or calibrated_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(preset, indent=2) + "\n")
    os.replace(tmp, path)
    return path
