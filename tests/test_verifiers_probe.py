"""The learned probe verifier end to end on a tiny random Qwen2 built here: ``ttscale
train-verifier`` on a pool, the artifact and its manifest, loading, scoring candidates and
steps, and the refusals (a head trained for another model, a MATH-500 training pool)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sklearn")

from ttscale.budget import Ledger  # noqa: E402
from ttscale.errors import ConfigError  # noqa: E402
from ttscale.evals.draw import char_offsets  # noqa: E402
from ttscale.evals.train_verifier import step_ends, within_auroc  # noqa: E402
from ttscale.pools import PoolProblem, PoolSample, Sampling, write_problem  # noqa: E402
from ttscale.types import DEFAULT_SYSTEM_PROMPT, Candidate, Problem  # noqa: E402
from ttscale.verifiers import load_verifier  # noqa: E402
from ttscale.verifiers.probe import ProbeVerifier  # noqa: E402

TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = "we add the numbers carefully check sum total is so answer good bad wrong maybe".split()


def _tiny(path: Path, seed: int, layers: int = 2) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([" ".join(WORDS)] * 20 + ["What is 12+3? \\boxed{15}"], trainer)
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=specials[0],
        pad_token=specials[0],
        additional_special_tokens=specials[1:],
        chat_template=TEMPLATE,
    ).save_pretrained(path)
    cfg = Qwen2Config(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        eos_token_id=0,
        pad_token_id=0,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny(tmp_path_factory.mktemp("probe_tiny"), seed=0)


def _pool(root: Path, model: Path, dataset: str = "toy.jsonl") -> Path:
    """A pool whose right samples say 'good' and wrong ones 'bad': learnable from states."""
    from transformers import AutoTokenizer

    from ttscale.backends.common import render_with_tokenizer

    tok = AutoTokenizer.from_pretrained(model)
    rng = np.random.default_rng(0)
    ids = []
    for i in range(12):
        a, b = i + 2, 3
        problem = f"What is {a}+{b}?"
        prompt = render_with_tokenizer(tok, Problem(problem, DEFAULT_SYSTEM_PROMPT))
        samples = []
        for j in range(6):
            right = j % 2 == 0
            mood = "good good check" if right else "bad wrong maybe"
            value = a + b if right else a + b + 1
            text = f"we add the numbers {mood}\n\nso answer is \\boxed{{{value}}}"
            toks = tok.encode(text, add_special_tokens=False)
            conf = rng.normal(8.0 if right else 6.0, 1.0, len(toks))
            samples.append(
                PoolSample(
                    text=text,
                    token_ids=np.asarray(toks, np.int32),
                    offsets=char_offsets(lambda x: tok.decode(list(x)), toks, text),
                    finish_reason="stop",
                    answer=str(value),
                    correct=right,
                    eflops=1.0,
                    logprobs=np.full(len(toks), -0.1, np.float16),
                    confidence=conf.astype(np.float16),
                )
            )
        pid = f"train/toy/{i}.json"
        ids.append(pid)
        write_problem(root, PoolProblem(pid, problem, str(a + b), tuple(prompt), samples))
    manifest = {
        "format_version": 1,
        "name": root.name,
        "sampling": Sampling(
            k=6, temperature=0.7, max_tokens=64, system_prompt=DEFAULT_SYSTEM_PROMPT
        ).model_dump(),
        "dataset": {"name": dataset, "sha256": "x", "problem_ids": ids},
        "engine": {"backend": "hf", "block_size": 16},
        "model": {"path": str(model)},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_step_ends_and_within_auroc_by_hand():
    text = "a\n\nbb\n\nc"
    offsets = np.array([1, 3, 5, 7, 8])  # tokens: "a", "\n\n", "bb", "\n\n", "c"
    assert step_ends(text, offsets) == [1, 3]
    y = np.array([1, 0, 1, 0, 0, 0])
    s = np.array([0.9, 0.1, 0.2, 0.8, 0.5, 0.4])
    assert within_auroc(["p", "p", "q", "q", "r", "r"], y, s) == pytest.approx((1.0 + 0.0) / 2)


def test_train_save_load_score_end_to_end(tiny, tmp_path):
    pool = _pool(tmp_path / "pool", tiny)
    out = tmp_path / "probe"
    cmd = [
        sys.executable,
        "-m",
        "ttscale.cli",
        "train-verifier",
        "--pool",
        str(pool),
        "--out",
        str(out),
        "--model",
        str(tiny),
        "--folds",
        "3",
        "--dtype",
        "float32",
        "--no-progress",
        "--json",
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "TTSCALE_PRELOAD": "0"}
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert manifest == on_disk and (out / "head.npz").is_file()
    assert on_disk["model"]["sha256"] and on_disk["layer"] in on_disk["layers_tried"]
    assert on_disk["training_pool"]["samples"] == 72 and on_disk["training_pool"]["positives"] == 36
    assert on_disk["cv"]["grouped_by"] == "problem" and on_disk["cv"]["prefix"]["prefixes"] > 0
    assert on_disk["cv"]["best"]["auroc_within"] > 0.9  # 'good' vs 'bad' is linearly readable
    assert (out / "head.npz").stat().st_size < 100_000  # small enough to ship

    verifier = load_verifier(str(out), model=str(tiny), dtype="float32")
    assert isinstance(verifier, ProbeVerifier)
    prob = Problem("What is 12+3?", DEFAULT_SYSTEM_PROMPT)
    right = Candidate(
        "we add the numbers good good check\n\nso answer is \\boxed{15}",
        "15",
        20,
        "stop",
        token_confidence=tuple([8.0] * 20),
    )
    wrong = Candidate(
        "we add the numbers bad wrong maybe\n\nso answer is \\boxed{16}",
        "16",
        20,
        "stop",
        token_confidence=tuple([6.0] * 20),
    )
    ledger = Ledger()
    scores = asyncio.run(verifier.score_candidates([prob, prob], [right, wrong], ledger=ledger))
    assert all(0 <= s <= 1 for s in scores) and scores[0] > scores[1]
    assert ledger.verifier_tokens > 0 and ledger.eflops > 0  # the prefill is charged
    steps = asyncio.run(verifier.score([prob], [["we add the numbers good", "so \\boxed{15}"]]))
    assert len(steps[0]) == 2 and all(0 <= s <= 1 for s in steps[0])


def test_a_head_for_another_model_is_refused(tiny, tmp_path):
    pool = _pool(tmp_path / "pool", tiny)
    from ttscale.evals.train_verifier import TrainSettings, train_verifier

    train_verifier(
        pool,
        tmp_path / "probe",
        model=str(tiny),
        dtype="float32",
        settings=TrainSettings(folds=2, strengths=(0.1,)),
        progress=False,
    )
    other = _tiny(tmp_path / "other", seed=1, layers=3)
    with pytest.raises(ConfigError, match="a probe only reads the model it was trained for"):
        ProbeVerifier(tmp_path / "probe", model=str(other))
    with pytest.raises(ConfigError, match="not a probe verifier"):
        ProbeVerifier(tmp_path)


def test_a_math500_pool_is_never_training_data(tiny, tmp_path):
    from ttscale.evals.train_verifier import train_verifier

    pool = _pool(tmp_path / "pool", tiny, dataset="math500")
    with pytest.raises(ConfigError, match="training problems only"):
        train_verifier(pool, tmp_path / "probe", model=str(tiny), progress=False)


def test_states_below_the_top_layer_equal_the_full_pass(tmp_path):
    """The decoder is cut after the deepest layer asked for and the LM head skipped; the
    states must equal those of the full model's pass (the last one alone is normed)."""
    from ttscale.verifiers.probe import HiddenStates

    hs = HiddenStates(_tiny(tmp_path / "m", seed=1, layers=4), dtype="float32")
    seqs = [((1, 5, 9, 12), (40, 41, 42)), ((1, 7), (50, 51, 52, 53, 54))]
    ids = torch.tensor([[1, 5, 9, 12, 40, 41, 42, 0], [1, 7, 50, 51, 52, 53, 54, 0]])
    mask = (torch.arange(8) < torch.tensor([[7], [7]])).long()
    with torch.inference_mode():
        full = hs.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    for layers in ([1], [2, 3], [4]):
        got = hs.states(seqs, layers)
        assert len(hs.model.model.layers) == 4  # restored after the cut pass
        for b, (p, g) in enumerate(seqs):
            for layer in layers:
                want = full.hidden_states[layer][b, len(p) + len(g) - 1].numpy()
                np.testing.assert_allclose(got[b][layer]["last"], want, rtol=1e-5, atol=1e-5)
                # owns its 1 x hidden floats: a view would pin the whole batch's states
                # (35 GB over a 1,920-sample training pool)
                assert got[b][layer]["last"].flags.owndata
    cut = hs.states(seqs, [2])[0][2]["last"]
    normed = full.hidden_states[4][0, 6].numpy()
    assert not np.allclose(cut, normed, atol=1e-3)  # the cut pass did not norm state 2


