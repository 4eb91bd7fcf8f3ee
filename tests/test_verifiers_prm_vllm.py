"""Qwen2.5-Math-PRM on vLLM's pooling runner (``VLLMQwenPRM``) against the transformers adapter.

A tiny random ``Qwen2ForProcessRewardModel`` (Qwen2 decoder + the official Linear-ReLU-Linear
2-class head, ``<extra_0>`` separator, Qwen chat template) is built here, saved with the
official layout (``architectures=["Qwen2ForProcessRewardModel"]`` and the head's model code
behind ``auto_map``), then scored twice: by ``QwenPRM`` (transformers, running that model code
with ``trust_remote_code=True``) and by ``VLLMQwenPRM`` (vLLM's own implementation; no remote
code). Both in fp32; the per-step scores must agree within ``TOL``.

The decoder is the one ``test_verifiers_prm`` uses except ``head_dim``: vLLM's CPU attention
backend supports head sizes 32..512 only, so the heads are 32 wide here (hidden 64, 2 query
heads, 1 KV head) instead of 8.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from test_verifiers_prm import CANDIDATES, PROBLEM, QWEN_TEMPLATE, TINY, _tokenizer  # noqa: E402

from ttscale.errors import BackendUnavailable, ConfigError, VerifierError  # noqa: E402
from ttscale.verifiers import load_verifier  # noqa: E402
from ttscale.verifiers.prm import QwenPRM, VLLMQwenPRM  # noqa: E402

pytestmark = pytest.mark.own_engine  # builds its own vLLM engine: see tests/conftest.py

TOL = 1e-4
"""fp32, vLLM's CPU attention vs transformers' SDPA: measured max |diff| 6e-7 over 8 steps."""

# The official checkpoints ship their head as model code; this is its layout.
MODELING = """
from torch import nn
from transformers import Qwen2Model, Qwen2PreTrainedModel
from transformers.modeling_outputs import TokenClassifierOutput


class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = 2
        self.model = Qwen2Model(config)
        h = config.hidden_size
        self.score = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return TokenClassifierOutput(logits=self.score(hidden))
