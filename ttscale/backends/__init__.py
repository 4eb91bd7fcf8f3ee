"""Generation backends: the only place ttscale touches an engine.

Engines are imported lazily inside constructors, so ``import ttscale`` stays light and the
scripted backend works without vLLM, transformers or openai installed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ttscale.backends.batching import CoalescingGenerator
from ttscale.backends.scripted import ScriptedBackend, toy_arithmetic
from ttscale.backends.wrapper import GeneratorWrapper
from ttscale.errors import ConfigError

if TYPE_CHECKING:
    from ttscale.protocols import Generator

log = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "CoalescingGenerator",
    "GeneratorWrapper",
    "ScriptedBackend",
    "make_backend",
    "toy_arithmetic",
]

BACKENDS = ("auto", "vllm", "hf", "openai", "scripted", "replay")


def make_backend(name: str, **options: Any) -> Generator:
    """Build a backend by name: ``vllm`` (embedded default), ``hf``, ``openai``, ``scripted``,
    ``replay`` (a sample pool, ``pool=DIR``), or ``auto``: vLLM when it imports, else
    transformers (logged), as on hosts without vLLM.

    Args:
        name: One of ``BACKENDS``.
        **options: Constructor arguments (``model=``, ``base_url=``, ``dtype=``...).

    Raises:
        ConfigError: Unknown name.
    """
    if name == "auto":
        from ttscale.errors import BackendUnavailable

        try:
            return make_backend("vllm", **options)
        except BackendUnavailable as exc:
            log.warning("vLLM unavailable (%s); using the transformers backend", exc)
            if "sparse" in options:  # the same block top-k decode, on the HF kernels
                from ttscale.kernels.config import sparse_config

                options["sparse_attention"] = sparse_config(options.pop("sparse"))
            return make_backend("hf", **options)
    if name == "vllm":
        from ttscale.backends.vllm import VLLMBackend

        return VLLMBackend(**options)
    if name == "hf":
        from ttscale.backends.hf import HFBackend

        return HFBackend(**options)
    if name == "openai":
        from ttscale.backends.openai import OpenAIBackend

        return OpenAIBackend(**options)
    if name == "scripted":
        return ScriptedBackend(**options)
    if name == "replay":
        return _replay(**options)
    raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def _replay(
    pool: Any = None, order_seed: int | None = None, live: Any = None, **live_options: Any
) -> Generator:
    """``make_backend("replay", pool=DIR_or_Pool, order_seed=...)``: serve a sample pool, or
    several (a list: e.g. a chain-of-thought pool and a program pool for ``hybrid``).

    ``live`` (a backend name, e.g. ``"vllm"``, built with ``live_options``; or a
    ``Generator``) extends the replay: what no pool holds is generated live, batched across
    concurrent problems (``ReplayGenerator``, CLI: ``-B live=vllm``)."""
    from ttscale.pools import Pool, ReplayGenerator, load_pool

    if live is None and live_options:
        raise ConfigError(
            f"replay backend options {sorted(live_options)} are for a live backend: add "
            "live=NAME (CLI: -B live=vllm), or drop them"
        )

    if pool is None or (isinstance(pool, list | tuple) and not pool):
        raise ConfigError(
            "the replay backend needs a sample pool: pool=DIR (CLI: --backend replay --pool DIR; "
            "build one with `ttscale pool build`)"
        )
    pools = [
        p if isinstance(p, Pool) else load_pool(p)
        for p in (pool if isinstance(pool, list | tuple) else [pool])
    ]
    if isinstance(live, str):
        if live == "replay":
            raise ConfigError("live=replay: the live backend must be an engine (e.g. vllm)")
        live = CoalescingGenerator(make_backend(live, **live_options))
    gen = ReplayGenerator(pools[0], order_seed=order_seed, also=pools[1:], live=live)
    gen.check_live()
    return gen


def __getattr__(name: str) -> Any:
    """Lazy access to engine classes: ``from ttscale.backends import VLLMBackend``."""
    if name == "VLLMBackend":
        from ttscale.backends.vllm import VLLMBackend

        return VLLMBackend
    if name == "HFBackend":
        from ttscale.backends.hf import HFBackend

        return HFBackend
    if name == "OpenAIBackend":
        from ttscale.backends.openai import OpenAIBackend

        return OpenAIBackend
    raise AttributeError(name)