SHIPPED = Path(__file__).resolve().parents[1] / "ttscale" / "data" / "probe"


def test_the_shipped_probe_is_trained_on_training_data_of_the_embedded_model():
    from ttscale.engine.models import DEFAULT_MODEL

    m = json.loads((SHIPPED / "manifest.json").read_text())
    assert m["model"]["name"] == DEFAULT_MODEL and m["model"]["sha256"]
    assert m["training_pool"]["dataset"] == "math_train200"  # never the MATH-500 test set
    assert m["training_pool"]["samples"] >= 1600 and m["training_pool"]["positives"] > 100
    assert m["layer"] in m["layers_tried"] and m["cv"]["grouped_by"] == "problem"
    assert 0.5 < m["cv"]["best"]["auroc_within"] <= 1
    assert not m["model"]["path"].startswith("/")  # portable: $TTSCALE_CACHE/...


@pytest.mark.real_model
def test_load_verifier_probe_scores_with_the_shipped_head():
    v = load_verifier("probe")
    assert (
        isinstance(v, ProbeVerifier)
        and v.layer == json.loads((SHIPPED / "manifest.json").read_text())["layer"]
    )
    problem = Problem("What is 12*7?", DEFAULT_SYSTEM_PROMPT)
    cands = [
        Candidate(t, a, 16, "stop", token_confidence=tuple([c] * 16))
        for t, a, c in (
            ("12 * 7 = 84.\n\nThe answer is \\boxed{84}.", "84", 15.0),
            ("12 * 7 = 94.\n\nThe answer is \\boxed{94}.", "94", 5.0),
        )
    ]
    ledger = Ledger()
    scores = asyncio.run(v.score_candidates([problem, problem], cands, ledger=ledger))
    assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    assert ledger.verifier_tokens > 0  # the policy model's prefill is charged
