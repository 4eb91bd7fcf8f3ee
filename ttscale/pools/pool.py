"""Sample pools on disk: K i.i.d. samples per problem, drawn once, replayed exactly.

A pool is a directory::

    manifest.json            what drew it: sampling, model, engine, host, versions, commit
    problems/<key>.npz       one file per problem, written atomically when all K are drawn

Each problem file holds the rendered prompt's token ids and, per sample: text, token ids,
the text offset after each token (so a sample cut to ``m`` tokens has exactly the text the
engine would have returned), finish reason, extracted answer, correctness against the
reference (math-verify), per-token logprob and DeepConf confidence (float16), and the
eFLOPs it cost. Stored as compressed numpy ``.npz`` (JSON metadata plus binary arrays):
small enough to commit the pools behind a report, readable with numpy alone.

Code pools (format 3, ``Sampling.code``) add, per problem: the entry point; the other
prompts the ``code`` strategy sends besides the samples' own (``PoolPrompt``: its
generated-inputs request), each with its one greedy completion; and every sandbox run a
replay needs (each sample's public-test run and its behaviour-signature run), keyed by the
sha256 of the exact source that ran. Each sample's ``program`` is its full program (prompt
+ code), ``execution`` its public-test run and ``correct`` its hidden-test grade.

Nothing here runs an engine: building a pool is ``ttscale.evals.pool`` (it needs datasets
and grading); replaying one is ``ttscale.pools.replay``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ttscale.cost import ModelSpec
from ttscale.errors import ConfigError
from ttscale.types import ExecResult, FinishReason, code_user_text

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "CodeSettings",
    "Pool",
    "PoolProblem",
    "PoolPrompt",
    "PoolSample",
    "Sampling",
    "format_version",
    "load_pool",
    "pool_problem_ids",
    "problem_file",
    "source_key",
    "write_problem",
]

FORMAT_VERSION = 3
"""Version 3 added code pools (``Sampling.code``; per problem the entry point, auxiliary
prompts with their greedy completions and a table of sandbox runs by source sha256).
Version 2 added program pools (``Sampling.instruction``/``execute``, per-sample program
and execution result). A pool without code settings is still written as version 2, so
older readers keep reading it; versions 1 and 2 read unchanged."""
READABLE_VERSIONS = (1, 2, 3)
MANIFEST = "manifest.json"
PROBLEMS = "problems"


class CodeSettings(BaseModel):
    """How a code pool's sandbox runs were made: a ``code`` strategy replays exactly only
    with the same ``generated_inputs`` and ``timeout`` (they are part of each run's source)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generated_inputs: int = Field(default=8, ge=0)
    """Inputs asked from the model per problem (0: no generated-inputs completion; the
    behaviour signatures run on the docstring's calls only)."""
    timeout: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    """Seconds per test call in the public-test and signature runs."""


class Sampling(BaseModel):
    """How every sample of a pool was drawn; a request must match it to be replayed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(gt=0)
    """Samples per problem."""
    temperature: float = Field(ge=0, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_tokens: int = Field(gt=0)
    """Cap each sample was drawn with; replay serves any cap up to this one."""
    seed: int = 0
    """Base seed; problem ``id`` was drawn with ``problem_seed(seed, id)``."""
    logprobs: int | None = Field(default=20, ge=0)
    """Top-k alternatives whose logprobs gave the per-token confidence (``None``: none)."""
    system_prompt: str | None = None
    instruction: str | None = None
    """Text appended to each problem in the user message (``PROGRAM_INSTRUCTION`` for
    program pools); ``None``: the problem alone (chain of thought)."""
    execute: bool = False
    """Each sample's last ```python block was run in the sandbox; its printed answer is the
    sample's answer and its execution result is stored, so program strategies replay without
    running anything."""
    code: CodeSettings | None = None
    """Code pools: each problem (a signature + docstring) was sent as ``code_user_text``;
    the samples' programs ran on the public tests and the behaviour inputs (see the
    module doc). ``None``: not a code pool."""

    def user_text(self, problem: str) -> str:
        """The user message a problem was drawn with."""
        if self.code is not None:
            return code_user_text(problem)
        return problem + (self.instruction or "")


def format_version(sampling: Sampling) -> int:
    """The format a pool drawn with ``sampling`` is written in (the oldest that holds it)."""
    return 3 if sampling.code is not None else 2


def source_key(source: str) -> str:
    """The key of a sandbox run in a code pool's run table: sha256 of the exact source."""
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True, eq=False)
class PoolSample:
    """One pooled sample. Arrays are numpy (int32 ids and offsets, float16 scores)."""

    text: str
    token_ids: np.ndarray
    offsets: np.ndarray
    """``text[:offsets[i]]`` is the text of the first ``i + 1`` tokens."""
    finish_reason: FinishReason
    answer: str | None
    correct: bool | None
    """Against the reference answer (math-verify); ``None`` if the problem has none."""
    eflops: float
    """Decode eFLOPs of this sample as priced when drawn (prefill is per problem)."""
    logprobs: np.ndarray | None = None
    confidence: np.ndarray | None = None
    program: str | None = None
    """Program pools: the code that was run (``None``: no closed code block). Code pools:
    the full program (prompt + code, as the ``code`` strategy assembles it)."""
    execution: ExecResult | None = None
    """Program pools: what running ``program`` gave (stdout/stderr capped as stored). Code
    pools: its public-test run (whole)."""

    @property
    def num_tokens(self) -> int:
        return int(self.token_ids.shape[0])

    def text_at(self, m: int) -> str:
        """Text of the first ``m`` tokens."""
        if m >= self.num_tokens:
            return self.text
        return self.text[: int(self.offsets[m - 1])] if m > 0 else ""


