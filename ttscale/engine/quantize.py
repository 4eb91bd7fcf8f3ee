"""``ttscale quantize``: write a compressed-tensors checkpoint vLLM and transformers load as is.

Schemes (compressed-tensors presets, the formats vLLM's ``compressed-tensors`` loader reads):

- ``w8a8``: int8 weights, symmetric, one scale per output channel; int8 activations
  quantized dynamically per token at run time (format ``int-quantized``).
- ``w4a16``: int4 weights, symmetric, one scale per group of 128 inputs; 16-bit activations
  (format ``pack-quantized``, eight int4 values per int32).

Methods: ``rtn`` (default, data-free round-to-nearest with min-max scales) or ``gptq``
(``calibrate=`` a problem set): layer by layer, the inputs of every linear layer over the
calibration problems give a Hessian ``H = 2 X^T X``, and each weight column is rounded in
turn with the error spread over the columns not yet rounded (Frantar et al., GPTQ), using
the same scales as RTN. ``llmcompressor`` is not used: its pins conflict with vLLM's, so the
format is written with the ``compressed-tensors`` package vLLM already installs.

The output sits in the model cache beside the unquantized model
(``<cache>/models/<name>@<scheme>-<method>``), written to a temp dir under a file lock and
renamed into place, with ``ttscale-model.json`` recording the source sha256, scheme, method,
calibration data and tool versions. ``resolve_model("<name>@w8a8")`` finds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ttscale.engine.models import (
    check_scheme,
    fingerprint,
    is_complete,
    resolve_model,
    source_sha256,
    variant_dir,
)
from ttscale.engine.profile import variant_support
from ttscale.errors import ConfigError, ModelError

__all__ = ["QuantizeOptions", "quantize"]

log = logging.getLogger(__name__)

_MANIFEST = "ttscale-model.json"
_PRESET = {"w8a8": "W8A8", "w4a16": "W4A16"}


@dataclass(frozen=True, slots=True)
class QuantizeOptions:
    """GPTQ calibration settings (ignored by ``rtn``)."""

    num_samples: int = 32
    """Calibration problems (rendered with their reference solution when present)."""
    max_length: int = 512
    """Tokens per calibration sample."""
    damp: float = 0.01
    """Hessian dampening, as a fraction of its mean diagonal."""
    block_size: int = 128
    """Columns rounded per lazy-batch block."""


# -- calibration data --------------------------------------------------------------------------
def _calibration_path(dataset: str) -> Path:
    """A JSONL path, or a bundled set name (``math_train200``: the MATH-train calibration split)."""
    path = Path(dataset).expanduser()
    if path.is_file():
        return path
    name = dataset.removesuffix(".jsonl")
    here = Path(__file__).resolve().parent
    for cand in (
        here.parent / "evals" / "data" / f"{name}.jsonl",  # source checkout
        here / "evals" / "data" / f"{name}.jsonl",  # installed subpackage
        here.parent / "evals" / f"{name}.jsonl",
        here.parent.parent / "shared" / "data" / f"{name}.jsonl",
    ):
        if cand.is_file():
            return cand
    raise ConfigError(
        f"calibration set {dataset!r} is neither a JSONL file nor a bundled set; fix: pass a "
        f"path to a JSONL file with a 'problem' field per line, or 'math_train200'"
    )


def _calibration_texts(dataset: str, tokenizer: Any, n: int) -> tuple[list[str], str]:
    from ttscale.types import DEFAULT_SYSTEM_PROMPT

    path = _calibration_path(dataset)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if isinstance(r, dict) and r.get("problem")]
    if not rows:
        raise ConfigError(f"calibration set {path} has no rows with a 'problem' field")
    texts = []
    for r in rows[:n]:
        msgs = [
            {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
            {"role": "user", "content": r["problem"]},
        ]
        if r.get("solution"):
            msgs.append({"role": "assistant", "content": r["solution"]})
        try:
            texts.append(tokenizer.apply_chat_template(msgs, tokenize=False))
        except (ValueError, TypeError, AttributeError):
            texts.append(r["problem"] + "\n" + (r.get("solution") or ""))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return texts, digest


# -- the quantizer ---------------------------------------------------------------------------
def quantize(
    model: str | os.PathLike[str] | None,
    scheme: str,
    *,
    calibrate: str | None = None,
    output: str | os.PathLike[str] | None = None,
    options: QuantizeOptions | None = None,
    allow_unsupported: bool = False,
    force: bool = False,
) -> Path:
    """Quantize ``model`` to ``scheme`` and return the output directory (cached).

    Args:
        model: Embedded model name, local HF model directory, or ``None`` (default model).
        scheme: ``w8a8`` or ``w4a16``.
        calibrate: Problem set for GPTQ (a JSONL path or ``math_train200``); ``None`` = RTN.
        output: Write here instead of the cache.
        options: GPTQ settings.
        allow_unsupported: Write a scheme this host's engine cannot serve (for another host).
        force: Rebuild even when a cached variant of the same source exists.

    Raises:
        ConfigError: Unknown scheme, bad calibration set, or a scheme this host cannot serve
            (without ``allow_unsupported``).
        ModelError: The model is missing, or compressed-tensors/transformers are not installed.
    """
    method = "gptq" if calibrate else "rtn"
    check_scheme(scheme, method)
    if not allow_unsupported and (why := variant_support(scheme)) is not None:
        raise ConfigError(
            f"{why}; fix: use --scheme w8a8 on this host, or pass --allow-unsupported to write "
            f"the checkpoint for an AVX-512 or GPU host"
        )
    opts = options or QuantizeOptions()
    src = resolve_model(model)
    target = Path(output).expanduser() if output is not None else variant_dir(model, scheme, method)
    source_print = fingerprint(src)
    wanted = {"scheme": scheme, "method": method, "dataset": calibrate}
    if calibrate:
        wanted["options"] = asdict(opts)
    if not force and _cached(target, source_print, wanted):
        log.info("quantized variant cached at %s", target)
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not force and _cached(target, source_print, wanted):
            return target
        t0 = time.perf_counter()
        digest = source_sha256(src)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tmp-q-") as tmp:
            staged = Path(tmp) / "out"
            record = _quantize_to(src, staged, scheme, calibrate, opts)
            manifest = {
                "name": target.name,
                "source": str(src),
                "source_sha256": digest,
                "source_fingerprint": source_print,
                "scheme": scheme,
                "method": method,
                "format": "compressed-tensors",
                "request": wanted,
                **record,
                "quantize_seconds": round(time.perf_counter() - t0, 1),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            manifest["sha256"] = source_sha256(staged)
            (staged / _MANIFEST).write_text(json.dumps(manifest, indent=2))
            if target.exists():
                shutil.rmtree(target)
            staged.rename(target)  # atomic: a half-written variant is never seen
    return target


def _cached(target: Path, source_print: Any, wanted: dict[str, Any]) -> bool:
    """A complete variant built from the same source files with the same request."""
    if not is_complete(target):
        return False
    try:
        m = json.loads((target / _MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return m.get("source_fingerprint") == source_print and m.get("request") == wanted


def _import_stack() -> tuple[Any, Any, Any]:
    try:
        import compressed_tensors
        import torch
        import transformers
    except ImportError as exc:
        raise ModelError(
            f"quantizing needs torch, transformers and compressed-tensors ({exc}); "
            f"fix: pip install 'ttscale[quantize]'"
        ) from None
    return torch, transformers, compressed_tensors


def _quantize_to(
    src: Path, out: Path, scheme: str, calibrate: str | None, opts: QuantizeOptions
) -> dict[str, Any]:
    torch, transformers, ct = _import_stack()
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        QuantizationStatus,
        apply_quantization_config,
        preset_name_to_scheme,
    )
    from compressed_tensors.quantization.utils import is_module_quantized
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model.eval()
    calibration: dict[str, Any] = {"dataset": None}
    if calibrate:
        texts, data_sha = _calibration_texts(calibrate, tok, opts.num_samples)
        with torch.no_grad():
            stats = _gptq(model, tok, texts, scheme, opts)
        calibration = {
            "dataset": calibrate,
            "dataset_sha256": data_sha,
            "samples": len(texts),
            "max_length": opts.max_length,
            "damp": opts.damp,
            **stats,
        }
    qconfig = QuantizationConfig(
        config_groups={"group_0": preset_name_to_scheme(_PRESET[scheme], ["Linear"])},
        ignore=["lm_head"],
    )
    apply_quantization_config(model, qconfig)
    n_layers = 0
    with torch.no_grad():
        for module in model.modules():
            if not is_module_quantized(module):
                continue
            fixed = getattr(module, "_gptq_qparams", None)  # GPTQ rounded onto these scales
            scale, zp = fixed or _weight_qparams(module.weight, module.quantization_scheme.weights)
            module.weight_scale.data.copy_(scale)
            if hasattr(module, "weight_zero_point"):
                module.weight_zero_point.data.copy_(zp)
            module.quantization_status = QuantizationStatus.FROZEN
            n_layers += 1
    compressor = ModelCompressor.from_pretrained_model(model)
    compressor.compress_model(model)
    model.save_pretrained(out)
    compressor.update_config(str(out))
    tok.save_pretrained(out)
    return {
        "quantized_linear_layers": n_layers,
        "ignored": ["lm_head"],
        "calibration": calibration,
        "tools": {
            "compressed-tensors": ct.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "ttscale": _ttscale_version(),
        },
    }


def _ttscale_version() -> str:
    from importlib.metadata import version

    return version("ttscale")


def _weight_qparams(weight: Any, args: Any) -> tuple[Any, Any]:
    """Min-max scales (and zero points) for a weight: per output channel or per group."""
    from compressed_tensors.quantization.utils import calculate_qparams

    w = weight.detach().float()
    if args.strategy == "channel":
        lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
    elif args.strategy == "group":
        g = args.group_size
        if w.shape[1] % g:
            raise ConfigError(
                f"a linear layer has {w.shape[1]} inputs, not a multiple of the group size {g}; "
                f"fix: use --scheme w8a8 for this model"
            )
        grouped = w.reshape(w.shape[0], -1, g)
        lo, hi = grouped.amin(-1), grouped.amax(-1)
    else:  # pragma: no cover - only the two presets above are used
        raise ConfigError(f"unsupported weight strategy {args.strategy!r}")
    return calculate_qparams(lo, hi, args)


# -- GPTQ --------------------------------------------------------------------------------------
def _gptq(
    model: Any, tok: Any, texts: list[str], scheme: str, opts: QuantizeOptions
) -> dict[str, Any]:
    """Sequential GPTQ over the decoder layers; updates Linear weights in place (fp32)."""
    import torch
    from compressed_tensors.quantization import preset_name_to_scheme

    args = preset_name_to_scheme(_PRESET[scheme], ["Linear"]).weights
    layers = _decoder_layers(model)
    inputs = _capture_layer_inputs(model, layers[0], tok, texts, opts.max_length)
    losses: list[float] = []
    for layer in layers:
        linears = {n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
        hessians = {n: _Hessian(m.in_features) for n, m in linears.items()}
        handles = [m.register_forward_hook(hessians[n].hook) for n, m in linears.items()]
        for a, kw in inputs:
            layer(*a, **kw)
        for h in handles:
            h.remove()
        for name, m in linears.items():
            losses.append(_gptq_linear(m, hessians.pop(name).H, args, opts))
        inputs = [((_first(layer(*a, **kw)), *a[1:]), kw) for a, kw in inputs]
    return {"gptq_mean_loss": float(sum(losses) / max(len(losses), 1)), "gptq_layers": len(losses)}


class _Hessian:
    """Running ``2 X^T X / n`` over the rows fed to a Linear (a forward hook)."""

    def __init__(self, cols: int) -> None:
        import torch

        self.H = torch.zeros(cols, cols)
        self.n = 0

    def hook(self, _m: Any, inp: tuple[Any, ...], _out: Any) -> None:
        x = inp[0].detach().reshape(-1, inp[0].shape[-1]).float()
        self.H.mul_(self.n / (self.n + x.shape[0]))
        self.n += x.shape[0]
        x = x * (2.0 / self.n) ** 0.5
        self.H.addmm_(x.T, x)


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, tuple) else out


def _decoder_layers(model: Any) -> Any:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ConfigError(
            "GPTQ calibration supports decoder models with model.layers (Llama/Qwen2 family); "
            "fix: quantize without --calibrate (round-to-nearest)"
        )
    return layers


class _Captured(Exception):
    pass


def _capture_layer_inputs(
    model: Any, first: Any, tok: Any, texts: list[str], max_length: int
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Run the model up to its first decoder layer for each sample; keep that layer's args."""
    captured: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def pre(_m: Any, a: tuple[Any, ...], kw: dict[str, Any]) -> None:
        captured.append(
            (a, {k: v for k, v in kw.items() if k not in ("past_key_values", "past_key_value")})
        )
        raise _Captured

    handle = first.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        for text in texts:
            ids = tok(text, return_tensors="pt", truncation=True, max_length=max_length)
            try:
                model(input_ids=ids["input_ids"], use_cache=False)
            except _Captured:
                pass
    finally:
        handle.remove()
    if len(captured) != len(texts):
        raise ModelError("GPTQ calibration could not capture the first decoder layer's inputs")
    # hidden_states may come as a keyword in some transformers versions: make it positional.
    fixed = []
    for a, kw in captured:
        if not a and "hidden_states" in kw:
            kw = dict(kw)
            a = (kw.pop("hidden_states"),)
        fixed.append((a, kw))
    return fixed


