"""``block_topk_decode_attention``: one signature over the reference, CPU and Triton paths."""

from __future__ import annotations

import logging
import os

import torch

from ttscale.errors import BackendUnavailable, ConfigError

from .config import IMPLS
from .reference import reference_decode

__all__ = ["block_topk_decode_attention", "resolve_impl"]

log = logging.getLogger(__name__)

_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_logged: set[str] = set()


def _log_once(key: str, msg: str, *args: object) -> None:
    if key not in _logged:
        _logged.add(key)
        log.warning(msg, *args)


def resolve_impl(impl: str, device: torch.device, block_size: int) -> str:
    """The implementation ``impl`` runs as for tensors on ``device``.

    ``auto`` picks Triton on CUDA (if importable and ``block_size`` is a power of two >= 16),
    the C++ kernel on CPU (if it builds), and otherwise the torch reference, logging the
    reason once per process. Explicit choices that cannot run raise instead.

    Raises:
        ConfigError: Unknown ``impl`` or one that does not fit the device/shape.
        BackendUnavailable: ``impl="cpu"`` and the kernel cannot be built (message names the
            fix); ``impl="triton"`` without Triton.
    """
    if impl not in IMPLS:
        raise ConfigError(f"impl={impl!r}; use one of {', '.join(IMPLS)}")
    triton_ok_shape = block_size >= 16 and block_size & (block_size - 1) == 0
    if impl == "auto":
        if device.type == "cuda":
            if not triton_ok_shape:
                _log_once(
                    "bs",
                    "block_size=%d is not a power of two >= 16: Triton path off, "
                    "using the torch reference",
                    block_size,
                )
                return "reference"
            try:
                import triton  # noqa: F401
            except ImportError:
                _log_once(
                    "triton",
                    "triton is not installed: using the torch reference for "
                    "block top-k attention (fix: pip install triton)",
                )
                return "reference"
            return "triton"
        if device.type == "cpu":
            try:
                from .cpu import load_extension

                load_extension()
            except BackendUnavailable as exc:
                _log_once(
                    "cpu",
                    "block top-k CPU kernel unavailable, using the (slower) torch reference: %s",
                    exc,
                )
                return "reference"
            return "cpu"
        _log_once(
            f"dev-{device.type}",
            "no block top-k kernel for device %s: using the torch reference",
            device.type,
        )
        return "reference"
    if impl == "cpu" and device.type != "cpu":
        raise ConfigError(f"impl='cpu' needs CPU tensors, got {device}; use impl='auto'")
    if impl == "triton":
        if not triton_ok_shape:
            raise ConfigError(
                f"impl='triton' needs block_size a power of two >= 16, got {block_size}"
            )
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ConfigError(
                f"impl='triton' needs CUDA tensors (got {device}); on CPU set "
                f"TRITON_INTERPRET=1 before importing triton (slow, for tests) or use impl='cpu'"
            )
        try:
            import triton  # noqa: F401
        except ImportError:
            raise BackendUnavailable(
                "impl='triton' needs triton; fix: pip install triton"
            ) from None
    return impl