@dataclass(frozen=True, slots=True, eq=False)
class PoolPrompt:
    """Another prompt of a problem that a strategy sends besides the samples' own (the
    ``code`` strategy's generated-inputs request), with its one greedy completion: replay
    serves it to every request for that prompt, as a deterministic engine would."""

    kind: str
    """What it is for (``"inputs"``)."""
    user_text: str
    system_prompt: str | None
    prompt_token_ids: tuple[int, ...]
    max_tokens: int
    """Cap it was drawn with (replay serves any cap up to it)."""
    sample: PoolSample
    temperature: float = 0.0
    prefill_eflops: float = 0.0


@dataclass(slots=True)
class PoolProblem:
    """One problem's prompt and its K samples."""

    id: str
    problem: str
    gold: str | None
    prompt_token_ids: tuple[int, ...]
    samples: list[PoolSample]
    level: int | None = None
    subject: str | None = None
    seed: int | None = None
    """Per-request seed the samples were drawn with."""
    seeding: str | None = None
    """``per_request`` or ``engine`` (the backend's mode when this problem was drawn)."""
    prefill_eflops: float = 0.0
    seconds: float = 0.0
    """Wall time of the engine call that drew this problem's samples."""
    entry_point: str | None = None
    """Code pools: the function the programs define."""
    prompts: list[PoolPrompt] = field(default_factory=list)
    """Code pools: the auxiliary prompts with their greedy completions."""
    runs: dict[str, ExecResult] = field(default_factory=dict)
    """Code pools: every sandbox run a replay needs, by ``source_key`` of its source."""

    @property
    def correct(self) -> list[bool]:
        return [bool(s.correct) for s in self.samples]


@dataclass(slots=True)
class Pool:
    """A loaded pool: manifest plus problems by id (in the order they were selected)."""

    path: Path
    manifest: dict[str, Any]
    problems: dict[str, PoolProblem] = field(default_factory=dict)

    @property
    def sampling(self) -> Sampling:
        return Sampling(**self.manifest["sampling"])

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.path.name)

    @property
    def model_spec(self) -> ModelSpec | None:
        spec = self.manifest.get("model_spec")
        return ModelSpec(**spec) if spec else None

    @property
    def block_size(self) -> int:
        """KV block size of the engine that drew it (prefix-cache credit is in whole blocks)."""
        return int(self.manifest.get("engine", {}).get("block_size") or 16)

    def describe(self) -> str:
        """One line naming what the pool can serve (used in every refusal)."""
        s = self.sampling
        ds = self.manifest.get("dataset", {}).get("name", "?")
        kind = " code" if s.code is not None else " program" if s.execute else ""
        return (
            f"{kind.strip() + ' ' if kind else ''}pool {self.name!r} holds {len(self.problems)} "
            f"{ds} problems x {s.k}{kind} samples at "
            f"temperature={s.temperature:g}, top_p={s.top_p:g}, max_tokens={s.max_tokens}, "
            f"no stop strings"
        )


# -- encoding -------------------------------------------------------------------------------
# One ``.npz`` (deflate) per problem: the metadata as UTF-8 JSON bytes, and per-token arrays
# of all samples concatenated (``lengths`` splits them): int32 ids, uint16 per-token text
# deltas, float16 logprobs and confidences. Binary arrays compress ~2x better than base64.


