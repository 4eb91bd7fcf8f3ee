"""HFBackend's long-rollout mode (``sparse_attention=TopKBlocks(...)``) on a tiny random Qwen2.

The model (2 layers, 4 query / 2 KV heads, head dim 16) and a WordLevel tokenizer with a chat
template are built in the test and saved to a temp dir, so no weights are needed. Checks:
greedy tokens match dense ``sdpa`` when ``k`` covers every block (the kernel path forced on),
the sparse path really runs for long contexts and gives the same tokens with the C++ kernel
and the torch reference, left-padded batches work, short contexts stay dense, and the ledger
prices sparse decode below dense. One ``real_model`` check runs the embedded 0.5B model.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ttscale import GenerationRequest  # noqa: E402
from ttscale.backends import HFBackend  # noqa: E402
from ttscale.budget import Ledger  # noqa: E402
from ttscale.kernels import TopKBlocks  # noqa: E402

WORDS = [f"w{i}" for i in range(120)]
TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} <end> {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    path = tmp_path_factory.mktemp("tiny_qwen2")
    specials = ["<pad>", "<unk>", "<eos>", "<end>", "<system>", "<user>", "<assistant>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<eos>",
        chat_template=TEMPLATE,
    )
    fast.save_pretrained(path)
    cfg = Qwen2Config(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.2,
        eos_token_id=vocab["<eos>"],
        pad_token_id=vocab["<pad>"],
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    return path


def _prompt(n: int, seed: int) -> tuple[int, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(int(t) for t in torch.randint(7, 7 + len(WORDS), (n,), generator=g))


def _greedy(backend: HFBackend, prompts, max_tokens: int = 40) -> list[tuple[int, ...]]:
    reqs = [GenerationRequest(p, n=1, max_tokens=max_tokens, temperature=0.0) for p in prompts]
    outs = asyncio.run(backend.generate(reqs))
    return [o.completions[0].token_ids for o in outs]


def _backend(path, sparse=None) -> HFBackend:
    return HFBackend(
        path, dtype="float32", device="cpu", max_model_len=1024, sparse_attention=sparse
    )


def test_full_k_matches_dense_sdpa(tiny_model, monkeypatch):
    """k covers every block: the kernel path (forced on past the threshold) is exact attention."""
    # sparse_at normally stays dense when selection cannot save reads; force the kernel on.
    monkeypatch.setattr(TopKBlocks, "sparse_at", lambda self, n: n > self.threshold)
    prompts = [_prompt(150, 1), _prompt(97, 2)]  # left-padded batch of unequal rows
    dense = _greedy(_backend(tiny_model), prompts)
    sparse_be = _backend(tiny_model, TopKBlocks(block_size=16, k=64, threshold=32, impl="cpu"))
    assert _greedy(sparse_be, prompts) == dense
    assert sparse_be._sparse.sparse_calls > 0


def test_sparse_path_runs_and_cpu_matches_reference(tiny_model):
    cfg = TopKBlocks(block_size=16, k=4, threshold=48, num_sink=1, num_local=1, impl="cpu")
    assert cfg.sparse_at(200)
    prompts = [_prompt(180, 3), _prompt(120, 4)]
    cpu = _backend(tiny_model, cfg)
    ref = _backend(tiny_model, dataclasses.replace(cfg, impl="reference"))
    got = _greedy(cpu, prompts)
    assert got == _greedy(ref, prompts)
    assert cpu._sparse.sparse_calls > 0 and ref._sparse.sparse_calls > 0
    prof = cpu.profile()
    assert prof["sparse_attention"]["k"] == 4 and prof["sparse_layer_calls"] > 0


def test_short_context_stays_dense(tiny_model):
    be = _backend(tiny_model, TopKBlocks(block_size=16, k=4, threshold=512))
    prompts = [_prompt(40, 5)]
    assert _greedy(be, prompts, 20) == _greedy(_backend(tiny_model), prompts, 20)
    assert be._sparse.sparse_calls == 0 and be._sparse.dense_decode_calls > 0


def test_ledger_prices_sparse_decode_below_dense(tiny_model):
    dense, sparse = _backend(tiny_model), _backend(tiny_model, TopKBlocks(16, 4, threshold=48))
    assert sparse.model_spec.sparse_decode == TopKBlocks(16, 4, threshold=48).cost
    req = GenerationRequest(_prompt(300, 6), n=2, max_tokens=64, temperature=0.0)
    wd, ws = (Ledger().worst_case_eflops([req], b) for b in (dense, sparse))
    assert 0 < ws < wd
    short = GenerationRequest(_prompt(20, 7), n=2, max_tokens=8, temperature=0.0)
    assert Ledger().worst_case_eflops([short], dense) == Ledger().worst_case_eflops([short], sparse)


@pytest.mark.real_model
def test_embedded_model_sparse_matches_dense_when_k_covers_context(monkeypatch):
    """The embedded 0.5B model: a ~600-token prompt, k covering it, kernel forced on."""
    monkeypatch.setattr(TopKBlocks, "sparse_at", lambda self, n: n > self.threshold)
    from ttscale.types import Problem

    be = HFBackend(seed=0, sparse_attention=TopKBlocks(block_size=64, k=64, threshold=256))
    text = " ".join(f"item {i} costs {i * 7 % 50} dollars." for i in range(80))
    ids = be.render(Problem(text + " What does item 12 cost? Answer with a number."))
    assert len(ids) > 256
    req = GenerationRequest(ids, n=1, max_tokens=16, temperature=0.0)
    sparse = asyncio.run(be.generate([req]))[0].completions[0].token_ids
    assert be._sparse.sparse_calls > 0
    be._model.set_attn_implementation("sdpa")
    dense = asyncio.run(be.generate([req]))[0].completions[0].token_ids
    assert sparse == dense


def test_preallocated_cache_behaves_like_dynamic_cache(tiny_model):
    from transformers import AutoModelForCausalLM, DynamicCache

    from ttscale.kernels.hf_attention import preallocated_cache

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    ids = torch.tensor([list(_prompt(50, 8))])
    pre, stock = preallocated_cache(model, 40), DynamicCache(config=model.config)
    with torch.no_grad():
        for cache in (pre, stock):  # 30 tokens, then 20 more: the 40-token buffer must grow
            model(input_ids=ids[:, :30], past_key_values=cache)
            model(input_ids=ids[:, 30:], past_key_values=cache)
    for a, b in zip(pre.layers, stock.layers, strict=True):
        torch.testing.assert_close(a.keys, b.keys, atol=0, rtol=0)
    for cache in (pre, stock):
        cache.crop(-10)
        cache.batch_repeat_interleave(2)
    assert pre.get_seq_length() == stock.get_seq_length() == 40
    for a, b in zip(pre.layers, stock.layers, strict=True):
        assert a.keys.shape == b.keys.shape == (2, 2, 40, 16)
        torch.testing.assert_close(a.values, b.values, atol=0, rtol=0)
