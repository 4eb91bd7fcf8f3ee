"""Process reward model (PRM) adapters for public checkpoints, run through transformers.

Three input layouts cover the open math PRMs:

- ``QwenPRM`` (Qwen2.5-Math-PRM-7B/72B; Zhang et al. 2025): the solution is the assistant
  turn of the chat template with ``<extra_0>`` after every step; a 2-class token head gives
  P(positive) = softmax(logits)[1] at each separator.
- ``MathShepherdPRM`` (peiyi9979/math-shepherd-mistral-7b-prm; Wang et al. 2024):
  ``"{question} Step 1: ... ки\\nStep 2: ... ки"``; at each ``ки`` tag the causal LM's next
  token logits restricted to ``+``/``-`` give P(+).
- ``RLHFlowPRM`` (RLHFlow/Llama3.1-8B-PRM-Deepseek-Data; Xiong et al. 2024): a multi-turn
  chat where step ``k`` is a user turn (the first prefixed by the question) and the
  assistant answers ``+``; P(+) = softmax over ``+``/``-`` of the logits that predict each
  assistant ``+``.

Layouts follow the model cards and huggingface/search-and-learn
(https://github.com/huggingface/search-and-learn/blob/main/src/sal/models/reward_models.py,
Apache-2.0), except that every token id is looked up from the tokenizer and every scored
position is located from the character offsets of the text this module built, so a step
containing a tag string cannot shift the alignment.

Batching: candidates are sorted by length and run ``batch_size`` at a time, right-padded
with an attention mask. The models are causal, so padding after a sequence cannot change its
scores (tested: a candidate scores the same alone or in a batch). A candidate longer than
``max_length`` tokens is cut there; its steps before the cut are scored exactly and the rest
score ``NEUTRAL`` (0.5) with a warning, or raise with ``overflow="error"``.

Compute: the forward passes run here, not through a ``Generator``, so they do not appear in
the ledger's engine figures; strategies count the call with ``Ledger.record_verifier``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from ttscale.budget import Ledger
from ttscale.errors import BackendUnavailable, ConfigError, ModelError, VerifierError
from ttscale.types import DEFAULT_SYSTEM_PROMPT, Problem
from ttscale.verifiers.base import check_scores

__all__ = [
    "MathShepherdPRM",
    "NEUTRAL",
    "PRM_STYLES",
    "PRMInput",
    "QwenPRM",
    "RLHFlowPRM",
    "TransformersPRM",
    "VLLMQwenPRM",
    "detect_prm_style",
]

log = logging.getLogger(__name__)

NEUTRAL = 0.5
"""Score of a step past ``max_length`` (not seen by the model)."""

# Model types whose causal-LM logits are exactly lm_head(decoder(x)) (no soft-capping or
# scaling), so only the two candidate token rows need projecting.
_PLAIN_LM_HEAD = frozenset({"llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen2_moe"})


@dataclass(frozen=True, slots=True)
class PRMInput:
    """One candidate laid out for a PRM."""

    text: str
    """Exactly the text that is tokenized."""
    char_positions: tuple[int, ...]
    """Per step: the character whose token is scored (before the adapter's shift)."""


class TransformersPRM:
    """Shared machinery of the adapters: tokenize with offsets, batch, gather, score.

    Subclasses define ``build`` (the text and the scored characters) and ``_probs`` (the
    head). Construct with ``from_pretrained`` or from an already loaded model and tokenizer.

    Args:
        model: A transformers model (token classifier or causal LM, per subclass).
        tokenizer: Its fast tokenizer (offsets are needed for exact alignment).
        device: Torch device the model is on.
        batch_size: Candidates per forward pass.
        max_length: Longest input in tokens; ``None`` reads ``max_position_embeddings``.
        overflow: Steps past ``max_length`` score ``NEUTRAL`` or raise ``VerifierError``.
        name: Verifier name in traces.
    """

    style: ClassVar[str] = ""
    add_special_tokens: ClassVar[bool] = False
    """Whether the tokenizer adds BOS etc. (chat templates already contain them)."""
    shift: ClassVar[int] = 0
    """Logits are read at the located token plus this (-1: the token that predicts it)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        device: str = "cpu",
        batch_size: int = 8,
        max_length: int | None = None,
        overflow: Literal["neutral", "error"] = "neutral",
        name: str | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be a positive integer")
        if overflow not in ("neutral", "error"):
            raise ConfigError(f"overflow={overflow!r}; use 'neutral' or 'error'")
        if not getattr(tokenizer, "is_fast", True):
            raise ModelError(
                f"{type(tokenizer).__name__} is a slow tokenizer; PRM adapters need a fast "
                f"tokenizer (tokenizer.json) for character offsets"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_length = int(max_length or limit or 4096)
        self.overflow = overflow
        self.name = name or f"{self.style}_prm"
        self.pad_id = _pad_id(tokenizer)
        self._lock = threading.Lock()  # one forward at a time when called from threads

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        max_length: int | None = None,
        overflow: Literal["neutral", "error"] = "neutral",
        trust_remote_code: bool = False,
        name: str | None = None,
        **kwargs: Any,
    ) -> TransformersPRM:
        """Load a checkpoint directory (no hub access: ``path`` must exist locally).

        Args:
            path: Local directory with config, weights and tokenizer.
            device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
            dtype: ``"auto"``: bf16 on GPU or CPUs with native bf16, else fp32.
            batch_size: Candidates per forward pass.
            max_length: Longest input in tokens.
            overflow: Policy for steps past ``max_length``.
            trust_remote_code: Allow model code shipped with the checkpoint (the official
                Qwen2.5-Math-PRM head is defined that way).
            name: Verifier name in traces.
            **kwargs: Adapter options (e.g. ``good_token`` for ``MathShepherdPRM``).

        Raises:
            ModelError: Missing directory, missing head weights, or a tokenizer without the
                layout's special tokens.
            BackendUnavailable: transformers/torch are not installed.
        """
        torch, transformers = _import_torch()
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise ModelError(
                f"no config.json in {folder}; PRM adapters load local checkpoint directories "
                f"only (no model hub is reachable): download or copy the model there first"
            )
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            from ttscale.host import cpu_dtype

            dtype = "bfloat16" if device.startswith("cuda") else cpu_dtype()
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        cls._check_tokenizer(tokenizer, **kwargs)  # fail before loading weights
        model = cls._load_model(folder, getattr(torch, dtype), trust_remote_code)
        model.to(device).eval()
        log.info("loaded %s PRM from %s (%s, %s)", cls.style, folder, device, dtype)
        return cls(
            model,
            tokenizer,
            device=device,
            batch_size=batch_size,
            max_length=max_length,
            overflow=overflow,
            name=name,
            **kwargs,
        )

    @classmethod
    def _load_model(cls, folder: Path, dtype: Any, trust_remote_code: bool) -> Any:
        _, transformers = _import_torch()
        return _checked_load(transformers.AutoModelForCausalLM, folder, dtype)

    @classmethod
    def _check_tokenizer(cls, tokenizer: Any, **options: Any) -> None:
        """Raise ``ModelError`` if the tokenizer lacks the layout's tokens."""

    # -- layout (subclasses) ---------------------------------------------------------------
    def build(self, problem: Problem, steps: Sequence[str]) -> PRMInput:
        """Text and scored characters of one candidate."""
        raise NotImplementedError

    def _probs(self, input_ids: Any, attention_mask: Any, rows: Any, cols: Any) -> Any:
        """P(step correct) at ``(rows, cols)`` of a padded batch (1-D float tensor)."""
        raise NotImplementedError

    def _check_token(self, token_id: int, index: int) -> None:
        """Raise if the located token is not the one the layout expects."""

    # -- scoring ---------------------------------------------------------------------------
    def encode(self, problem: Problem, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """Token ids of one candidate and the logit position scoring each step."""
        item = self.build(problem, steps)
        enc = self.tokenizer(
            item.text, add_special_tokens=self.add_special_tokens, return_offsets_mapping=True
        )
        ids = [int(t) for t in enc["input_ids"]]
        offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
        positions = []
        for c in item.char_positions:
            index = _token_at(offsets, c)
            if index is None:
                raise ModelError(
                    f"{self.name}: no token covers character {c} of the PRM input; the "
                    f"tokenizer's offsets do not match its text"
                )
            self._check_token(ids[index], index)
            positions.append(index + self.shift)
        return ids, positions

    async def score(
        self,
        problems: Sequence[Problem],
        step_lists: Sequence[Sequence[str]],
        *,
        ledger: Ledger | None = None,
    ) -> list[list[float]]:
        """Per-step P(correct) for every candidate (``asyncio.to_thread`` around the model).

        A candidate with no steps scores ``[]``. ``ledger`` is accepted for the protocol;
        PRM forward passes do not go through a ``Generator``.
        """
        return await asyncio.to_thread(self.score_sync, problems, step_lists)

    def score_sync(
        self, problems: Sequence[Problem], step_lists: Sequence[Sequence[str]]
    ) -> list[list[float]]:
        """Blocking ``score``."""
        if len(problems) != len(step_lists):
            raise ConfigError(
                f"got {len(problems)} problems for {len(step_lists)} step lists; pass one "
                f"problem per candidate"
            )
        scores: list[list[float]] = [[] for _ in step_lists]
        jobs: list[tuple[int, list[int], list[int]]] = []  # (candidate, ids, live positions)
        for i, (problem, steps) in enumerate(zip(problems, step_lists, strict=True)):
            if not steps:
                continue
            ids, positions = self.encode(problem, steps)
            if len(ids) > self.max_length:
                if self.overflow == "error":
                    raise VerifierError(
                        f"{self.name}: candidate {i} has {len(ids)} tokens, over max_length="
                        f"{self.max_length}; raise max_length or use overflow='neutral'"
                    )
                log.warning(
                    "%s: candidate %d has %d tokens > max_length %d; later steps score %.1f",
                    self.name,
                    i,
                    len(ids),
                    self.max_length,
                    NEUTRAL,
                )
                ids = ids[: self.max_length]
            scores[i] = [NEUTRAL] * len(positions)
            live = [p for p in positions if p < len(ids)]
            if live:
                jobs.append((i, ids, live))
        jobs.sort(key=lambda j: -len(j[1]))  # similar lengths share a batch: less padding
        for b in range(0, len(jobs), self.batch_size):
            chunk = jobs[b : b + self.batch_size]
            with self._lock:
                probs = self._forward([ids for _, ids, _ in chunk], [p for _, _, p in chunk])
            for (i, _, live), row in zip(chunk, probs, strict=True):
                scores[i][: len(live)] = row  # live positions are a prefix (causal cut)
        return check_scores(self.name, scores, step_lists)

    def _forward(self, batch: list[list[int]], positions: list[list[int]]) -> list[list[float]]:
        torch, _ = _import_torch()
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, ids in enumerate(batch):
            input_ids[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[r, : len(ids)] = 1
        rows = torch.tensor([r for r, pos in enumerate(positions) for _ in pos], dtype=torch.long)
        cols = torch.tensor([p for pos in positions for p in pos], dtype=torch.long)
        with torch.inference_mode():
            probs = self._probs(
                input_ids.to(self.device),
                mask.to(self.device),
                rows.to(self.device),
                cols.to(self.device),
            )
        flat = probs.float().cpu().tolist()
        out, k = [], 0
        for pos in positions:
            out.append(flat[k : k + len(pos)])
            k += len(pos)
        return out


class QwenPRM(TransformersPRM):
    """Qwen2.5-Math-PRM layout: ``<extra_0>`` after each step, 2-class token head.

    Args:
        separator: The step separator token.
        positive_label: Class index of "correct" in the head (1 in the model card).
        default_system: System message when the problem has none.
        **kwargs: See ``TransformersPRM``.
    """

    style = "qwen"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        separator: str = "<extra_0>",
        positive_label: int = 1,
        default_system: str = DEFAULT_SYSTEM_PROMPT,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self.separator = separator
        self.separator_id = _single_token(tokenizer, separator, "step separator")
        self.positive_label = positive_label
        self.default_system = default_system

    @classmethod
    def _load_model(cls, folder: Path, dtype: Any, trust_remote_code: bool) -> Any:
        _, transformers = _import_torch()
        archs = _architectures(folder)
        if any("ProcessRewardModel" in a for a in archs):
            # The official checkpoints define their head (Linear-ReLU-Linear) in shipped code.
            if not trust_remote_code:
                raise ConfigError(
                    f"{folder} defines its PRM head in model code shipped with the checkpoint "
                    f"({archs[0]}); pass trust_remote_code=True if you trust it"
                )
            return transformers.AutoModel.from_pretrained(
                folder, dtype=dtype, trust_remote_code=True
            )
        return _checked_load(transformers.AutoModelForTokenClassification, folder, dtype)

    def build(self, problem: Problem, steps: Sequence[str]) -> PRMInput:
        sep = self.separator
        response = "".join(step + sep for step in steps)
        messages = [
            {"role": "system", "content": problem.system_prompt or self.default_system},
            {"role": "user", "content": problem.prompt},
            {"role": "assistant", "content": response},
        ]
        text = _render(self.tokenizer, messages, add_generation_prompt=False)
        base = text.rfind(response)
        if base == -1:
            raise ModelError(
                f"{self.name}: the chat template changed the response text; QwenPRM needs a "
                f"template that copies the assistant turn verbatim (Qwen2.5 does)"
            )
        positions, at = [], base
        for step in steps:
            at += len(step)
            positions.append(at)
            at += len(sep)
        return PRMInput(text, tuple(positions))

    @classmethod
    def _check_tokenizer(cls, tokenizer: Any, **options: Any) -> None:
        _single_token(tokenizer, options.get("separator", "<extra_0>"), "step separator")

    def _check_token(self, token_id: int, index: int) -> None:
        if token_id != self.separator_id:
            raise ModelError(
                f"{self.name}: token {index} is id {token_id}, not the separator "
                f"{self.separator!r} (id {self.separator_id}); the tokenizer splits it"
            )

    def _probs(self, input_ids: Any, attention_mask: Any, rows: Any, cols: Any) -> Any:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        logits = out.logits if hasattr(out, "logits") else out[0]
        return self._positive(logits[rows, cols])

    def _positive(self, picked: Any) -> Any:
        """P(positive) from head logits ``[n, num_labels]`` (softmax over the classes)."""
        torch, _ = _import_torch()
        if picked.shape[-1] <= self.positive_label:
            raise ModelError(
                f"{self.name}: the head has {picked.shape[-1]} classes; positive_label="
                f"{self.positive_label} needs at least {self.positive_label + 1}"
            )
        return torch.softmax(picked.float(), dim=-1)[:, self.positive_label]


class _PlusMinusPRM(TransformersPRM):
    """Causal-LM PRMs scored by P(good token) vs P(bad token) at a position."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        good_token: str = "+",
        bad_token: str = "-",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self.good_token, self.bad_token = good_token, bad_token
        self.good_id, self.bad_id = self._label_ids(tokenizer, good_token, bad_token)

    @classmethod
    def _check_tokenizer(cls, tokenizer: Any, **options: Any) -> None:
        cls._label_ids(tokenizer, options.get("good_token", "+"), options.get("bad_token", "-"))

    @staticmethod
    def _label_ids(tokenizer: Any, good: str, bad: str) -> tuple[int, int]:
        return (
            _single_token(tokenizer, good, "good label"),
            _single_token(tokenizer, bad, "bad label"),
        )

    def _probs(self, input_ids: Any, attention_mask: Any, rows: Any, cols: Any) -> Any:
        torch, _ = _import_torch()
        model = self.model
        head = model.get_output_embeddings()
        pair = [self.good_id, self.bad_id]
        if model.config.model_type in _PLAIN_LM_HEAD and head is not None:
            # lm_head on the scored positions only: same numbers, no [B, T, vocab] tensor.
            decoder = model.get_decoder()
            hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            picked = head(hidden[rows, cols])[:, pair]
        else:
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
            picked = logits[rows, cols][:, pair]
        return torch.softmax(picked.float(), dim=-1)[:, 0]


class MathShepherdPRM(_PlusMinusPRM):
    """Math-Shepherd layout: ``"{question} Step 1: ... ки\\nStep 2: ... ки"``.

    The label ids come from ``tokenizer.encode(f"{good} {bad}")`` as in the original code
    (so SentencePiece tokenizers get their ``▁+``/``▁-`` pieces).

    Args:
        step_tag: The tag closing every step.
        number_steps: Prefix steps with ``"Step i: "`` as in Math-Shepherd's training data.
        **kwargs: ``good_token``/``bad_token`` (labels of a correct/wrong step, default
            ``+``/``-``) and the options of ``TransformersPRM``.
    """

    style = "math_shepherd"
    add_special_tokens = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        step_tag: str = "ки",
        number_steps: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, tokenizer, **kwargs)
        if not step_tag:
            raise ConfigError("step_tag must be a non-empty string (Math-Shepherd uses 'ки')")
        self.step_tag = step_tag
        self.number_steps = number_steps

    @staticmethod
    def _label_ids(tokenizer: Any, good: str, bad: str) -> tuple[int, int]:
        ids = tokenizer.encode(f"{good} {bad}", add_special_tokens=False)
        if len(ids) != 2:
            raise ModelError(
                f"{good!r} and {bad!r} are not one token each in this tokenizer "
                f"(encode({good + ' ' + bad!r}) -> {ids}); pass good_token/bad_token that are"
            )
        return int(ids[0]), int(ids[1])

    def build(self, problem: Problem, steps: Sequence[str]) -> PRMInput:
        text, positions = f"{problem.prompt} ", []
        for j, step in enumerate(steps):
            body = f"Step {j + 1}: {step}" if self.number_steps else step
            text += f"{body} {self.step_tag}"
            positions.append(len(text) - 1)  # last character of the tag
            if j < len(steps) - 1:
                text += "\n"
        return PRMInput(text, tuple(positions))


class RLHFlowPRM(_PlusMinusPRM):
    """RLHFlow layout: each step a user turn, the assistant answering ``+``/``-``.

    Args:
        **kwargs: See ``TransformersPRM`` (``good_token``/``bad_token`` default ``+``/``-``).
    """

    style = "rlhflow"
    shift = -1

    def build(self, problem: Problem, steps: Sequence[str]) -> PRMInput:
        messages: list[dict[str, str]] = []
        starts = []
        for j, step in enumerate(steps):
            content = f"{problem.prompt} {step}" if j == 0 else step
            messages.append({"role": "user", "content": content})
            prefix = _render(self.tokenizer, messages, add_generation_prompt=True)
            starts.append((len(prefix), prefix))
            messages.append({"role": "assistant", "content": self.good_token})
        text = _render(self.tokenizer, messages, add_generation_prompt=False)
        good = self.good_token
        for at, prefix in starts:
            if not text.startswith(prefix) or text[at : at + len(good)] != good:
                raise ModelError(
                    f"{self.name}: the chat template does not render the conversation as a "
                    f"sequence of turns (prefix + '{self.good_token}' not found); RLHFlowPRM "
                    f"needs an append-only template such as Llama 3's"
                )
        return PRMInput(text, tuple(at for at, _ in starts))

    def _check_token(self, token_id: int, index: int) -> None:
        if token_id != self.good_id:
            raise ModelError(
                f"{self.name}: the assistant's {self.good_token!r} is token id {token_id}, "
                f"not {self.good_id}; the template merges it with neighbouring text"
            )


class VLLMQwenPRM(QwenPRM):
    """``QwenPRM`` on vLLM's pooling runner (``Qwen2ForProcessRewardModel``).

    The layout, step alignment, overflow rule and scores are ``QwenPRM``'s (``build`` and
    ``encode`` are inherited); only the forward pass differs: every candidate of a ``score``
    call goes to ONE ``llm.encode(token_ids, pooling_task="token_classify")``, whose ``STEP``
    pooler returns the head's logits at each separator token (``step_tag_id``), and the
    separators this adapter inserted are picked from those rows (a separator typed inside a
    step's text is skipped, as in ``QwenPRM``). vLLM implements the Linear-ReLU-Linear head
    itself, so the checkpoint's own model code is not run (no ``trust_remote_code``).

    Construct with ``from_pretrained``, or wrap a pooling-runner ``vllm.LLM`` already loaded
    on such a checkpoint (e.g. two adapters with different ``max_length`` on one engine).

    Args:
        llm: A ``vllm.LLM`` with ``runner="pooling"`` on a ``Qwen2ForProcessRewardModel``.
        tokenizer: The checkpoint's fast tokenizer (offsets locate the separators).
        max_length: Longest input in tokens; ``None``: the engine's ``max_model_len``.
        batch_size: Candidates per ``llm.encode`` call; ``None`` (default): all at once, and
            vLLM's scheduler batches them.
        **kwargs: ``separator``, ``positive_label``, ``default_system``, ``overflow``,
            ``name`` (see ``QwenPRM``).
    """

    engine: ClassVar[str] = "vllm"

    def __init__(
        self,
        llm: Any,
        tokenizer: Any,
        *,
        max_length: int | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        engine_limit = int(llm.model_config.max_model_len)
        if max_length is not None and max_length > engine_limit:
            raise ConfigError(
                f"max_length={max_length} exceeds the engine's max_model_len={engine_limit}; "
                f"load it with VLLMQwenPRM.from_pretrained(path, max_length={max_length})"
            )
        kwargs.setdefault("name", "qwen_prm_vllm")
        super().__init__(
            llm,
            tokenizer,
            max_length=max_length or engine_limit,
            batch_size=batch_size or 2**31 - 1,
            **kwargs,
        )

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        path: str | os.PathLike[str],
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_length: int | None = None,
        overflow: Literal["neutral", "error"] = "neutral",
        name: str | None = None,
        batch_size: int | None = None,
        block_size: int = 32,
        kv_cache_gib: float = 1,
        trust_remote_code: bool = False,
        separator: str = "<extra_0>",
        positive_label: int = 1,
        default_system: str = DEFAULT_SYSTEM_PROMPT,
        **engine_kwargs: Any,
    ) -> VLLMQwenPRM:
        """Load a local Qwen2.5-Math-PRM checkpoint into an in-process vLLM pooling engine.

        Args:
            path: Local directory with config (``architectures`` must name
                ``Qwen2ForProcessRewardModel``), weights and tokenizer.
            device: ``"auto"``; vLLM runs on the device its build targets (CPU or CUDA).
            dtype: ``"auto"``: bf16 on GPU or CPUs with native bf16, else fp32.
            max_length: Longest input in tokens (the engine's ``max_model_len``);
                ``None``: the checkpoint's ``max_position_embeddings``.
            overflow: Policy for steps past ``max_length`` (as ``QwenPRM``).
            name: Verifier name in traces (default ``"qwen_prm_vllm"``).
            batch_size: Candidates per engine call (``None``: all of a ``score`` call).
            block_size: KV block size (the CPU attention backend needs a multiple of 32).
            kv_cache_gib: CPU KV-cache size (``VLLM_CPU_KVCACHE_SPACE``) when not set.
            trust_remote_code: Passed to vLLM (not needed: the head is built in).
            separator, positive_label, default_system: See ``QwenPRM``.
            **engine_kwargs: Passed to ``vllm.LLM`` unchanged.

        Raises:
            ModelError: Missing directory or a tokenizer without the separator token.
            ConfigError: The checkpoint is not a ``Qwen2ForProcessRewardModel`` (use
                ``QwenPRM`` through transformers for token-classification checkpoints).
            BackendUnavailable: vLLM (or transformers) is missing or fails to import.
            BackendError: vLLM fails to build the engine (its message is included).
        """
        from ttscale.backends.vllm import cuda_available, import_vllm, set_engine_env
        from ttscale.errors import BackendError
        from ttscale.host import cpu_dtype

        _, transformers = _import_torch()
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise ModelError(
                f"no config.json in {folder}; PRM adapters load local checkpoint directories "
                f"only (no model hub is reachable): download or copy the model there first"
            )
        archs = _architectures(folder)
        if "Qwen2ForProcessRewardModel" not in archs:
            raise ConfigError(
                f"{folder} is {archs or 'an unnamed architecture'}; vLLM's pooling runner "
                f"scores Qwen2.5-Math-PRM checkpoints (architectures="
                f"['Qwen2ForProcessRewardModel']) only: load this one with "
                f"QwenPRM.from_pretrained(path) (transformers)"
            )
        on_gpu = cuda_available()
        if device not in ("auto", "cuda" if on_gpu else "cpu"):
            raise ConfigError(
                f"device={device!r}: vLLM runs on the device its build targets "
                f"({'cuda' if on_gpu else 'cpu'} here); pass device='auto'"
            )
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        cls._check_tokenizer(tokenizer, separator=separator)  # fail before the engine starts
        separator_id = _single_token(tokenizer, separator, "step separator")
        set_engine_env(on_gpu=on_gpu, kv_cache_gib=kv_cache_gib)
        LLM = import_vllm()
        if not on_gpu:
            _check_cpu_head_size(folder)  # before a minute of engine start-up
        from vllm.config import PoolerConfig

        if dtype == "auto":
            dtype = "bfloat16" if on_gpu else cpu_dtype()
        kwargs: dict[str, Any] = {
            "model": str(folder),
            "runner": "pooling",
            "dtype": dtype,
            "block_size": block_size,
            "trust_remote_code": trust_remote_code,
            # STEP pooling on our separator (vLLM's default is Qwen's id 151651).
            "pooler_config": PoolerConfig(step_tag_id=separator_id),
        }
        if max_length is not None:
            kwargs["max_model_len"] = max_length
        if not on_gpu:
            kwargs["enforce_eager"] = True
        kwargs.update(engine_kwargs)
        try:
            llm = LLM(**kwargs)
        except (ValueError, RuntimeError, NotImplementedError) as exc:
            raise BackendError(f"vLLM failed to load the PRM {folder}: {exc}") from exc
        log.info("loaded qwen PRM from %s on vLLM's pooling runner (%s)", folder, dtype)
        return cls(
            llm,
            tokenizer,
            max_length=max_length,
            batch_size=batch_size,
            overflow=overflow,
            name=name,
            separator=separator,
            positive_label=positive_label,
            default_system=default_system,
        )

    def _forward(self, batch: list[list[int]], positions: list[list[int]]) -> list[list[float]]:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        torch, _ = _import_torch()
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in batch]
        try:
            outs = self.model.encode(
                prompts,
                PoolingParams(use_activation=False),  # raw logits: softmax as in QwenPRM
                pooling_task="token_classify",
                use_tqdm=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise VerifierError(f"{self.name}: vLLM pooling call failed: {exc}") from exc
        result = []
        for ids, pos, out in zip(batch, positions, outs, strict=True):
            logits = torch.as_tensor(out.outputs.data)
            rows = self._rows(ids, pos, int(logits.shape[0]))
            result.append(self._positive(logits[rows]).tolist())
        return result

    def _rows(self, ids: list[int], positions: list[int], n_rows: int) -> list[int]:
        """Rows of the pooler output holding the logits at token ``positions``."""
        separators = [k for k, t in enumerate(ids) if t == self.separator_id]
        if n_rows == len(separators):  # STEP pooling: one row per separator token
            rank = {k: r for r, k in enumerate(separators)}
            return [rank[p] for p in positions]
        if n_rows == len(ids):  # ALL pooling: one row per token
            return list(positions)
        raise VerifierError(
            f"{self.name}: vLLM's pooler returned {n_rows} rows for a {len(ids)}-token input "
            f"with {len(separators)} separators; the engine must pool with tok_pooling_type "
            f"'STEP' and step_tag_id={self.separator_id} (VLLMQwenPRM.from_pretrained sets it)"
        )


PRM_STYLES: dict[str, type[TransformersPRM]] = {
    "qwen": QwenPRM,
    "math_shepherd": MathShepherdPRM,
    "rlhflow": RLHFlowPRM,
}


def detect_prm_style(path: str | os.PathLike[str]) -> str:
    """Guess the layout of a local PRM checkpoint from its ``config.json``.

    Only the token-classification layout (Qwen2.5-Math-PRM) is recognisable from the config;
    the two causal-LM layouts look like any chat model, so they must be named.

    Raises:
        ConfigError: The layout cannot be told, naming the explicit loaders.
    """
    archs = _architectures(Path(path))
    if any("ProcessRewardModel" in a or "ForTokenClassification" in a for a in archs):
        return "qwen"
    raise ConfigError(
        f"cannot tell which PRM layout {path} uses (architectures={archs}); name it: "
        f"load_verifier('math_shepherd_prm', path=...) or load_verifier('rlhflow_prm', path=...)"
    )


# -- helpers -------------------------------------------------------------------------------
def _import_torch() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise BackendUnavailable(
            f"PRM adapters need torch and transformers ({exc}); fix: pip install 'ttscale[hf]'"
        ) from None
    return torch, transformers


def _architectures(folder: Path) -> list[str]:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {folder / 'config.json'}: {exc}") from None
    return list(cfg.get("architectures") or [])


def _checked_load(auto_cls: Any, folder: Path, dtype: Any) -> Any:
    """Load and refuse a checkpoint whose head weights are missing (random head)."""
    model, info = auto_cls.from_pretrained(folder, dtype=dtype, output_loading_info=True)
    missing = [k for k in info.get("missing_keys", ()) if "rotary" not in k]
    if missing:
        raise ModelError(
            f"{folder} lacks weights for {missing[:4]}: loading it as "
            f"{auto_cls.__name__} would score with a random head; check the PRM layout "
            f"(QwenPRM / MathShepherdPRM / RLHFlowPRM) matches the checkpoint"
        )
    return model


def _check_cpu_head_size(folder: Path) -> None:
    """Refuse a checkpoint whose attention heads vLLM's CPU backend cannot run.

    Otherwise the engine loads and then fails on the first request with
    ``RuntimeError: Unsupported CPU attention configuration: head_dim=8 ...``
    (``torch.ops._C.get_scheduler_metadata``, from ``vllm/v1/attention/backends/cpu_attn.py``).
    """
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        supported = list(CPUAttentionBackend.get_supported_head_sizes())
    except Exception:  # another vLLM layout: let the engine decide
        return
    cfg = json.loads((folder / "config.json").read_text())
    heads = int(cfg.get("num_attention_heads") or 1)
    head_dim = int(cfg.get("head_dim") or int(cfg.get("hidden_size") or 0) // heads)
    if head_dim not in supported:
        raise BackendUnavailable(
            f"vLLM's CPU attention runs head sizes {supported}; {folder} has head_dim="
            f"{head_dim} (the engine would fail with 'Unsupported CPU attention "
            f"configuration'); fix: score it with QwenPRM.from_pretrained(path, "
            f"trust_remote_code=True) (transformers) or on a GPU build of vLLM"
        )


def _single_token(tokenizer: Any, text: str, role: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ModelError(
            f"the {role} {text!r} is {len(ids)} tokens in this tokenizer (ids {ids}); this "
            f"checkpoint does not use the expected PRM layout"
        )
    return int(ids[0])


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0  # right padding behind a causal mask: the id never influences real tokens


def _render(tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(
            "this PRM layout needs the tokenizer's chat template, and the checkpoint has none"
        )
    return str(
        tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    )


def _token_at(offsets: Sequence[tuple[int, int]], char: int) -> int | None:
    """Index of the last token whose span covers ``char`` (byte-level BPE may split a char)."""
    found = None
    for i, (start, end) in enumerate(offsets):
        if start <= char < end:
            found = i
        elif start > char:
            break
    return found