def problem_file(pool_dir: Path, problem_id: str) -> Path:
    """Where a problem's samples live (ids like ``test/algebra/1.json`` are hashed)."""
    key = hashlib.sha256(problem_id.encode()).hexdigest()[:20]
    return Path(pool_dir) / PROBLEMS / f"{key}.npz"


def _concat(arrays: list[np.ndarray | None], dtype: str) -> np.ndarray | None:
    if any(a is None for a in arrays):
        return None
    return (
        np.concatenate([np.asarray(a, dtype=dtype) for a in arrays])
        if arrays
        else np.zeros(0, dtype)
    )


def _sample_meta(s: PoolSample) -> dict[str, Any]:
    return {
        "text": s.text,
        "finish_reason": s.finish_reason,
        "answer": s.answer,
        "correct": s.correct,
        "eflops": s.eflops,
        **({"program": s.program} if s.program is not None else {}),
        **({"execution": s.execution.to_dict()} if s.execution is not None else {}),
    }


def _pack(samples: Sequence[PoolSample], prefix: str = "") -> dict[str, np.ndarray]:
    """The per-token arrays of ``samples``, concatenated, under ``prefix``-ed names."""
    arrays: dict[str, np.ndarray] = {
        f"{prefix}lengths": np.asarray([s.num_tokens for s in samples], dtype="<i4"),
        f"{prefix}token_ids": _concat([s.token_ids for s in samples], "<i4"),  # type: ignore[dict-item]
        f"{prefix}offset_deltas": _concat([np.diff(s.offsets, prepend=0) for s in samples], "<u2"),  # type: ignore[dict-item]
    }
    for name in ("logprobs", "confidence"):
        joined = _concat([getattr(s, name) for s in samples], "<f2")
        if joined is not None:
            arrays[f"{prefix}{name}"] = joined
    return arrays


def _unpack(z: Any, metas: Sequence[dict[str, Any]], prefix: str = "") -> list[PoolSample]:
    lengths = z[f"{prefix}lengths"]
    cuts = np.cumsum(lengths)[:-1]
    ids = np.split(z[f"{prefix}token_ids"], cuts)
    offsets = [np.cumsum(d, dtype=np.int32) for d in np.split(z[f"{prefix}offset_deltas"], cuts)]
    none = [None] * len(lengths)
    lps = np.split(z[f"{prefix}logprobs"], cuts) if f"{prefix}logprobs" in z.files else none
    conf = np.split(z[f"{prefix}confidence"], cuts) if f"{prefix}confidence" in z.files else none
    return [
        PoolSample(
            text=m["text"],
            token_ids=ids[i],
            offsets=offsets[i],
            finish_reason=m["finish_reason"],
            answer=m["answer"],
            correct=m["correct"],
            eflops=float(m["eflops"]),
            logprobs=lps[i],
            confidence=conf[i],
            program=m.get("program"),
            execution=ExecResult.from_dict(m["execution"]) if m.get("execution") else None,
        )
        for i, m in enumerate(metas)
    ]


