"""``ttscale train-verifier``: fit a probe verifier (``ttscale.verifiers.probe``) on a pool.

1. Read the pool's samples with their math-verify labels. The pool must be drawn from
   training problems (``math_train200``); a MATH-500 pool is refused, and the problem ids
   are checked disjoint from MATH-500's (``assert_disjoint``).
2. One batched prefill of the policy model over every sample's *exact* token ids (prompt +
   generated), keeping a few layers' states: the last token, the mean over the solution,
   and the state at the end of each reasoning step (prefixes, for the value head).
3. Grouped cross-validation (folds by problem, so no problem is in train and test): for
   every (layer, pooling, with/without confidence features, L2 strength) a standardised
   logistic regression; the configuration with the best within-problem AUROC (mean over
   problems with both right and wrong samples) wins, pooled AUROC breaking ties.
4. Fit the winner and the prefix head on all samples; write ``head.npz`` + ``manifest.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ttscale.errors import ConfigError
from ttscale.evals.datasets import load_dataset
from ttscale.evals.record import package_versions, portable
from ttscale.pools import Pool, load_pool
from ttscale.strategies.allocation.splits import assert_disjoint
from ttscale.verifiers.probe import (
    CONFIDENCE_FEATURES,
    FORMAT_VERSION,
    HEAD,
    MANIFEST,
    POOLINGS,
    HiddenStates,
    ProbeHead,
    confidence_features,
    model_sha256,
)

__all__ = ["TrainSettings", "step_ends", "train_verifier", "within_auroc"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class TrainSettings:
    """Search space and data settings of ``train_verifier``."""

    layers: tuple[int, ...] | None = None
    """Layers to try (hidden_states index; 0 = embeddings); default: 5 spread over depth."""
    poolings: tuple[str, ...] = POOLINGS
    strengths: tuple[float, ...] = (0.003, 0.03, 0.3)
    """Inverse L2 strengths ``C`` tried."""
    folds: int = 5
    window: int = 128
    tail: int = 128
    max_prefixes: int = 8
    """Step-end prefixes kept per sample (evenly spaced) for the value head."""
    batch_tokens: int = 8192
    seed: int = 0


def within_auroc(groups: Sequence[str], labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean AUROC over groups (problems) that have both right and wrong samples."""
    from sklearn.metrics import roc_auc_score

    groups = np.asarray(groups)
    vals = []
    for g in dict.fromkeys(groups):
        m = groups == g
        if 0 < labels[m].sum() < m.sum():
            vals.append(roc_auc_score(labels[m], scores[m]))
    return float(np.mean(vals)) if vals else float("nan")


def step_ends(text: str, offsets: np.ndarray, delimiter: str = "\n\n") -> list[int]:
    """Token index (into the sample) at which each reasoning step ends."""
    ends, start = [], 0
    while (i := text.find(delimiter, start)) != -1:
        start = i + len(delimiter)
        k = int(np.searchsorted(offsets, start))  # first token whose text reaches the boundary
        if k < len(offsets) and (not ends or k > ends[-1]):
            ends.append(k)
    return ends


def _spread(xs: list[int], n: int) -> list[int]:
    if len(xs) <= n:
        return xs
    return [xs[round(i * (len(xs) - 1) / (n - 1))] for i in range(n)] if n > 1 else xs[-1:]


def _check_training_pool(pool: Pool) -> None:
    ds = pool.manifest.get("dataset", {})
    if str(ds.get("name")) == "math500" or any(i.startswith("test/") for i in pool.problems):
        raise ConfigError(
            f"pool {pool.name!r} holds MATH test problems; a verifier is trained on training "
            f"problems only (e.g. `ttscale pool build --dataset math_train200 ...`), so it can "
            f"be evaluated on MATH-500 honestly"
        )
    rows = [{"id": p.id, "problem": p.problem} for p in pool.problems.values()]
    math500 = [{"id": p.id, "problem": p.problem} for p in load_dataset("math500")]
    assert_disjoint(rows, math500)


def _fit(x: np.ndarray, y: np.ndarray, c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed),
    )
    return model.fit(x, y)


def _head(model: Any) -> ProbeHead:
    scaler, lr = model[0], model[1]
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    return ProbeHead(
        scaler.mean_.astype(np.float32),
        scale.astype(np.float32),
        lr.coef_[0].astype(np.float32),
        float(lr.intercept_[0]),
    )


