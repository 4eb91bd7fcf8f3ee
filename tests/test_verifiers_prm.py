"""PRM adapters on tiny randomly initialised models built here (no downloads).

For each layout (Qwen2.5-Math-PRM ``<extra_0>`` + 2-class head, Math-Shepherd ``ки`` tag +
``+``/``-`` logits, RLHFlow chat turns) a tokenizer with the layout's special tokens and a
chat template is trained in the test, a tiny model with the public config family is saved to
``tmp_path`` and loaded back through the adapter's real ``from_pretrained``. Verifies: one
score per step, scores equal to an independent re-implementation of the model card's
recipe (exact step alignment), batching/padding invariance (1e-5), the max-length policy,
aggregation, the loader's safety checks, and end-to-end use inside best-of-N.
"""

from __future__ import annotations

import asyncio
import json
import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from ttscale.budget import Budget  # noqa: E402
from ttscale.errors import ConfigError, ModelError, VerifierError  # noqa: E402
from ttscale.strategies import BestOfN  # noqa: E402
from ttscale.types import Problem  # noqa: E402
from ttscale.verifiers import (  # noqa: E402
    MathShepherdPRM,
    QwenPRM,
    RLHFlowPRM,
    aggregate,
    detect_prm_style,
    load_verifier,
)

CORPUS = [
    "Step 1: We compute 12 + 3 - 4 = 11 so the answer is 11. ки",
    "What is 7 plus 5? Let x = 2, so y - 3 + 1 = 0 and x times y is 84.",
    "+ - + - ки ки Step 2: Step 3: the answer is \\boxed{12}.",
]
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3_TEMPLATE = (
    "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
    "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
PROBLEM = Problem("What is 12*7?")
CANDIDATES = [
    ["We write 12*7 as 10*7 + 2*7.", "That is 70 + 14.", "So the answer is \\boxed{84}."],
    ["12*7 = 85.", "The answer is \\boxed{85}."],
    ["Count up by sevens: 7, 14, 21, 28, 35, 42, 49, 56, 63, 70, 77, 84."],
    ["We compute 12 + 3 - 4 = 11 ки and a step with <extra_0> inside.", "Then + and -."],
]


def _tokenizer(special, chat_template, *, bos=None, added=()):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=list(special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 10, trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=special[0],
        pad_token=special[0],
        bos_token=bos,
        additional_special_tokens=list(special[1:]),
    )
    if added:
        fast.add_tokens(list(added))
    fast.chat_template = chat_template
    return fast


def _save(tmp_path, name, model, tok):
    path = tmp_path / name
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    tok = _tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"], QWEN_TEMPLATE)
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=len(tok), num_labels=2, **TINY)
    model = transformers.Qwen2ForTokenClassification(cfg)
    return _save(tmp_path_factory.mktemp("prm"), "qwen", model, tok)


@pytest.fixture(scope="module")
def shepherd_dir(tmp_path_factory):
    tok = _tokenizer(["</s>", "<s>"], QWEN_TEMPLATE, bos="<s>", added=["ки"])
    torch.manual_seed(1)
    cfg = transformers.MistralConfig(vocab_size=len(tok), **TINY)
    model = transformers.MistralForCausalLM(cfg)
    return _save(tmp_path_factory.mktemp("prm"), "shepherd", model, tok)


@pytest.fixture(scope="module")
def rlhflow_dir(tmp_path_factory):
    special = ["<|eot_id|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>"]
    tok = _tokenizer(special, LLAMA3_TEMPLATE)
    torch.manual_seed(2)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), **TINY)
    model = transformers.LlamaForCausalLM(cfg)
    return _save(tmp_path_factory.mktemp("prm"), "rlhflow", model, tok)


def _score(prm, cands, problem=PROBLEM):
    return asyncio.run(prm.score([problem] * len(cands), cands))