def write_problem(pool_dir: Path, problem: PoolProblem) -> Path:
    """Write one problem atomically (temp file + rename): a kill never leaves half a file."""
    path = problem_file(pool_dir, problem.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "id": problem.id,
        "problem": problem.problem,
        "gold": problem.gold,
        "level": problem.level,
        "subject": problem.subject,
        "prompt_token_ids": list(problem.prompt_token_ids),
        "seed": problem.seed,
        "seeding": problem.seeding,
        "prefill_eflops": problem.prefill_eflops,
        "seconds": round(problem.seconds, 3),
        "samples": [_sample_meta(s) for s in problem.samples],
    }
    if problem.entry_point is not None:
        meta["entry_point"] = problem.entry_point
    if problem.prompts:
        meta["prompts"] = [
            {
                "kind": a.kind,
                "user_text": a.user_text,
                "system_prompt": a.system_prompt,
                "prompt_token_ids": list(a.prompt_token_ids),
                "max_tokens": a.max_tokens,
                "temperature": a.temperature,
                "prefill_eflops": a.prefill_eflops,
                "sample": _sample_meta(a.sample),
            }
            for a in problem.prompts
        ]
    if problem.runs:
        meta["runs"] = {key: r.to_dict() for key, r in problem.runs.items()}
    arrays: dict[str, np.ndarray] = {
        "meta": np.frombuffer(json.dumps(meta, separators=(",", ":")).encode(), dtype=np.uint8),
        **_pack(problem.samples),
    }
    if problem.prompts:
        arrays.update(_pack([a.sample for a in problem.prompts], "prompt_"))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read_problem(path: Path) -> PoolProblem:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes())
        samples = _unpack(z, meta["samples"])
        extra = meta.get("prompts") or []
        aux = _unpack(z, [a["sample"] for a in extra], "prompt_") if extra else []
    prompts = [
        PoolPrompt(
            kind=a["kind"],
            user_text=a["user_text"],
            system_prompt=a["system_prompt"],
            prompt_token_ids=tuple(int(t) for t in a["prompt_token_ids"]),
            max_tokens=int(a["max_tokens"]),
            sample=sample,
            temperature=float(a.get("temperature") or 0.0),
            prefill_eflops=float(a.get("prefill_eflops") or 0.0),
        )
        for a, sample in zip(extra, aux, strict=True)
    ]
    return PoolProblem(
        id=meta["id"],
        problem=meta["problem"],
        gold=meta.get("gold"),
        prompt_token_ids=tuple(int(t) for t in meta["prompt_token_ids"]),
        samples=samples,
        level=meta.get("level"),
        subject=meta.get("subject"),
        seed=meta.get("seed"),
        seeding=meta.get("seeding"),
        prefill_eflops=float(meta.get("prefill_eflops") or 0.0),
        seconds=float(meta.get("seconds") or 0.0),
        entry_point=meta.get("entry_point"),
        prompts=prompts,
        runs={k: ExecResult.from_dict(v) for k, v in (meta.get("runs") or {}).items()},
    )


def _iter_problem_files(pool_dir: Path) -> Iterator[Path]:
    folder = Path(pool_dir) / PROBLEMS
    if folder.is_dir():
        yield from sorted(p for p in folder.glob("*.npz") if not p.name.startswith("."))


def discard_partial_writes(pool_dir: Path) -> int:
    """Delete the temporary files of problem writes a killed build left (``.tmp-*.npz``);
    the count. A pool has one builder at a time, so none of them is still being written."""
    folder = Path(pool_dir) / "problems"
    stale = list(folder.glob(".tmp-*.npz")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def pool_problem_ids(pool_dir: Path) -> set[str]:
    """Ids of the problems already drawn (what a resumed build skips)."""
    return {_read_problem(p).id for p in _iter_problem_files(pool_dir)}


def read_manifest(pool_dir: Path) -> dict[str, Any]:
    """The manifest, validated enough to trust ``sampling``.

    Raises:
        ConfigError: Missing, unreadable, or from another format version; names the fix.
    """
    path = Path(pool_dir) / MANIFEST
    if not path.is_file():
        raise ConfigError(
            f"{pool_dir} is not a sample pool (no {MANIFEST}); build one with "
            f"`ttscale pool build --out {pool_dir} ...`"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); rebuild the pool") from None
    if data.get("format_version") not in READABLE_VERSIONS:
        raise ConfigError(
            f"{path} has pool format {data.get('format_version')!r}; this ttscale reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}: rebuild the pool"
        )
    try:
        Sampling(**data["sampling"])
    except (KeyError, TypeError, ValidationError) as exc:
        raise ConfigError(f"{path}: invalid sampling record ({exc}); rebuild the pool") from None
    return data


def load_pool(pool_dir: str | os.PathLike[str], ids: Sequence[str] | None = None) -> Pool:
    """Load a pool directory (every problem, or only ``ids``).

    Problems are ordered as the manifest's ``problem_ids`` (the selection order).

    Raises:
        ConfigError: Not a pool, unreadable, or ``ids`` names a problem it lacks.
    """
    path = Path(pool_dir)
    manifest = read_manifest(path)
    found: dict[str, PoolProblem] = {}
    for f in _iter_problem_files(path):
        try:
            p = _read_problem(f)
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise ConfigError(
                f"pool file {f} is unreadable ({exc}); delete it and resume the "
                f"build to redraw that problem"
            ) from None
        found[p.id] = p
    order = [i for i in manifest.get("dataset", {}).get("problem_ids", []) if i in found]
    order += sorted(set(found) - set(order))
    if ids is not None:
        missing = [i for i in ids if i not in found]
        if missing:
            raise ConfigError(
                f"pool {path} has no samples for {len(missing)} requested problem(s), e.g. "
                f"{missing[0]!r}; resume `ttscale pool build` or select problems it holds"
            )
        order = list(ids)
    return Pool(path, manifest, {i: found[i] for i in order})