def block_topk_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    summaries: torch.Tensor,
    seq_lens: torch.Tensor | None = None,
    *,
    block_size: int,
    k: int,
    num_sink: int = 1,
    num_local: int = 1,
    scale: float | None = None,
    starts: torch.Tensor | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Decode attention of one new token per row over the ``k`` most relevant KV blocks.

    Semantics (``kernels/reference.py``): per (row, KV head) the first ``num_sink`` and last
    ``num_local`` blocks of the row's valid tokens are kept and the remaining
    ``k - num_sink - num_local`` blocks are those with the most estimated attention mass
    (Quest min/max bounds, softmax over blocks, summed over the GQA group); every query head
    then takes exact softmax attention over the selected tokens. Rows with at most ``k``
    blocks get exact dense attention.

    Args:
        q: ``(B, Hq, D)`` queries of the decode token.
        k_cache: ``(B, Hkv, T, D)`` keys (any strides with a contiguous last dim).
        v_cache: ``(B, Hkv, T, D)`` values.
        summaries: ``(B, Hkv, NB, 2, D)`` block key ``[min, max]`` (``block_summaries``),
            ``NB * block_size >= max(seq_lens)``, same dtype as the keys.
        seq_lens: ``(B,)`` valid tokens per row (default ``T`` for every row).
        block_size: Tokens per block.
        k: Blocks attended per (row, KV head), sink and local blocks included.
        num_sink: Leading blocks always kept.
        num_local: Trailing blocks always kept.
        scale: Softmax scale (default ``D ** -0.5``).
        starts: ``(B,)`` first valid token per row (left padding; default 0).
        impl: ``auto``, ``reference``, ``cpu`` or ``triton`` (see ``resolve_impl``).

    Returns:
        ``(B, Hq, D)`` attention output in ``q``'s dtype; zeros for rows without valid tokens.

    Raises:
        ConfigError: Shapes, dtypes or parameters that do not fit, naming the fix.
    """
    B, Hq, D = _check(q, k_cache, v_cache, summaries, block_size, k, num_sink, num_local)
    T = k_cache.shape[2]
    dev = q.device
    lens = _rows(seq_lens, B, T, "seq_lens")
    st = _rows(starts, B, 0, "starts")
    if int(lens.max()) > T or int(lens.max()) > summaries.shape[2] * block_size:
        raise ConfigError(
            f"seq_lens up to {int(lens.max())} exceed the cache ({T} tokens) or the summaries "
            f"({summaries.shape[2]} blocks of {block_size}); grow the summaries with the cache"
        )
    scale = D**-0.5 if scale is None else float(scale)
    kw = dict(block_size=block_size, k=k, num_sink=num_sink, num_local=num_local, scale=scale)
    which = resolve_impl(impl, dev, block_size)
    if which == "cpu":
        from .cpu import cpu_decode

        return cpu_decode(q, k_cache, v_cache, summaries, lens, st, **kw)
    if which == "triton":
        from .triton_kernel import triton_decode

        return triton_decode(q, k_cache, v_cache, summaries, lens.to(dev), st.to(dev), **kw)
    return reference_decode(q, k_cache, v_cache, summaries, lens.to(dev), st.to(dev), **kw)


def _check(
    q: torch.Tensor,
    kc: torch.Tensor,
    vc: torch.Tensor,
    summ: torch.Tensor,
    block_size: int,
    k: int,
    num_sink: int,
    num_local: int,
) -> tuple[int, int, int]:
    if q.dim() != 3 or kc.dim() != 4 or vc.shape != kc.shape:
        raise ConfigError(
            f"expected q (B, Hq, D) and k/v caches (B, Hkv, T, D) of one shape; got q "
            f"{tuple(q.shape)}, k {tuple(kc.shape)}, v {tuple(vc.shape)} (squeeze the query "
            f"length dimension of a decode step)"
        )
    B, Hq, D = q.shape
    if kc.shape[0] != B or kc.shape[3] != D or Hq % kc.shape[1]:
        raise ConfigError(
            f"q {tuple(q.shape)} does not fit the cache {tuple(kc.shape)}: batch and head dim "
            f"must match and Hq must be a multiple of Hkv"
        )
    want = (B, kc.shape[1], summ.shape[2] if summ.dim() == 5 else -1, 2, D)
    if summ.dim() != 5 or tuple(summ.shape) != want:
        raise ConfigError(
            f"summaries must be (B, Hkv, NB, 2, D) = {want}, got {tuple(summ.shape)}; "
            f"build them with block_summaries(k_cache, block_size)"
        )
    for name, t in (("q", q), ("k_cache", kc), ("v_cache", vc), ("summaries", summ)):
        if t.dtype not in _FLOAT_DTYPES:
            raise ConfigError(f"{name} has dtype {t.dtype}; use float32, bfloat16 or float16")
        if t.dtype != q.dtype or t.device != q.device:
            raise ConfigError(
                f"{name} is {t.dtype} on {t.device} but q is {q.dtype} on {q.device}; "
                f"cast them to one dtype and device"
            )
        if t.stride(-1) != 1:
            raise ConfigError(f"{name} must be contiguous in its last dim; call .contiguous()")
    if block_size < 1 or k < 1 or num_sink < 0 or num_local < 0:
        raise ConfigError(
            f"block_size={block_size}, k={k} must be >= 1 and num_sink={num_sink}, "
            f"num_local={num_local} >= 0"
        )
    if k < num_sink + num_local:
        raise ConfigError(
            f"k={k} must cover num_sink + num_local = {num_sink + num_local} forced blocks"
        )
    return B, Hq, D


def _rows(x: torch.Tensor | None, B: int, default: int, name: str) -> torch.Tensor:
    if x is None:
        return torch.full((B,), default, dtype=torch.long)
    if x.numel() != B or x.dtype.is_floating_point:
        raise ConfigError(
            f"{name} must hold {B} integers (one per row), got {tuple(x.shape)} {x.dtype}"
        )
    return x.detach().to("cpu", torch.long).reshape(B)