"""
VLLM_TINY = {**TINY, "hidden_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1}


@pytest.fixture(scope="module")
def prm_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("prm_vllm") / "qwen_prm"
    path.mkdir()
    (path / "modeling_qwen2_rm.py").write_text(MODELING)
    namespace: dict = {}
    exec(MODELING, namespace)  # the same class the checkpoint ships
    tok = _tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"], QWEN_TEMPLATE)
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=len(tok), num_labels=2, **VLLM_TINY)
    model = namespace["Qwen2ForProcessRewardModel"](cfg)
    with torch.no_grad():  # a wider head than init's std 0.02, so scores spread over (0, 1)
        for p in model.score.parameters():
            p.normal_(0.0, 0.5)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["Qwen2ForProcessRewardModel"]
    config["auto_map"] = {"AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"}
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def hf_prm(prm_dir):
    return QwenPRM.from_pretrained(prm_dir, device="cpu", dtype="float32", trust_remote_code=True)


@pytest.fixture(scope="module")
def vllm_prm(prm_dir):
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed")
    start = time.perf_counter()
    prm = VLLMQwenPRM.from_pretrained(prm_dir, dtype="float32", max_length=512)
    print(f"vLLM PRM engine loaded in {time.perf_counter() - start:.1f} s")
    return prm


def _score(prm, cands):
    return asyncio.run(prm.score([PROBLEM] * len(cands), cands))


def _count_encode_calls(prm, monkeypatch):
    calls = []
    real = prm.model.encode

    def spy(prompts, *args, **kwargs):
        calls.append(len(prompts))
        return real(prompts, *args, **kwargs)

    monkeypatch.setattr(prm.model, "encode", spy)
    return calls


# -- engine tests --------------------------------------------------------------------------
@pytest.mark.real_model
def test_vllm_scores_match_transformers(vllm_prm, hf_prm, monkeypatch):
    calls = _count_encode_calls(vllm_prm, monkeypatch)
    got = _score(vllm_prm, CANDIDATES + [[]])
    assert calls == [len(CANDIDATES)]  # every non-empty candidate in ONE pooling call
    want = _score(hf_prm, CANDIDATES)
    assert got[-1] == []
    assert [len(r) for r in got[:-1]] == [len(c) for c in CANDIDATES]
    flat_got = [s for row in got[:-1] for s in row]
    flat_want = [s for row in want for s in row]
    diff = max(abs(a - b) for a, b in zip(flat_got, flat_want, strict=True))
    print(f"max |vLLM - transformers| over {len(flat_got)} steps: {diff:.2e}")
    assert diff < TOL
    assert max(flat_want) - min(flat_want) > 0.05  # the comparison is not of constants


@pytest.mark.real_model
def test_vllm_step_alignment_skips_separators_typed_in_steps(vllm_prm):
    """A step containing '<extra_0>' adds a separator token the STEP pooler also returns;
    the adapter still scores exactly the separators it inserted."""
    steps = CANDIDATES[3]
    ids, positions = vllm_prm.encode(PROBLEM, steps)
    separators = [k for k, t in enumerate(ids) if t == vllm_prm.separator_id]
    assert len(separators) == len(steps) + 1 and set(positions) < set(separators)
    assert vllm_prm._rows(ids, positions, len(separators)) == [
        separators.index(p) for p in positions
    ]
    (row,) = _score(vllm_prm, [steps])
    assert len(row) == len(steps)


@pytest.mark.real_model
def test_vllm_batch_invariance(vllm_prm):
    alone = [_score(vllm_prm, [c])[0] for c in CANDIDATES]
    together = _score(vllm_prm, CANDIDATES + CANDIDATES[:2])
    for a, b in zip(alone + alone[:2], together, strict=True):
        assert len(a) == len(b)
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-5


@pytest.mark.real_model
def test_vllm_over_long_input_scores_later_steps_neutral(vllm_prm, caplog):
    steps = CANDIDATES[0]
    ids, positions = vllm_prm.encode(PROBLEM, steps)
    cut = positions[1] + 1  # room for the first two steps' scores, not the third
    llm, tok = vllm_prm.model, vllm_prm.tokenizer
    short = VLLMQwenPRM(llm, tok, max_length=cut)
    want = _score(vllm_prm, [steps])[0]
    with caplog.at_level("WARNING"):
        got = _score(short, [steps])[0]
    assert got[:2] == pytest.approx(want[:2], abs=1e-5) and got[2] == 0.5
    assert "max_length" in caplog.text
    with pytest.raises(VerifierError, match="max_length"):
        _score(VLLMQwenPRM(llm, tok, max_length=cut, overflow="error"), [steps])
    with pytest.raises(ConfigError, match="max_model_len"):
        VLLMQwenPRM(llm, tok, max_length=10_000)


@pytest.mark.real_model
def test_vllm_refuses_head_size_the_cpu_backend_cannot_run(tmp_path, prm_dir):
    """With head_dim 8 (test_verifiers_prm's TINY) vLLM CPU loads, then every request fails
    with 'Unsupported CPU attention configuration: head_dim=8'; refuse at load instead."""
    if importlib.util.find_spec("vllm") is None or torch.cuda.is_available():
        pytest.skip("checks vLLM's CPU attention backend")
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    for f in prm_dir.iterdir():
        (narrow / f.name).write_bytes(f.read_bytes())
    config = json.loads((prm_dir / "config.json").read_text())
    config.update(TINY)  # hidden 32 / 4 heads: head_dim 8
    (narrow / "config.json").write_text(json.dumps(config))
    with pytest.raises(BackendUnavailable, match=r"head_dim=8.*QwenPRM\.from_pretrained"):
        VLLMQwenPRM.from_pretrained(narrow, dtype="float32")


# -- loader checks (no engine started) ------------------------------------------------------
def test_vllm_loader_refuses_other_architectures(tmp_path, prm_dir):
    other = tmp_path / "tokcls"
    other.mkdir()
    config = json.loads((prm_dir / "config.json").read_text())
    config["architectures"] = ["Qwen2ForTokenClassification"]
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"QwenPRM\.from_pretrained"):
        VLLMQwenPRM.from_pretrained(other)
    with pytest.raises(ConfigError, match="device='auto'"):
        VLLMQwenPRM.from_pretrained(prm_dir, device="tpu")


def test_registry_routes_the_vllm_engine(prm_dir, monkeypatch):
    seen = []
    monkeypatch.setattr(
        VLLMQwenPRM, "from_pretrained", classmethod(lambda cls, path, **kw: seen.append(kw))
    )
    with pytest.raises(ConfigError, match="Verifier protocol"):  # the stub returns None
        load_verifier("qwen_prm_vllm", path=prm_dir, max_length=256)
    with pytest.raises(ConfigError, match="Verifier protocol"):
        load_verifier(str(prm_dir), engine="vllm")
    assert seen == [{"max_length": 256}, {}]
    with pytest.raises(ConfigError, match="only qwen_prm"):
        load_verifier("math_shepherd_prm", path=prm_dir, engine="vllm")
    with pytest.raises(ConfigError, match="path="):
        load_verifier("qwen_prm_vllm")
