"""Block top-k sparse decode inside the default vLLM engine (``VLLMBackend(sparse=...)``).

Fast tests (no engine): ``sparse_config`` parsing and validation, the paged block summaries
against the contiguous reference, block selection against a brute-force re-implementation,
which rows go sparse, and the stock-path fallbacks of the attention impl.

Engine tests (``real_model``, ``own_engine``; a tiny random Qwen2 built here, 2 layers, 4
query / 2 KV heads, head dim 32, 32-token blocks): the override is what runs (its impl class
in the loaded model, its counters); with top-k covering every block greedy tokens and
logprobs equal a stock engine's; with a small top-k every decode row's output equals exact
attention over the blocks it kept, and those blocks are the top-scoring ones, both
recomputed here from the keys and values the engine wrote (``vllm_sparse.set_trace``), also
in mixed prefill+decode batches (whose prefill rows must equal full causal attention) and
for requests served from the prefix cache; blocks whose summary is unknown are always kept.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import math
import types

import pytest

torch = pytest.importorskip("torch")

from ttscale import GenerationRequest  # noqa: E402
from ttscale.errors import ConfigError  # noqa: E402
from ttscale.kernels import TopKBlocks, sparse_config  # noqa: E402
from ttscale.kernels.paged import PagedSummaries, quest_bounds_paged, select_rows  # noqa: E402
from ttscale.kernels.reference import block_summaries  # noqa: E402

pytestmark = pytest.mark.own_engine  # builds its own vLLM engines: see tests/conftest.py

BS = 32
HEAD_DIM = 32
SCALE = HEAD_DIM**-0.5
WORDS = 120
TOL = 2e-4
"""fp32: vLLM's CPU kernel vs attention recomputed here in fp32 from the written K/V."""


# -- config ---------------------------------------------------------------------------------
def test_sparse_config_parses_the_cli_forms():
    assert sparse_config(None) is None and sparse_config("off") is None
    assert sparse_config(False) is None
    assert sparse_config(True) == TopKBlocks() == sparse_config("on")
    cfg = sparse_config("k=64, sink=2, recent=3, threshold=8192, block=32")
    assert cfg == TopKBlocks(k=64, num_sink=2, num_local=3, threshold=8192, block_size=32)
    assert sparse_config('{"top_k": 16}') == TopKBlocks(k=16)
    assert sparse_config({"k": "8"}) == TopKBlocks(k=8)
    assert sparse_config(cfg) is cfg


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("k=64,bogus=1", "unknown"),
        ("k=sixty", "integer"),
        ("k", "key=value"),
        ("{bad json", "JSON"),
        ("k=2,sink=2,recent=2", "must cover"),
        (3.5, "pass a TopKBlocks"),
    ],
)
def test_sparse_config_errors_name_the_fix(value, words):
    with pytest.raises(ConfigError, match=words):
        sparse_config(value)


def test_cli_sparse_option_reaches_the_backend_constructor():
    from ttscale.cli.options import backend_kwargs

    kw = {"model": None, "base_url": None, "script": None}
    assert backend_kwargs("vllm", **kw, sparse="k=64") == {"sparse": "k=64"}
    assert backend_kwargs("hf", **kw, sparse="on") == {"sparse_attention": TopKBlocks()}
    assert "sparse" not in backend_kwargs("vllm", **kw)
    with pytest.raises(ConfigError, match="--backend vllm or hf"):
        backend_kwargs("scripted", **kw, sparse="on")
    with pytest.raises(ConfigError, match="unknown"):
        backend_kwargs("vllm", **kw, sparse="kk=3")