# -- independent re-implementations of each model card's recipe ------------------------------
def _qwen_reference(prm, problem, steps):
    tok, model = prm.tokenizer, prm.model
    messages = [
        {"role": "system", "content": problem.system_prompt},
        {"role": "user", "content": problem.prompt},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    ids = torch.tensor([tok.encode(text, add_special_tokens=False)])
    with torch.no_grad():
        probs = model(input_ids=ids).logits.softmax(-1)[0, :, 1]
    sep = tok.convert_tokens_to_ids("<extra_0>")
    return probs[ids[0] == sep].tolist()


def _shepherd_reference(prm, problem, steps):
    tok, model = prm.tokenizer, prm.model
    good, bad = tok.encode("+ -", add_special_tokens=False)
    tag = tok.encode("ки", add_special_tokens=False)[-1]
    out = "\n".join(f"Step {i + 1}: {s} ки" for i, s in enumerate(steps))
    ids = torch.tensor([tok.encode(f"{problem.prompt} {out}")])
    with torch.no_grad():
        scores = model(ids).logits[:, :, [good, bad]].softmax(-1)[0, :, 0]
    return scores[ids[0] == tag].tolist()


def _rlhflow_reference(prm, problem, steps):
    tok, model = prm.tokenizer, prm.model
    plus = tok.encode("+", add_special_tokens=False)[-1]
    minus = tok.encode("-", add_special_tokens=False)[-1]
    conversation, scores = [], []
    for k, step in enumerate(steps):
        text = f"{problem.prompt} {step}" if k == 0 else step
        conversation += [{"role": "user", "content": text}, {"role": "assistant", "content": "+"}]
        ids = tok.apply_chat_template(conversation, tokenize=True, return_dict=False)
        ids = torch.tensor([ids["input_ids"] if isinstance(ids, dict) else ids])
        assert ids[0, -2] == plus  # template ends "+<|eot_id|>": logits at -3 predict "+"
        with torch.no_grad():
            logits = model(ids).logits[0, -3, [plus, minus]]
        scores.append(logits.softmax(-1)[0].item())
    return scores


# -- per-adapter checks --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fixture", "cls", "reference"),
    [
        ("qwen_dir", QwenPRM, _qwen_reference),
        ("shepherd_dir", MathShepherdPRM, _shepherd_reference),
        ("rlhflow_dir", RLHFlowPRM, _rlhflow_reference),
    ],
)
def test_adapter_matches_model_card_recipe(request, fixture, cls, reference):
    prm = cls.from_pretrained(request.getfixturevalue(fixture), device="cpu", dtype="float32")
    scores = _score(prm, CANDIDATES[:3])
    assert [len(r) for r in scores] == [len(c) for c in CANDIDATES[:3]]
    for steps, row in zip(CANDIDATES[:3], scores, strict=True):
        assert all(0.0 <= s <= 1.0 for s in row)
        assert row == pytest.approx(reference(prm, PROBLEM, steps), abs=1e-5)


@pytest.mark.parametrize(
    "fixture,cls",
    [("qwen_dir", QwenPRM), ("shepherd_dir", MathShepherdPRM), ("rlhflow_dir", RLHFlowPRM)],
)
def test_step_text_containing_tags_keeps_alignment(request, fixture, cls):
    """A step that contains '<extra_0>', 'ки', '+' or '-' still yields one score per step,
    taken at the positions the adapter inserted (not at look-alike text)."""
    prm = cls.from_pretrained(request.getfixturevalue(fixture), device="cpu", dtype="float32")
    steps = CANDIDATES[3]
    ids, positions = prm.encode(PROBLEM, steps)
    assert len(positions) == len(steps) and positions == sorted(positions)
    assert [len(r) for r in _score(prm, [steps])] == [len(steps)]


@pytest.mark.parametrize(
    "fixture,cls",
    [("qwen_dir", QwenPRM), ("shepherd_dir", MathShepherdPRM), ("rlhflow_dir", RLHFlowPRM)],
)
def test_batching_and_padding_invariance(request, fixture, cls):
    prm = cls.from_pretrained(
        request.getfixturevalue(fixture), device="cpu", dtype="float32", batch_size=3
    )
    alone = [_score(prm, [c])[0] for c in CANDIDATES]
    together = _score(prm, CANDIDATES + CANDIDATES[:2])
    for a, b in zip(alone + alone[:2], together, strict=True):
        assert len(a) == len(b)
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-5


def test_empty_candidates_and_shape_errors(qwen_dir):
    prm = QwenPRM.from_pretrained(qwen_dir, device="cpu", dtype="float32")
    assert _score(prm, [[], CANDIDATES[1], []])[0] == []
    assert _score(prm, [[]]) == [[]]
    with pytest.raises(ConfigError, match="problems"):
        asyncio.run(prm.score([PROBLEM], [CANDIDATES[0], CANDIDATES[1]]))