def _cv(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, c: float, s: TrainSettings
) -> tuple[float, float]:
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold

    oof = np.zeros(len(y))
    for train, test in GroupKFold(n_splits=s.folds).split(x, y, groups):
        if y[train].min() == y[train].max():
            oof[test] = 0.5
            continue
        oof[test] = _fit(x[train], y[train], c, s.seed).predict_proba(x[test])[:, 1]
    pooled = roc_auc_score(y, oof) if 0 < y.sum() < len(y) else float("nan")
    return within_auroc(groups, y, oof), float(pooled)


def train_verifier(
    pool_dir: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    model: str | None = None,
    dtype: str | None = None,
    settings: TrainSettings | None = None,
    progress: bool = True,
    states_cache: str | Path | None = None,
) -> dict[str, Any]:
    """Train and save a probe verifier; returns its manifest.

    Args:
        pool_dir: One training pool, or several of the same model (e.g. drawn at several
            temperatures): their samples are pooled, grouped by problem for the CV.
        states_cache: A ``.npz`` file to keep the extracted hidden states in (and read them
            from when it matches the pools and layers), so a refit skips the prefill.

    Raises:
        ConfigError: A MATH test pool, pools of different models, a pool without both right
            and wrong samples, or sklearn/transformers missing.
    """
    s = settings or TrainSettings()
    dirs = [pool_dir] if isinstance(pool_dir, str | Path) else list(pool_dir)
    pools = [load_pool(d) for d in dirs]
    for pl in pools:
        _check_training_pool(pl)
    shas = {str(pl.manifest.get("model", {}).get("sha256")) for pl in pools}
    if len(shas) > 1:
        raise ConfigError(
            f"the training pools were drawn by different models ({shas}); a "
            f"probe reads one model: pass pools of that model only"
        )
    pool = pools[0]
    samples = [(p, smp) for pl in pools for p in pl.problems.values() for smp in p.samples]
    y = np.array([bool(smp.correct) for _, smp in samples], dtype=int)
    if not 0 < y.sum() < len(y):
        raise ConfigError(f"pool {pool.name!r} needs both right and wrong samples to train on")
    model = model or pool.manifest.get("model", {}).get("embedded") or None
    t0 = time.perf_counter()
    st = HiddenStates(model, dtype=dtype, batch_tokens=s.batch_tokens)
    depth = st.num_layers
    layers = s.layers or tuple(sorted({depth // 4, depth // 2, 3 * depth // 4, depth - 2, depth}))
    seqs = [(p.prompt_token_ids, smp.token_ids.tolist()) for p, smp in samples]
    ends = [_spread(step_ends(smp.text, smp.offsets), s.max_prefixes) for _, smp in samples]
    hashes = [hashlib.sha256((Path(d) / "manifest.json").read_bytes()).hexdigest() for d in dirs]
    states = _load_states(states_cache, hashes, layers, len(seqs))
    if states is None:
        states = _extract(st, seqs, layers, ends, progress)
        _save_states(states_cache, hashes, layers, states)
    extract_s = time.perf_counter() - t0
    groups = np.array([p.id for p, _ in samples])
    conf = np.stack(
        [
            confidence_features(
                smp.confidence,
                smp.num_tokens,
                smp.finish_reason == "stop",
                window=s.window,
                tail=s.tail,
            )
            for _, smp in samples
        ]
    )
    table = []
    for layer in layers:
        for pooling in s.poolings:
            h = np.stack([rec[layer][pooling] for rec in states])
            for with_conf in (False, True):
                x = np.concatenate([h, conf], axis=1) if with_conf else h
                for c in s.strengths:
                    w, pooled = _cv(x, y, groups, c, s)
                    table.append(
                        {
                            "layer": layer,
                            "pooling": pooling,
                            "confidence": with_conf,
                            "C": c,
                            "auroc_within": w,
                            "auroc_pooled": pooled,
                        }
                    )
                    log.info(
                        "layer %s %s conf=%s C=%s: within %.3f pooled %.3f",
                        layer,
                        pooling,
                        with_conf,
                        c,
                        w,
                        pooled,
                    )
    conf_only = []
    for c in s.strengths:
        w, pooled = _cv(conf, y, groups, c, s)
        conf_only.append({"C": c, "auroc_within": w, "auroc_pooled": pooled})
    best = max(
        table, key=lambda r: (np.nan_to_num(r["auroc_within"]), np.nan_to_num(r["auroc_pooled"]))
    )
    h = np.stack([rec[best["layer"]][best["pooling"]] for rec in states])
    x = np.concatenate([h, conf], axis=1) if best["confidence"] else h
    outcome = _head(_fit(x, y, best["C"], s.seed))
    # prefix (value) head: the state at each step end, labelled with the sample's outcome
    px, py, pg = [], [], []
    for rec, label, g in zip(states, y, groups, strict=True):
        for vec in rec[best["layer"]]["at"]:
            px.append(vec)
            py.append(label)
            pg.append(g)
    prefix_head, prefix_cv = None, None
    if px and 0 < sum(py) < len(py):
        pxa, pya, pga = np.stack(px), np.array(py), np.array(pg)
        w, pooled = _cv(pxa, pya, pga, best["C"], s)
        prefix_cv = {"auroc_within": w, "auroc_pooled": pooled, "prefixes": len(py)}
        prefix_head = _head(_fit(pxa, pya, best["C"], s.seed))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = outcome.arrays("outcome")
    if prefix_head is not None:
        arrays.update(prefix_head.arrays("prefix"))
    np.savez_compressed(out / HEAD, **arrays)
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": out.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {
            "name": model or str(st.path),
            "path": portable(st.path),
            "sha256": model_sha256(st.path),
            "dtype": st.dtype,
        },
        "layer": best["layer"],
        "pooling": best["pooling"],
        "confidence_features": best["confidence"],
        "features": (
            [f"hidden[{best['layer']}].{best['pooling']}"]
            + (list(CONFIDENCE_FEATURES) if best["confidence"] else [])
        ),
        "C": best["C"],
        "window": s.window,
        "tail": s.tail,
        "training_pool": {
            "name": ", ".join(pl.name for pl in pools),
            "manifest_sha256": hashes[0] if len(hashes) == 1 else hashes,
            "dataset": pool.manifest.get("dataset", {}).get("name"),
            "problems": len({p.id for pl in pools for p in pl.problems.values()}),
            "samples": len(y),
            "positives": int(y.sum()),
            "sampling": [pl.sampling.model_dump() for pl in pools]
            if len(pools) > 1
            else pool.sampling.model_dump(),
        },
        "cv": {
            "folds": s.folds,
            "grouped_by": "problem",
            "best": best,
            "table": table,
            "confidence_only": conf_only,
            "prefix": prefix_cv,
        },
        "layers_tried": list(layers),
        "extract_seconds": round(extract_s, 1),
        "packages": package_versions(),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, default=float) + "\n")
    return manifest


