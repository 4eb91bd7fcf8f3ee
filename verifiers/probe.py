"""A learned verifier for your own model: a linear probe on its frozen hidden states.

Small policy models know more than they say: whether a sampled solution is right is partly
linearly readable from the model's own hidden states on that solution (as in "LLMs know
more than they show", Orgad et al. 2025, and outcome-supervised value models, Yu et al.
2024). ``ttscale train-verifier`` fits, on a sample pool of the model's own solutions to
MATH *train* problems labelled by math-verify:

- an **outcome head**: logistic regression on the hidden state of one layer, pooled over
  the solution (``last`` token or ``mean`` of its tokens), plus the confidence features
  of ``ttscale.verifiers.confidence``; layer and pooling chosen by cross-validation
  grouped by problem;
- a **prefix (value) head** on the same layer's state at the end of each reasoning step,
  every prefix labelled with its sample's final outcome, so step searches can use it.

The artifact is a directory: ``head.npz`` (weights and standardisation) and
``manifest.json`` (policy model and its sha256, layer, pooling, features, training pool,
CV metrics, ttscale version). ``ProbeVerifier`` refuses a head trained for another model.
Scoring runs one batched prefill of the policy model per call (transformers; the prompt is
rendered with the model's chat template exactly as the engine does) and charges its eFLOPs
to the ledger. ``load_verifier("probe")`` loads the head shipped for the embedded 0.5B model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ttscale.backends.common import render_with_tokenizer, spec_from_dir
from ttscale.budget import Ledger
from ttscale.cost import prefill_eflops
from ttscale.engine.models import resolve_model
from ttscale.errors import ConfigError, ModelError
from ttscale.types import Candidate, Problem
from ttscale.verifiers.confidence import (
    bottom_fraction_confidence,
    lowest_group_confidence,
    tail_confidence,
)

__all__ = [
    "CONFIDENCE_FEATURES",
    "POOLINGS",
    "HiddenStates",
    "ProbeHead",
    "ProbeVerifier",
    "confidence_features",
    "model_sha256",
    "shipped_probe_dir",
]

log = logging.getLogger(__name__)

POOLINGS = ("last", "mean")
CONFIDENCE_FEATURES = (
    "conf_mean",
    "conf_lowest_group",
    "conf_bottom10",
    "conf_tail",
    "log_tokens",
    "finished",
)
MANIFEST = "manifest.json"
HEAD = "head.npz"
FORMAT_VERSION = 1


def confidence_features(
    conf: Sequence[float] | None, tokens: int, finished: bool, *, window: int, tail: int
) -> np.ndarray:
    """The non-hidden-state features of one sample, in ``CONFIDENCE_FEATURES`` order."""
    c = np.asarray(conf if conf is not None else [0.0], dtype=np.float64)
    if c.size == 0:
        c = np.zeros(1)
    return np.array(
        [
            c.mean(),
            lowest_group_confidence(c, window),
            bottom_fraction_confidence(c, window),
            tail_confidence(c, tail),
            np.log1p(tokens),
            float(finished),
        ]
    )


@dataclass
class ProbeHead:
    """A standardised logistic head: ``sigmoid(((x - mean) / scale) @ coef + intercept)``."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = ((np.atleast_2d(x) - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}_mean": self.mean,
            f"{prefix}_scale": self.scale,
            f"{prefix}_coef": self.coef,
            f"{prefix}_intercept": np.array([self.intercept]),
        }

    @classmethod
    def from_arrays(cls, z: Any, prefix: str) -> ProbeHead:
        return cls(
            z[f"{prefix}_mean"],
            z[f"{prefix}_scale"],
            z[f"{prefix}_coef"],
            float(z[f"{prefix}_intercept"][0]),
        )