@pytest.mark.parametrize(
    "argv",
    [
        ["solve", "What is 2+2?"],
        ["eval", "--dataset", "math500", "--limit", "1", "--out", "unused-rows.jsonl"],
        ["serve"],
        ["mcp"],
        ["pool", "build", "--dataset", "math500", "--limit", "1", "--out", "unused-pool"],
    ],
)
def test_every_engine_command_takes_sparse(argv, tmp_path, monkeypatch):
    """``--sparse`` exists on each command that loads an engine, and is checked before any
    engine loads: a wrong backend or a malformed config is refused with the fix named."""
    from typer.testing import CliRunner

    from ttscale.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, [*argv, "--backend", "scripted", "--sparse", "on"])
    assert r.exit_code != 0 and isinstance(r.exception, ConfigError), r.output
    assert "--backend vllm or hf" in str(r.exception)
    r = runner.invoke(app, [*argv, "--backend", "vllm", "--sparse", "k=0"])
    assert r.exit_code != 0 and isinstance(r.exception, ConfigError), r.output


def test_auto_falls_back_to_hf_with_the_same_sparse_config(monkeypatch):
    """``make_backend("auto", sparse=...)`` on a host without vLLM gives the transformers
    backend the same block top-k config (its own kernels), not a TypeError."""
    import ttscale.backends as backends
    from ttscale.backends import hf, vllm
    from ttscale.errors import BackendUnavailable

    def no_vllm(**kwargs):
        raise BackendUnavailable("vllm is not installed")

    seen = {}

    def fake_hf(**kwargs):
        seen.update(kwargs)
        return "hf-backend"

    monkeypatch.setattr(vllm, "VLLMBackend", no_vllm)
    monkeypatch.setattr(hf, "HFBackend", fake_hf)
    assert backends.make_backend("auto", sparse="k=16,recent=3") == "hf-backend"
    assert seen == {"sparse_attention": TopKBlocks(k=16, num_local=3)}


def test_vllm_backend_refuses_settings_it_cannot_honour(monkeypatch):
    from ttscale.backends import vllm as vb

    ok = TopKBlocks(block_size=32, k=8)
    with pytest.raises(ConfigError, match="CPU attention backend only"):
        vb._check_sparse(ok, None, True, {})
    with pytest.raises(ConfigError, match="block_size=64"):
        vb._check_sparse(ok, 64, False, {})
    with pytest.raises(ConfigError, match="multiple of 32"):
        vb._check_sparse(TopKBlocks(block_size=48), None, False, {})
    with pytest.raises(ConfigError, match="num_local"):
        vb._check_sparse(TopKBlocks(block_size=32, num_local=0), None, False, {})
    with pytest.raises(ConfigError, match="impl"):
        vb._check_sparse(TopKBlocks(block_size=32, impl="cpu"), None, False, {})
    with pytest.raises(ConfigError, match="KV connector"):
        vb._check_sparse(ok, None, False, {"kv_transfer_config": {"x": 1}})
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    with pytest.raises(ConfigError, match="in-process"):
        vb._check_sparse(ok, None, False, {})
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    assert vb._check_sparse(ok, 32, False, {}) == 32