def _gptq_linear(module: Any, H: Any, args: Any, opts: QuantizeOptions) -> float:
    """GPTQ for one Linear with static RTN scales; returns the mean squared-error proxy."""
    import torch
    from compressed_tensors.quantization.utils import calculate_range

    qmin, qmax = (float(v) for v in calculate_range(args, "cpu"))
    W = module.weight.data.clone().float()
    scale, zp = _weight_qparams(W, args)
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = opts.damp * torch.mean(torch.diag(H))
    H += torch.eye(cols) * damp
    L = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(L)
    Hinv = torch.linalg.cholesky(Hinv, upper=True)
    group = args.group_size if args.strategy == "group" else None
    Q = torch.zeros_like(W)
    losses = torch.zeros(W.shape[0])
    for i1 in range(0, cols, opts.block_size):
        i2 = min(i1 + opts.block_size, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        for i in range(i2 - i1):
            col = i1 + i
            w, d = W1[:, i], Hinv1[i, i]
            if group is None:
                s, z = scale, zp
            else:
                s, z = (
                    scale[:, col // group : col // group + 1],
                    zp[:, col // group : col // group + 1],
                )
            s, z = s.flatten(), z.flatten().float()
            q = (torch.clamp(torch.round(w / s) + z, qmin, qmax) - z) * s
            Q1[:, i] = q
            losses += (w - q) ** 2 / d**2 / 2
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    module.weight.data.copy_(Q.to(module.weight.dtype))
    # Re-deriving min-max scales from Q would move the grid and re-round every weight.
    module._gptq_qparams = (scale, zp)
    return float(losses.mean())