class HiddenStates:
    """The policy model's hidden states on given token ids (transformers, no generation).

    Args:
        model: Embedded model name or HF directory (the policy that drew the samples).
        dtype: Torch dtype name; ``None`` follows the host (bf16 with AMX/avx512_bf16).
        batch_tokens: Padded tokens per forward pass (memory bound on CPU).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        dtype: str | None = None,
        batch_tokens: int = 8192,
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ConfigError(
                f"the probe verifier reads hidden states with transformers ({exc}); fix: "
                f"pip install 'ttscale[hf]'"
            ) from None
        from ttscale.host import cpu_dtype

        self._torch = torch
        self.dtype = dtype or ("bfloat16" if torch.cuda.is_available() else cpu_dtype())
        self.path = resolve_model(model, dtype=self.dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModelForCausalLM.from_pretrained(
            self.path, dtype=getattr(torch, self.dtype)
        ).eval()
        self.num_layers = int(self.model.config.num_hidden_layers)
        self.spec = spec_from_dir(self.path, self.dtype)
        self.batch_tokens = batch_tokens

    def render(self, problem: Problem) -> tuple[int, ...]:
        return render_with_tokenizer(self.tokenizer, problem)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def states(
        self,
        sequences: Sequence[tuple[Sequence[int], Sequence[int]]],
        layers: Sequence[int],
        positions: Sequence[Sequence[int]] | None = None,
    ) -> list[dict[str, Any]]:
        """For each ``(prompt_ids, generated_ids)``: per layer, the state at the last token
        (``last``), the mean over the generated tokens (``mean``) and, when given, the states
        at ``positions`` (indices into the generated tokens: the end of each step)."""
        torch = self._torch
        order = sorted(range(len(sequences)), key=lambda i: -sum(map(len, sequences[i])))
        out: list[dict[str, Any]] = [{} for _ in sequences]
        i = 0
        while i < len(order):
            longest = sum(map(len, sequences[order[i]]))
            take = max(1, self.batch_tokens // max(longest, 1))
            batch = order[i : i + take]
            i += take
            seqs = [list(sequences[j][0]) + list(sequences[j][1]) for j in batch]
            width = max(len(s) for s in seqs)
            pad = self.tokenizer.pad_token_id or 0
            ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
            with torch.inference_mode():
                hs = self._hidden_states(ids, mask, max(layers))
            for b, j in enumerate(batch):
                p, g = len(sequences[j][0]), len(sequences[j][1])
                rec: dict[str, Any] = {}
                for layer in layers:
                    h = hs[layer][b].float()
                    gen = h[p : p + g] if g else h[p - 1 : p]
                    rec[layer] = {
                        # copies: a view would keep the whole sequence's states alive
                        "last": h[p + g - 1].numpy().copy(),
                        "mean": gen.mean(0).numpy(),
                    }
                    if positions is not None:
                        idx = [p + k for k in positions[j] if 0 <= k < g]
                        rec[layer]["at"] = h[idx].numpy() if idx else np.zeros((0, h.shape[1]))
                out[j] = rec
        return out

    def _hidden_states(self, ids: Any, mask: Any, top: int) -> Any:
        """Hidden states 0..``top`` from the decoder alone: no LM head (its logits would be
        the largest tensor of the pass) and only the layers below ``top + 1``. The decoder
        normalises only its last output, so one extra layer keeps state ``top`` un-normed,
        exactly as in the full pass."""
        decoder = getattr(self.model, "model", None)
        blocks = getattr(decoder, "layers", None)
        if decoder is None or blocks is None:  # not a standard decoder: the full pass
            return self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)[
                "hidden_states"
            ]
        keep = top + 1 if top < self.num_layers else self.num_layers
        decoder.layers = blocks[:keep]
        try:
            return decoder(input_ids=ids, attention_mask=mask, output_hidden_states=True)[
                "hidden_states"
            ]
        finally:
            decoder.layers = blocks

    def prefill_eflops(self, sequences: Sequence[tuple[Sequence[int], Sequence[int]]]) -> float:
        if self.spec is None:
            return 0.0
        return sum(
            prefill_eflops(self.spec, prompt_tokens=len(a) + len(b), cached_tokens=0)
            for a, b in sequences
        )


def shipped_probe_dir() -> Path:
    """The probe head shipped for the embedded 0.5B model (``ttscale/data/probe``)."""
    return Path(str(resources.files("ttscale") / "data" / "probe"))


def model_sha256(path: Path) -> str | None:
    """Identity of a model directory: the embedded manifest's source sha256, else a hash of
    ``config.json`` (cheap; weights are not re-read)."""
    manifest = path / "ttscale-model.json"
    if manifest.is_file():
        return json.loads(manifest.read_text()).get("source_sha256")
    config = path / "config.json"
    return hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None


@dataclass
class ProbeVerifier:
    """Scores candidates (outcome head) and steps (prefix head) with a trained probe.

    Args:
        path: Probe directory (``ttscale train-verifier --out``); ``None``: the shipped one.
        model: The policy model whose hidden states it reads (default: the one the probe
            was trained on, which must be available locally).
    """

    path: str | os.PathLike[str] | None = None
    model: str | os.PathLike[str] | None = None
    dtype: str | None = None
    name: str = "probe"
    manifest: dict[str, Any] = field(init=False, repr=False)
    _states: HiddenStates | None = field(init=False, default=None, repr=False)
    _memo: dict[bytes, float] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        root = Path(self.path) if self.path is not None else shipped_probe_dir()
        if not (root / MANIFEST).is_file() or not (root / HEAD).is_file():
            raise ConfigError(
                f"{root} is not a probe verifier (needs {MANIFEST} and {HEAD}); train one with "
                f"`ttscale train-verifier --pool POOL --out DIR`"
            )
        self.manifest = json.loads((root / MANIFEST).read_text())
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise ConfigError(
                f"{root}: probe format {self.manifest.get('format_version')!r}; "
                f"this ttscale reads {FORMAT_VERSION}: retrain it"
            )
        with np.load(root / HEAD) as z:
            self.outcome = ProbeHead.from_arrays(z, "outcome")
            self.prefix = ProbeHead.from_arrays(z, "prefix") if "prefix_coef" in z else None
        self.layer = int(self.manifest["layer"])
        self.pooling = str(self.manifest["pooling"])
        self.use_confidence = bool(self.manifest["confidence_features"])
        self.window = int(self.manifest.get("window", 128))
        self.tail = int(self.manifest.get("tail", 128))
        self.logprobs = 20 if self.use_confidence else None
        if self.model is None:
            self.model = self.manifest["model"]["name"]
        self._check_model()

    def _check_model(self) -> None:
        try:
            path = resolve_model(self.model)
        except ModelError as exc:
            raise ConfigError(
                f"probe {self.name}: its policy model is not available ({exc})"
            ) from None
        want, have = self.manifest["model"].get("sha256"), model_sha256(path)
        if want and have != want:
            raise ConfigError(
                f"this probe was trained on the hidden states of model sha256 {want[:16]}... "
                f"({self.manifest['model'].get('name')}), not {path} ({(have or '?')[:16]}...): "
                f"a probe only reads the model it was trained for; train one for this model "
                f"with `ttscale train-verifier --pool POOL_OF_THIS_MODEL --out DIR`"
            )

    @property
    def states(self) -> HiddenStates:
        if self._states is None:
            self._states = HiddenStates(self.model, dtype=self.dtype)
        return self._states

    def features(self, hidden: dict[str, Any], cand: Candidate) -> np.ndarray:
        parts = [hidden[self.layer][self.pooling]]
        if self.use_confidence:
            parts.append(
                confidence_features(
                    cand.token_confidence,
                    cand.tokens,
                    cand.finish_reason == "stop",
                    window=self.window,
                    tail=self.tail,
                )
            )
        return np.concatenate(parts)

    async def score_candidates(
        self,
        problems: Sequence[Problem],
        candidates: Sequence[Candidate],
        *,
        ledger: Ledger | None = None,
    ) -> list[float]:
        """P(correct) per candidate from its hidden states (and confidences)."""
        st = self.states
        seqs = [
            (st.render(p), st.encode(c.text)) for p, c in zip(problems, candidates, strict=True)
        ]
        keys = [hashlib.blake2b(repr(s).encode(), digest_size=16).digest() for s in seqs]
        todo = [i for i, k in enumerate(keys) if k not in self._memo]
        if todo:
            hidden = st.states([seqs[i] for i in todo], [self.layer])
            x = np.stack([self.features(hidden[n], candidates[i]) for n, i in enumerate(todo)])
            for i, v in zip(todo, self.outcome.predict(x), strict=True):
                self._memo[keys[i]] = float(v)
        if ledger is not None:  # charged as if computed: the memo only saves wall time
            ledger.charge_verifier(st.prefill_eflops(seqs), sum(len(a) + len(b) for a, b in seqs))
        return [self._memo[k] for k in keys]

    async def score(
        self,
        problems: Sequence[Problem],
        step_lists: Sequence[Sequence[str]],
        *,
        ledger: Ledger | None = None,
    ) -> list[list[float]]:
        """Per-step value: the prefix head on the state at the end of each step."""
        if self.prefix is None:
            raise ConfigError(f"probe {self.name} has no prefix head; retrain it with prefixes")
        st = self.states
        seqs, ends = [], []
        for p, steps in zip(problems, step_lists, strict=True):
            ids: list[int] = []
            cut: list[int] = []
            for s in steps:
                ids += st.encode(s + p.step_delimiter)
                cut.append(len(ids) - 1)
            seqs.append((st.render(p), ids))
            ends.append(cut)
        hidden = st.states(seqs, [self.layer], positions=ends)
        out = []
        for rec, cut in zip(hidden, ends, strict=True):
            at = rec[self.layer]["at"]
            out.append(self.prefix.predict(at).tolist() if len(cut) else [])
        if ledger is not None:
            ledger.charge_verifier(st.prefill_eflops(seqs), sum(len(a) + len(b) for a, b in seqs))
        return out