def _load_states(
    path: str | Path | None, hashes: list[str], layers: Sequence[int], n: int
) -> list[dict[str, Any]] | None:
    if path is None or not Path(path).is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes())
        if meta != {"pools": hashes, "layers": list(layers), "n": n}:
            return None
        out: list[dict[str, Any]] = [{} for _ in range(n)]
        for layer in layers:
            last, mean = z[f"last_{layer}"], z[f"mean_{layer}"]
            at = np.split(z[f"at_{layer}"], np.cumsum(z["at_sizes"])[:-1])
            for i in range(n):
                out[i][layer] = {"last": last[i], "mean": mean[i], "at": at[i]}
    return out


def _save_states(
    path: str | Path | None, hashes: list[str], layers: Sequence[int], states: list[dict[str, Any]]
) -> None:
    if path is None:
        return
    meta = {"pools": hashes, "layers": list(layers), "n": len(states)}
    arrays: dict[str, np.ndarray] = {
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        "at_sizes": np.array([len(states[i][layers[0]]["at"]) for i in range(len(states))]),
    }
    for layer in layers:
        arrays[f"last_{layer}"] = np.stack([r[layer]["last"] for r in states]).astype(np.float16)
        arrays[f"mean_{layer}"] = np.stack([r[layer]["mean"] for r in states]).astype(np.float16)
        arrays[f"at_{layer}"] = np.concatenate([r[layer]["at"] for r in states]).astype(np.float16)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def _extract(
    st: HiddenStates, seqs: list[Any], layers: Sequence[int], ends: list[list[int]], progress: bool
) -> list[dict[str, Any]]:
    """States in chunks, with a progress bar (the long part: one prefill of every sample)."""
    import sys

    from tqdm.auto import tqdm

    out: list[dict[str, Any]] = []
    chunk = 32
    with tqdm(
        total=len(seqs), disable=not progress, file=sys.stderr, unit="sample", desc="hidden states"
    ) as bar:
        for i in range(0, len(seqs), chunk):
            out += st.states(seqs[i : i + chunk], layers, ends[i : i + chunk])
            bar.update(min(chunk, len(seqs) - i))
    return out