@pytest.mark.parametrize("fixture,cls", [("qwen_dir", QwenPRM), ("rlhflow_dir", RLHFlowPRM)])
def test_over_long_input_scores_later_steps_neutral(request, fixture, cls, caplog):
    path = request.getfixturevalue(fixture)
    full = cls.from_pretrained(path, device="cpu", dtype="float32")
    steps = CANDIDATES[0]
    ids, positions = full.encode(PROBLEM, steps)
    cut = positions[1] + 1  # room for the first two steps' scores, not the third
    short = cls.from_pretrained(path, device="cpu", dtype="float32", max_length=cut)
    want = _score(full, [steps])[0]
    with caplog.at_level("WARNING"):
        got = _score(short, [steps])[0]
    assert got[:2] == pytest.approx(want[:2], abs=1e-5) and got[2] == 0.5
    assert "max_length" in caplog.text
    strict = cls.from_pretrained(
        path, device="cpu", dtype="float32", max_length=cut, overflow="error"
    )
    with pytest.raises(VerifierError, match="max_length"):
        _score(strict, [steps])


def test_aggregation_of_adapter_scores(shepherd_dir):
    prm = MathShepherdPRM.from_pretrained(shepherd_dir, device="cpu", dtype="float32")
    row = _score(prm, [CANDIDATES[0]])[0]
    assert aggregate(row, "last") == row[-1]
    assert aggregate(row, "min") == min(row)
    assert math.isclose(aggregate(row, "prod"), math.prod(row))
    assert math.isclose(aggregate(row, "mean"), sum(row) / len(row))


def test_loader_detects_qwen_layout_and_refuses_ambiguity(qwen_dir, shepherd_dir, rlhflow_dir):
    assert detect_prm_style(qwen_dir) == "qwen"
    prm = load_verifier(str(qwen_dir), device="cpu", dtype="float32")
    assert isinstance(prm, QwenPRM) and prm.name == "qwen_prm"
    with pytest.raises(ConfigError, match="math_shepherd_prm"):
        load_verifier(shepherd_dir)
    prm = load_verifier("rlhflow_prm", path=rlhflow_dir, device="cpu", dtype="float32")
    assert isinstance(prm, RLHFlowPRM)
    with pytest.raises(ConfigError, match="path="):
        load_verifier("qwen_prm")


def test_loader_refuses_random_head_and_remote_code(tmp_path, qwen_dir):
    """A causal-LM checkpoint loaded as a token classifier would score with a random head."""
    tok = transformers.AutoTokenizer.from_pretrained(qwen_dir)
    cfg = transformers.Qwen2Config(vocab_size=len(tok), **TINY)
    lm_dir = _save(tmp_path, "lm", transformers.Qwen2ForCausalLM(cfg), tok)
    with pytest.raises(ModelError, match="random head"):
        QwenPRM.from_pretrained(lm_dir, device="cpu", dtype="float32")
    remote = tmp_path / "remote"
    remote.mkdir()
    config = json.loads((qwen_dir / "config.json").read_text())
    config["architectures"] = ["Qwen2ForProcessRewardModel"]
    (remote / "config.json").write_text(json.dumps(config))
    for f in qwen_dir.iterdir():
        if f.name != "config.json":
            (remote / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ConfigError, match="trust_remote_code=True"):
        QwenPRM.from_pretrained(remote, device="cpu", dtype="float32")
    with pytest.raises(ModelError, match="config.json"):
        QwenPRM.from_pretrained(tmp_path / "nowhere")


def test_tokenizer_without_layout_tokens_is_refused(rlhflow_dir):
    with pytest.raises(ModelError, match="<extra_0>"):
        QwenPRM.from_pretrained(rlhflow_dir, device="cpu", dtype="float32")


def test_prm_inside_best_of_n(qwen_dir, scripted):
    prm = QwenPRM.from_pretrained(qwen_dir, device="cpu", dtype="float32")
    res = asyncio.run(
        BestOfN(n=5, round_size=5, adaptive=False, select="best", max_tokens=256).run(
            PROBLEM, scripted, prm, Budget()
        )
    )
    assert res.ledger.verifier_calls == 1
    assert all(c.score is not None and 0 <= c.score <= 1 for c in res.candidates)
    assert all(len(c.step_scores) == len(c.text.split("\n\n")) for c in res.candidates)