# -- paged summaries and selection (plain torch) --------------------------------------------
def _paged(num_blocks: int, seq_len: int, seed: int, hkv: int = 2, d: int = 8):
    """Keys of one sequence written into random physical blocks, in chunks of mixed sizes."""
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(seq_len, hkv, d, generator=g)
    nb = -(-seq_len // BS)
    table = torch.randperm(num_blocks, generator=g)[:nb]
    summ = PagedSummaries.empty(num_blocks, hkv, d, BS, torch.float32)
    # a stale block from an earlier request: reset by the offset-0 write before it is read
    summ.update(torch.full((3, hkv, d), 50.0), table[:1] * BS + torch.tensor([5, 6, 7]))
    pos, step = 0, 0
    while pos < seq_len:
        n = min([45, 1, 7, 32][step % 4], seq_len - pos)
        slots = table[torch.arange(pos, pos + n) // BS] * BS + torch.arange(pos, pos + n) % BS
        pad = torch.tensor([-1, -1])  # padding slots are skipped
        summ.update(torch.cat([keys[pos : pos + n], keys[:2] + 99]), torch.cat([slots, pad]))
        pos, step = pos + n, step + 1
    return keys, table, summ


def test_paged_summaries_equal_the_contiguous_reference():
    keys, table, summ = _paged(num_blocks=40, seq_len=301, seed=1)
    ref = block_summaries(keys.permute(1, 0, 2)[None], BS)[0]  # (Hkv, NB, 2, D)
    assert torch.equal(summ.mn[table], ref[:, :, 0].permute(1, 0, 2))
    assert torch.equal(summ.mx[table], ref[:, :, 1].permute(1, 0, 2))
    expected = [min(BS, 301 - i * BS) for i in range(len(table))]
    assert summ.count[table].tolist() == expected


def _block_masses(q, keys, num_sink, num_local, unknown=()):
    """``(forced, mass)`` of one row, from the keys directly: Quest bounds per head and block,
    softmax over the candidate blocks per head, summed over heads."""
    L = keys.shape[0]
    nb = -(-L // BS)
    hq, hkv = q.shape[0], keys.shape[1]
    forced = {j for j in range(nb) if j < num_sink or j >= nb - num_local or j in unknown}
    cand = [j for j in range(nb) if j not in forced]
    mass = dict.fromkeys(cand, 0.0)
    for h in range(hq if cand else 0):
        kv = h // (hq // hkv)
        bounds = []
        for j in cand:
            blk = keys[j * BS : (j + 1) * BS, kv]  # (n, D)
            mn, mx = blk.min(0).values, blk.max(0).values
            qs = q[h] * SCALE
            bounds.append(float(torch.maximum(qs * mn, qs * mx).sum()))
        top = max(bounds)
        e = [math.exp(b - top) for b in bounds]
        for j, x in zip(cand, e, strict=True):
            mass[j] += x / sum(e)
    return forced, mass


def _brute_force_selection(q, keys, k, num_sink, num_local, unknown=()):
    """Blocks a row keeps: every block if at most ``k``, else the forced ones and the
    candidates with the most mass (ties broken by index)."""
    nb = -(-keys.shape[0] // BS)
    if nb <= k:
        return set(range(nb))
    forced, mass = _block_masses(q, keys, num_sink, num_local, unknown)
    rest = sorted(mass, key=lambda j: -mass[j])[: max(0, k - len(forced))]
    return forced | set(rest)


def _assert_top_blocks(kept, q, keys, k, num_sink, num_local, unknown=()):
    """``kept`` is a valid selection: forced blocks in, the right count, and no dropped
    candidate with more mass than a kept one (candidates may tie, e.g. at mass 0)."""
    nb = -(-keys.shape[0] // BS)
    if nb <= k:
        assert set(kept) == set(range(nb))
        return
    forced, mass = _block_masses(q, keys, num_sink, num_local, unknown)
    assert forced <= set(kept) and len(kept) == max(k, len(forced))
    ins = [mass[j] for j in kept if j not in forced]
    outs = [m for j, m in mass.items() if j not in kept]
    if ins and outs:
        assert min(ins) >= max(outs) - 1e-5, (min(ins), max(outs))


@pytest.mark.parametrize(("seq_len", "k"), [(301, 4), (301, 3), (301, 10), (300, 64), (33, 2)])
def test_select_rows_matches_brute_force(seq_len, k):
    keys, table, summ = _paged(num_blocks=40, seq_len=seq_len, seed=seq_len + k)
    q = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(7)) * 3
    sel, kept = select_rows(
        q, table[None], torch.tensor([seq_len]), summ, k=k, num_sink=1, num_local=2, scale=SCALE
    )
    got = {int(j) for j in sel[0, : int(kept[0])]}
    assert got == _brute_force_selection(q[0], keys, k, 1, 2)
    assert sel[0, : int(kept[0])].tolist() == sorted(got)  # ascending: the table's order
    assert (sel[0, int(kept[0]) :] == -1).all()


def test_unknown_blocks_are_always_kept():
    keys, table, summ = _paged(num_blocks=40, seq_len=301, seed=3)
    summ.count[table[4]] = 0  # block 4 filled without passing through the update
    summ.count[table[6]] = BS + 2  # block 6 rewritten (rejected speculative tokens)
    q = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(2))
    sel, kept = select_rows(
        q, table[None], torch.tensor([301]), summ, k=4, num_sink=1, num_local=2, scale=SCALE
    )
    got = {int(j) for j in sel[0, : int(kept[0])]}
    assert {4, 6} <= got and int(kept[0]) >= 4
    assert got == _brute_force_selection(q[0], keys, 4, 1, 2, unknown={4, 6})


def test_rows_keep_their_own_budget_in_a_batch():
    """Rows of different lengths in one call: each keeps min(blocks, k), never the batch max."""
    k1, t1, s = _paged(num_blocks=64, seq_len=301, seed=5)
    g = torch.Generator().manual_seed(9)
    t2 = torch.tensor([j for j in torch.randperm(64, generator=g).tolist() if j not in t1][:3])
    k2 = torch.randn(70, 2, 8, generator=g)
    s.update(k2, t2[torch.arange(70) // BS] * BS + torch.arange(70) % BS)
    s.count[t1[5]] = 0
    tables = torch.zeros(2, len(t1), dtype=torch.long)
    tables[0], tables[1, :3] = t1, t2
    q = torch.randn(2, 4, 8, generator=g)
    sel, kept = select_rows(
        q, tables, torch.tensor([301, 70]), s, k=4, num_sink=1, num_local=1, scale=SCALE
    )
    assert kept.tolist() == [4, 3]  # row 0: its unknown block is one of the sink/top slots
    assert {int(j) for j in sel[1, :3]} == {0, 1, 2}


def test_quest_bounds_are_upper_bounds_of_every_score():
    g = torch.Generator().manual_seed(0)
    q, keys = torch.randn(3, 4, 8, generator=g), torch.randn(3, 5, BS, 2, 8, generator=g)
    b = quest_bounds_paged(q, keys.amin(2), keys.amax(2), SCALE)  # (R, Hq, NB)
    scores = torch.einsum("rhd,rjtkd->rhjkt", q * SCALE, keys)  # every head x kv head
    own = torch.stack([scores[:, h, :, h // 2] for h in range(4)], 1).amax(-1)
    assert (b >= own - 1e-5).all() and torch.allclose(b.amax(-1), b.amax(-1))


# -- the impl's row choice and fallbacks (no engine) ----------------------------------------
vllm_spec = importlib.util.find_spec("vllm")
needs_vllm = pytest.mark.skipif(vllm_spec is None, reason="vLLM is not installed")


def _impl(monkeypatch, engine_id="unit", **kwargs):
    from vllm.v1.attention.backends import cpu_attn

    from ttscale.kernels import vllm_sparse as vs

    extra = {vs.CONFIG_KEY: {"id": engine_id, "config": {"k": 4, "block_size": BS}}}
    monkeypatch.setattr(
        cpu_attn,
        "get_current_vllm_config",
        lambda: types.SimpleNamespace(model_config=types.SimpleNamespace(dtype=torch.float32)),
    )
    monkeypatch.setattr(
        vs, "get_current_vllm_config", lambda: types.SimpleNamespace(additional_config=extra)
    )
    args = {"alibi_slopes": None, "sliding_window": None, "kv_cache_dtype": "auto", **kwargs}
    return vs.SparseCPUAttentionImpl(4, HEAD_DIM, SCALE, 2, **args)


def _metadata(qsl, lens):
    return types.SimpleNamespace(
        query_start_loc=torch.tensor(qsl, dtype=torch.int32),
        seq_lens=torch.tensor(lens, dtype=torch.int32),
        causal=True,
        dynamic_causal=None,
        ttscale_sched_args={"x": 1},
        ttscale_cache={},
    )


@needs_vllm
def test_long_decode_rows_skip_prefill_speculative_and_short_rows(monkeypatch):
    impl = _impl(monkeypatch)
    cfg = TopKBlocks(block_size=BS, k=4, threshold=256)
    md = _metadata([0, 1, 3, 4, 5, 105], [1000, 1000, 100, 257, 900])
    # row 1: two query tokens (speculative / chunk); row 2: short; row 4: a prefill chunk
    assert impl._long_decode_rows(md, cfg) == [0, 3]


@needs_vllm
@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"sliding_window": 128}, "sliding window"),
        ({"alibi_slopes": [0.5, 0.25, 0.1, 0.05]}, "ALiBi"),
        ({"attn_type": "encoder_only"}, "attention"),
        ({"kv_sharing_target_layer_name": "layers.0.attn"}, "shared"),
    ],
)
def test_fallbacks_take_the_stock_kernel(monkeypatch, kwargs, why):
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackendImpl

    from ttscale.kernels import vllm_sparse as vs

    impl = _impl(monkeypatch, engine_id=f"fb-{why}", **kwargs)
    assert impl.stock_reason is not None and why in impl.stock_reason
    calls = []
    monkeypatch.setattr(
        CPUAttentionBackendImpl, "forward", lambda self, *a, **kw: calls.append(a[5]) or a[6]
    )
    md = _metadata([0, 1], [5000])
    impl.summaries = PagedSummaries.empty(8, 2, HEAD_DIM, BS, torch.float32)
    q = torch.zeros(1, 4, HEAD_DIM)
    impl.forward(None, q, q, q, None, md, torch.zeros(1, 4, HEAD_DIM))
    assert calls == [md]  # the stock kernel, with the metadata untouched
    st = vs.stats(f"fb-{why}")
    assert (st.fallback_calls, st.sparse_calls) == (1, 0)


@needs_vllm
def test_non_causal_batches_and_missing_summaries_fall_back(monkeypatch):
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackendImpl

    from ttscale.kernels import vllm_sparse as vs

    impl = _impl(monkeypatch, engine_id="fb-md")
    monkeypatch.setattr(CPUAttentionBackendImpl, "forward", lambda self, *a, **kw: a[6])
    md = _metadata([0, 1], [5000])
    q = torch.zeros(1, 4, HEAD_DIM)
    impl.forward(None, q, q, q, None, md, q)  # no cache update has run: no summaries
    impl.summaries = PagedSummaries.empty(8, 2, HEAD_DIM, BS, torch.float32)
    md.dynamic_causal = torch.ones(1, dtype=torch.bool)
    impl.forward(None, q, q, q, None, md, q)
    assert vs.stats("fb-md").fallback_calls == 2


@needs_vllm
def test_register_is_idempotent_and_the_plugin_needs_the_flag(monkeypatch):
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    from ttscale.kernels import vllm_sparse as vs

    before = AttentionBackendEnum.CPU_ATTN.get_path()
    try:
        AttentionBackendEnum.CPU_ATTN.clear_override()
        monkeypatch.delenv(vs.ENV_FLAG, raising=False)
        vs.plugin()
        assert not AttentionBackendEnum.CPU_ATTN.is_overridden()
        monkeypatch.setenv(vs.ENV_FLAG, "1")
        vs.plugin()
        assert AttentionBackendEnum.CPU_ATTN.get_class() is vs.SparseCPUAttentionBackend
        assert vs.register() and vs.register()
    finally:
        if "ttscale" not in before:
            AttentionBackendEnum.CPU_ATTN.clear_override()


@needs_vllm
def test_doctor_says_whether_sparse_decode_is_available(monkeypatch):
    from ttscale.cli import doctor

    monkeypatch.setattr(doctor, "cuda_info", lambda: None)
    check = doctor._check_sparse_decode()
    assert (check.name, check.status) == ("sparse decode", "ok")
    assert "available on the CPU engine" in check.detail
    from vllm import _custom_ops as ops

    monkeypatch.delattr(ops, "cpu_attn_get_scheduler_metadata")
    check = doctor._check_sparse_decode()
    assert check.status == "warn" and "cpu_attn_get_scheduler_metadata" in check.detail
    monkeypatch.setattr(doctor, "cuda_info", lambda: types.SimpleNamespace(name="H100"))
    check = doctor._check_sparse_decode()
    assert check.status == "warn" and "HFBackend" in (check.fix or "")


def test_pyproject_declares_the_plugin_entry_point():
    import tomllib
    from pathlib import Path

    data = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    plugins = data["project"]["entry-points"]["vllm.general_plugins"]
    assert plugins["ttscale_sparse"] == "ttscale.kernels.vllm_sparse:plugin"


# -- engine tests ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    path = tmp_path_factory.mktemp("tiny_qwen2_vllm")
    specials = ["<pad>", "<unk>", "<eos>"]
    vocab = {w: i for i, w in enumerate(specials + [f"w{i}" for i in range(WORDS)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    ).save_pretrained(path)
    cfg = Qwen2Config(
        vocab_size=len(vocab),
        hidden_size=4 * HEAD_DIM,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        initializer_range=0.2,
        eos_token_id=2,
        pad_token_id=0,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    return path


ENGINE = {
    "dtype": "float32",
    "max_model_len": 2048,
    "kv_cache_gib": 1,
    "num_gpu_blocks_override": 384,
    "max_num_batched_tokens": 256,  # chunked prefill: decode rows share steps with prefills
}


def _prompt(n: int, seed: int) -> tuple[int, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(int(t) for t in torch.randint(3, 3 + WORDS, (n,), generator=g))


PROMPTS = [_prompt(600, 1), _prompt(700, 2)]


def _greedy(backend, prompts, max_tokens=12):
    reqs = [
        GenerationRequest(p, n=1, max_tokens=max_tokens, temperature=0.0, logprobs=1)
        for p in prompts
    ]
    return asyncio.run(backend.generate(reqs))


def _tokens_logprobs(outs):
    return [(o.completions[0].token_ids, o.completions[0].logprobs) for o in outs]


@pytest.fixture(scope="module")
def stock_reference(tiny_model):
    """Greedy outputs of a stock engine; the engine is dropped before the sparse one starts
    (vLLM keeps one distributed state per process)."""
    if vllm_spec is None:
        pytest.skip("vLLM is not installed")
    from ttscale.backends import VLLMBackend

    be = VLLMBackend(tiny_model, block_size=BS, **ENGINE)
    impls = be.attention_impls
    ref = _tokens_logprobs(_greedy(be, PROMPTS))
    asyncio.run(be.close())
    del be
    gc.collect()
    return impls, ref


@pytest.fixture(scope="module")
def sparse_backend(tiny_model, stock_reference):
    from ttscale.backends import VLLMBackend

    be = VLLMBackend(tiny_model, sparse=f"k=64,threshold=64,block={BS}", **ENGINE)
    yield be
    asyncio.run(be.close())


class _Recorder:
    """Replays the engine's cache writes and checks every sparse layer call against
    attention recomputed here."""

    def __init__(self, k: int, num_sink: int, num_local: int) -> None:
        self.k, self.num_sink, self.num_local = k, num_sink, num_local
        self.kv: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
        self.checked_rows = self.mixed_calls = self.prefill_rows = 0
        self.unknown: set[int] = set()  # physical blocks whose summary the test wiped
        self.kept_logical: list[set[int]] = []

    def __call__(self, event: str, **t) -> None:
        if event == "write":
            store = self.kv.setdefault(t["layer"], {})
            for i, slot in enumerate(t["slot_mapping"].tolist()):
                if slot >= 0:
                    store[slot] = (t["key"][i], t["value"][i])
            return
        store = self.kv[t["layer"]]
        qsl = t["query_start_loc"].tolist()
        lens = t["all_seq_lens"].tolist()
        for r in range(len(qsl) - 1):
            q_len, L = qsl[r + 1] - qsl[r], lens[r]
            table = t["block_table"][r].tolist()
            pos = torch.arange(L)
            if r in t["rows"]:
                i = t["rows"].index(r)
                kept = t["selected"][i, : int(t["kept"][i])].tolist()
                self._check_selection(store, t["query"][i], table, L, kept)
                self.kept_logical.append(set(kept))
                pos = torch.cat([torch.arange(b * BS, min(L, (b + 1) * BS)) for b in kept])
            elif q_len > 1:
                self.prefill_rows += 1
            slots = [table[p // BS] * BS + p % BS for p in pos.tolist()]
            keys = torch.stack([store[x][0] for x in slots])  # (n, Hkv, D)
            vals = torch.stack([store[x][1] for x in slots])
            q = t["all_query"][qsl[r] : qsl[r + 1]]  # (q_len, Hq, D)
            see = pos[None, :] <= (L - q_len + torch.arange(q_len))[:, None]  # causal
            want = _attention(q, keys, vals, see)
            got = t["all_output"][qsl[r] : qsl[r + 1]]
            assert torch.allclose(got, want, atol=TOL), (r, (got - want).abs().max())
            self.checked_rows += 1
        if any(qsl[r + 1] - qsl[r] > 1 for r in range(len(qsl) - 1)):
            self.mixed_calls += 1

    def _check_selection(self, store, q, table, L, kept):
        nb = -(-L // BS)
        keys = torch.stack(
            [store[table[j // BS] * BS + j % BS][0] for j in range(L)]
        )  # (L, Hkv, D) from the writes the engine made
        unknown = {j for j in range(nb) if table[j] in self.unknown}
        _assert_top_blocks(kept, q, keys, self.k, self.num_sink, self.num_local, unknown)


def _attention(q, keys, vals, see):
    """Exact softmax attention of query tokens ``(T, Hq, D)`` over ``keys``/``vals``
    ``(n, Hkv, D)`` where ``see`` ``(T, n)`` allows (GQA: 2 query heads per KV head)."""
    g = q.shape[1] // keys.shape[1]
    k = keys.repeat_interleave(g, dim=1).float()  # (n, Hq, D)
    v = vals.repeat_interleave(g, dim=1).float()
    s = torch.einsum("thd,nhd->thn", q.float() * SCALE, k)
    w = torch.softmax(s.masked_fill(~see[:, None, :], float("-inf")), dim=-1)
    return torch.einsum("thn,nhd->thd", w, v)


@pytest.fixture
def recorder():
    from ttscale.kernels import vllm_sparse as vs

    rec = _Recorder(k=5, num_sink=1, num_local=2)
    vs.set_trace(rec)
    yield rec
    vs.set_trace(None)


@pytest.mark.real_model
def test_the_override_runs_in_the_loaded_model(sparse_backend, stock_reference):
    assert stock_reference[0] == ["CPUAttentionBackendImpl"]  # the stock engine's layers
    assert sparse_backend.attention_impls == ["SparseCPUAttentionImpl"]
    prof = sparse_backend.profile()
    assert prof["sparse"]["k"] == 64 and prof["block_size"] == BS
    assert sparse_backend.model_spec.sparse_decode is not None


@pytest.mark.real_model
def test_topk_covering_every_block_equals_the_stock_engine(
    sparse_backend, stock_reference, monkeypatch
):
    """k=64 >= every row's blocks: the selection keeps all blocks and the shortened table is
    the full one, so tokens and logprobs are the stock engine's, bit for bit."""
    # sparse_at stays dense when selection cannot drop a block; force the sparse path on.
    monkeypatch.setattr(TopKBlocks, "sparse_at", lambda self, n: n > self.threshold)
    sparse_backend.set_sparse(f"k=64,threshold=64,block={BS}")
    before = sparse_backend.sparse_stats()
    got = _tokens_logprobs(_greedy(sparse_backend, PROMPTS))
    after = sparse_backend.sparse_stats()
    assert after["sparse_calls"] - before["sparse_calls"] >= 2 * 11  # 2 layers x 11 steps
    assert after["blocks_kept"] - before["blocks_kept"] == (
        after["blocks_total"] - before["blocks_total"]
    )
    assert got == stock_reference[1]


@pytest.mark.real_model
def test_small_topk_is_exact_attention_over_the_selected_blocks(sparse_backend, recorder):
    sparse_backend.set_sparse(f"k=5,sink=1,recent=2,threshold=256,block={BS}")
    before = sparse_backend.sparse_stats()
    outs = _greedy(sparse_backend, [_prompt(650, 11), _prompt(1200, 12)], max_tokens=6)
    after = sparse_backend.sparse_stats()
    assert all(len(o.completions[0].token_ids) == 6 for o in outs)
    rows = after["sparse_rows"] - before["sparse_rows"]
    assert rows >= 2 * 2 * 5 and recorder.checked_rows >= rows
    kept = after["blocks_kept"] - before["blocks_kept"]
    assert kept == 5 * rows < after["blocks_total"] - before["blocks_total"]
    # chunked prefill (256 tokens a step): the 650-token row decodes beside the long prefill
    assert recorder.mixed_calls >= 2 and recorder.prefill_rows >= 2


@pytest.mark.real_model
def test_prefix_cache_hits_and_unknown_summaries(sparse_backend, recorder):
    from ttscale.kernels.vllm_sparse import IMPL_NAME

    sparse_backend.set_sparse(f"k=5,sink=1,recent=2,threshold=256,block={BS}")
    prefix = _prompt(640, 21)  # 20 full blocks
    first = _greedy(sparse_backend, [prefix + _prompt(40, 22)], max_tokens=4)[0]
    second = _greedy(sparse_backend, [prefix + _prompt(40, 23)], max_tokens=4)[0]
    assert second.cached_tokens >= 640 > first.cached_tokens
    checked = recorder.checked_rows
    assert checked >= 2 * 2 * 3
    # Forget every summary, as for blocks filled without passing through the cache update:
    # the cached prefix blocks must now all be kept, and the output stays exact over them.
    impls = [
        m.impl
        for per_worker in sparse_backend._llm.apply_model(lambda model: list(model.modules()))
        for m in per_worker
        if type(getattr(m, "impl", None)).__name__ == IMPL_NAME
    ]
    with torch.inference_mode():  # the engine made them as inference tensors
        for impl in impls:
            impl.summaries.count.zero_()
    recorder.unknown = set(range(impls[0].summaries.count.shape[0]))
    recorder.kept_logical.clear()
    third = _greedy(sparse_backend, [prefix + _prompt(40, 24)], max_tokens=4)[0]
    assert third.cached_tokens >= 640
    assert recorder.kept_logical and all(set(range(20)) <= s for s in recorder.kept_logical)


@pytest.mark.real_model
def test_short_contexts_and_dense_setting_take_the_stock_path(sparse_backend, recorder):
    sparse_backend.set_sparse(f"k=5,threshold=4096,block={BS}")
    before = sparse_backend.sparse_stats()
    _greedy(sparse_backend, [_prompt(300, 31)], max_tokens=4)
    sparse_backend.set_sparse(None)
    _greedy(sparse_backend, [_prompt(900, 32)], max_tokens=4)
    after = sparse_backend.sparse_stats()
    assert after["sparse_calls"] == before["sparse_calls"]
    assert after["stock_calls"] > before["stock_calls"]
    assert sparse_backend.model_spec.sparse_decode is None
    with pytest.raises(ConfigError, match="block_size"):
        sparse_backend.set_sparse("k=5,block=64")
