"""HFBackend: transformers ``generate`` on a local model (fallback engine; base for kernel work).

Requests that share sampling settings run as one padded ``generate`` call (each prompt
repeated ``n`` times, left-padded). There is no prefix cache, so ``cached_tokens`` is 0.
Seeding is per engine call (``torch.manual_seed``), so samples depend on batch layout.

Long rollouts: ``HFBackend(sparse_attention=TopKBlocks(...))`` runs decode steps whose KV
length passes ``TopKBlocks.threshold`` with block top-k sparse attention
(``ttscale.kernels``); prefill and short contexts stay dense. ``model_spec.sparse_decode``
carries the setting so the ledger prices the reduced KV reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ttscale.backends.common import render_with_tokenizer, spec_from_dir
from ttscale.engine.models import resolve_model
from ttscale.errors import BackendUnavailable, ConfigError, ContextLengthError
from ttscale.host import cpu_dtype, host_info
from ttscale.types import (
    Completion,
    GenerationOutput,
    GenerationRequest,
    Problem,
    topk_confidence,
)

if TYPE_CHECKING:
    from ttscale.kernels import TopKBlocks

__all__ = ["HFBackend"]

log = logging.getLogger(__name__)


class HFBackend:
    """transformers engine.

    Args:
        model: Embedded model name, local HF model directory, or ``None`` (default model).
        dtype: ``"auto"``: bf16 on GPU or CPUs with native bf16, else fp32.
        seed: Base seed; each call seeds with ``seed`` xor the first request's seed.
        max_model_len: Context window enforced before generating (raise it for long
            rollouts, up to the model's ``max_position_embeddings``).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        sparse_attention: ``TopKBlocks(...)`` to decode long contexts with block top-k sparse
            attention (C++ kernel on CPU, Triton on CUDA); ``None`` keeps dense ``sdpa``.
    """

    name = "hf"
    seeding = "engine"

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        dtype: str = "auto",
        seed: int = 0,
        max_model_len: int = 4096,
        device: str = "auto",
        sparse_attention: TopKBlocks | None = None,
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise BackendUnavailable(
                f"transformers/torch missing ({exc}); fix: pip install 'ttscale[hf]'"
            ) from None
        self._torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bfloat16" if device == "cuda" else cpu_dtype()
        path = resolve_model(model, dtype=dtype)  # embedded weights stored in this dtype
        from ttscale.engine.profile import choose_profile

        self.engine_profile = choose_profile(dtype=dtype, cuda=None if device == "cpu" else False)
        self.device, self.dtype, self.model_path = device, dtype, path
        self.max_model_len = max_model_len
        self.model_spec = spec_from_dir(path, dtype)
        self._seed = seed
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self._tokenizer.padding_side = "left"
        if self._tokenizer.pad_token_id is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        self._model.to(device).eval()
        self._lock = threading.Lock()
        self.sparse_attention = sparse_attention
        self._sparse = None
        if sparse_attention is not None:
            from ttscale.kernels.hf_attention import install

            self._sparse = install(self._model, sparse_attention)
            if self.model_spec is not None:
                self.model_spec = dataclasses.replace(
                    self.model_spec, sparse_decode=sparse_attention.cost
                )

    def render(self, problem: Problem) -> tuple[int, ...]:
        return render_with_tokenizer(self._tokenizer, problem)

    def encode(self, text: str) -> tuple[int, ...]:
        return tuple(self._tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def profile(self) -> dict[str, Any]:
        import transformers

        return {
            "backend": "hf",
            "model": str(self.model_path),
            "dtype": self.dtype,
            "device": self.device,
            "seed": self._seed,
            "seeding": self.seeding,
            "isa": host_info().isa,
            "transformers": transformers.__version__,
            "engine_profile": self.engine_profile.to_dict(),
            **self._sparse_profile(),
        }

    def _sparse_profile(self) -> dict[str, Any]:
        if self._sparse is None:
            return {}
        return {
            "sparse_attention": dataclasses.asdict(self._sparse.cfg),
            "sparse_layer_calls": self._sparse.sparse_calls,
            "dense_decode_layer_calls": self._sparse.dense_decode_calls,
        }

    async def close(self) -> None:
        self._model = None

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        for r in requests:
            if len(r.prompt_token_ids) + r.max_tokens > self.max_model_len:
                raise ContextLengthError(
                    f"prompt of {len(r.prompt_token_ids)} tokens + max_tokens={r.max_tokens} "
                    f"exceeds max_model_len={self.max_model_len}; lower max_tokens"
                )
            if r.n < 1 or r.max_tokens < 1:
                raise ConfigError(f"n={r.n} and max_tokens={r.max_tokens} must be >= 1")
        return await asyncio.to_thread(self._generate_sync, requests)

    def _generate_sync(self, requests: list[GenerationRequest]) -> list[GenerationOutput]:
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, r in enumerate(requests):
            key = (r.max_tokens, r.temperature, r.top_p, r.stop, r.include_stop, r.logprobs)
            groups.setdefault(key, []).append(i)
        results: list[list[Completion]] = [[] for _ in requests]
        with self._lock, self._torch.inference_mode():
            for idx in groups.values():
                group = [requests[i] for i in idx]
                if self._sparse is not None:
                    self._sparse.reset()
                for i, comps in zip(idx, self._generate_group(group), strict=True):
                    results[i] = comps
            prompt_lps = [
                self._prompt_logprobs(r.prompt_token_ids) if r.prompt_logprobs else None
                for r in requests
            ]
        return [
            GenerationOutput(tuple(c), prompt_tokens=len(r.prompt_token_ids), prompt_logprobs=lp)
            for r, c, lp in zip(requests, results, prompt_lps, strict=True)
        ]

    def _generate_group(self, group: list[GenerationRequest]) -> list[list[Completion]]:
        torch, tok = self._torch, self._tokenizer
        r0 = group[0]
        rows = [r.prompt_token_ids for r in group for _ in range(r.n)]
        width = max(len(x) for x in rows)
        pad = tok.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + list(x) for x in rows])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in rows])
        torch.manual_seed(self._seed ^ (r0.seed or 0))
        sample = r0.temperature > 0
        extra: dict[str, Any] = {}
        if self._sparse is not None:
            from ttscale.kernels.hf_attention import preallocated_cache

            extra["past_key_values"] = preallocated_cache(self._model, width + r0.max_tokens)
        out = self._model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=mask.to(self.device),
            max_new_tokens=r0.max_tokens,
            do_sample=sample,
            temperature=r0.temperature if sample else None,
            top_p=r0.top_p if sample else None,
            top_k=None,
            stop_strings=list(r0.stop) or None,
            tokenizer=tok if r0.stop else None,
            pad_token_id=pad,
            return_dict_in_generate=True,
            output_logits=r0.logprobs is not None,
            **extra,
        )
        new = out.sequences[:, width:].tolist()
        logp = None
        if r0.logprobs is not None:
            logp = torch.stack(out.logits, dim=1).float().log_softmax(-1)
        eos = set(self._eos_ids())
        comps: list[Completion] = []
        for row, ids in enumerate(new):
            comps.append(self._finish(r0, ids, eos, None if logp is None else logp[row]))
        result, k = [], 0
        for r in group:
            result.append(comps[k : k + r.n])
            k += r.n
        return result

    def _finish(
        self, req: GenerationRequest, ids: list[int], eos: set[int], logp: Any
    ) -> Completion:
        """Trim padding/EOS and stop strings; decide the finish reason like vLLM."""
        finish = "length"
        for j, t in enumerate(ids):
            if t in eos:
                ids, finish = ids[: j + 1], "stop"
                break
        dec = lambda j: self._tokenizer.decode(ids[:j], skip_special_tokens=True)  # noqa: E731
        text = dec(len(ids))
        if req.stop and any(s in text for s in req.stop):
            # "prefix contains a stop string" is monotone in j: binary-search the first token.
            lo, hi = 1, len(ids)
            while lo < hi:
                mid = (lo + hi) // 2
                if any(s in dec(mid) for s in req.stop):
                    hi = mid
                else:
                    lo = mid + 1
            piece = dec(lo)
            i, s = min((piece.find(s), s) for s in req.stop if s in piece)
            ids, finish = ids[:lo], "stop"
            text = piece[: i + len(s)] if req.include_stop else piece[:i]
        logprobs = top = conf = None
        if logp is not None:
            chosen = [float(logp[j, t]) for j, t in enumerate(ids)]
            logprobs = tuple(chosen)
            k = max(req.logprobs or 0, 1)
            tops = [logp[j].topk(k) for j in range(len(ids))]
            top = tuple(
                {self._tokenizer.decode([int(t)]): float(v) for v, t in zip(*tk, strict=True)}
                for tk in tops
            )
            conf = tuple(topk_confidence(tk[0].tolist()) for tk in tops)
        return Completion(text, tuple(ids), finish, logprobs, top, confidence=conf)  # type: ignore[arg-type]

    def _prompt_logprobs(self, ids: tuple[int, ...]) -> tuple[float | None, ...]:
        torch = self._torch
        x = torch.tensor([list(ids)], device=self.device)
        logits = self._model(input_ids=x).logits[0].float().log_softmax(-1)
        values = logits[:-1].gather(1, x[0, 1:, None])[:, 0].tolist()
        return (None, *values)

    def _eos_ids(self) -> list[int]:
        cfg = self._model.generation_config.eos_token_id
        ids = cfg if isinstance(cfg, list) else [cfg]
        return [int(i) for i in ids if i is not None]
