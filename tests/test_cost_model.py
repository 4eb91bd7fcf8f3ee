"""eFLOPs cost model (hand-computed toy config, monotonicity, KV growth) and the hardware
calibration preset (measure, save, load, used only on the host it was measured on)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttscale import Ledger
from ttscale.cost import (
    HARDWARE,
    Hardware,
    ModelSpec,
    calibrated_path,
    default_hardware,
    host_preset,
    load_preset,
    request_eflops,
)
from ttscale.engine.calibration import measure_hardware, save_preset
from ttscale.errors import ConfigError

# 1 layer, hidden 4, 2 query heads, 1 KV head, head_dim 2, MLP 8, vocab 10, 2 bytes/el.
TOY = ModelSpec(
    num_layers=1,
    hidden_size=4,
    num_heads=2,
    num_kv_heads=1,
    head_dim=2,
    intermediate_size=8,
    vocab_size=10,
    bytes_per_param=2,
)
TOY_HW = Hardware("toy", peak_flops=100.0, mem_bandwidth=10.0)  # intensity 10 FLOP/byte


def test_toy_params_by_hand():
    # attention 4*2*(2*2 + 2*1) = 48, MLP 3*4*8 = 96, LM head 4*10 = 40 -> 48 + 96 + 40
    assert TOY.params == 184
    assert TOY_HW.intensity == 10.0


def test_toy_request_by_hand():
    # Prompt 3 tokens, 1 cached, one sample of 2 tokens.
    # prefill: 2 fresh tokens * 2 * 184 = 736; attention 4*L*Hq*d = 16 per position, over
    #   positions 1 and 2 -> 16 * 3 = 48; prefill total 784.
    # decode at positions 3 and 4 (sum 7): compute 2*184*2 + 16*7 = 848;
    #   memory: KV 2*L*Hkv*d*2 bytes = 8 per position -> 56, weights 184*2 bytes per token
    #   (batch 1) -> 736; (56 + 736) * 10 = 7920. Total 784 + 848 + 7920 = 9552.
    got = request_eflops(TOY, TOY_HW, prompt_tokens=3, cached_tokens=1, generated=[2])
    assert got == 9552.0
    # Two samples share the weight reads: each 848 + (56 + 368) * 10 = 5088 -> 784 + 2 * 5088.
    two = request_eflops(TOY, TOY_HW, prompt_tokens=3, cached_tokens=1, generated=[2, 2])
    assert two == 784 + 2 * 5088


@settings(max_examples=60, deadline=None)
@given(
    prompt=st.integers(0, 4000),
    cached=st.integers(0, 4000),
    gen=st.lists(st.integers(0, 3000), min_size=1, max_size=4),
    extra=st.integers(1, 500),
    which=st.integers(0, 1),
)
def test_monotone_in_every_length(prompt, cached, gen, extra, which):
    cached = min(cached, prompt)
    spec = ModelSpec.from_hf_config(
        {
            "num_hidden_layers": 24,
            "hidden_size": 896,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "intermediate_size": 4864,
            "vocab_size": 151936,
        },
        bytes_per_param=4,
    )
    hw = HARDWARE["cpu-avx2-2c"]
    base = request_eflops(spec, hw, prompt_tokens=prompt, cached_tokens=cached, generated=gen)
    longer_gen = [g + extra if i == 0 else g for i, g in enumerate(gen)]
    more = (
        request_eflops(spec, hw, prompt_tokens=prompt + extra, cached_tokens=cached, generated=gen)
        if which
        else request_eflops(
            spec, hw, prompt_tokens=prompt, cached_tokens=cached, generated=longer_gen
        )
    )
    assert more > base


def test_kv_term_grows_with_context():
    """One decoded token costs more at a longer context, by exactly the per-position
    attention FLOPs plus KV bytes x intensity (Kinetics: the term 2 x params x tokens misses)."""
    hw = TOY_HW

    def one_token(ctx: int) -> float:
        return request_eflops(TOY, hw, prompt_tokens=ctx, cached_tokens=ctx, generated=[1])

    costs = [one_token(t) for t in (0, 256, 1024, 8192)]
    assert costs == sorted(costs) and len(set(costs)) == 4
    per_position = 4 * 1 * 2 * 2 + 2 * 1 * 1 * 2 * 2 * hw.intensity  # 16 + 8 * 10
    assert one_token(1001) - one_token(1000) == per_position
    # At long contexts the KV traffic dominates the parameter term.
    assert one_token(8192) > 10 * one_token(0)


def test_preset_round_trip_and_errors(tmp_path):
    path = save_preset(
        {"name": "x", "peak_flops": 2e11, "mem_bandwidth": 2e10}, tmp_path / "p.json"
    )
    hw = load_preset(path)
    assert (hw.name, hw.peak_flops, hw.mem_bandwidth, hw.intensity) == ("x", 2e11, 2e10, 10.0)
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "peak_flops": 0, "mem_bandwidth": 1}')
    with pytest.raises(ConfigError, match="rerun"):
        load_preset(bad)
    bad.write_text("not json")
    with pytest.raises(ConfigError, match="calibrate --hardware"):
        load_preset(bad)


def test_calibrated_preset_used_only_on_its_host(tmp_path, monkeypatch):
    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path))
    monkeypatch.delenv("TTSCALE_HARDWARE", raising=False)
    assert default_hardware() is host_preset()  # nothing measured yet: chosen by ISA
    preset = measure_hardware(seconds=0.02, matmul_n=64, copy_mib=4)
    assert preset["peak_flops"] > 0 and preset["mem_bandwidth"] > 0
    assert preset["host"]["isa"] and preset["dtype"] in ("float32", "bfloat16")
    save_preset(preset)
    assert calibrated_path().parent == tmp_path / "hardware"
    assert default_hardware().name == preset["name"]
    assert Ledger().to_dict()["hardware"] == preset["name"]  # recorded in every ledger
    other = dict(preset, host={**preset["host"], "cpu_model": "another CPU"}, name="other")
    calibrated_path().write_text(json.dumps(other))
    assert default_hardware() is host_preset()
    monkeypatch.setenv("TTSCALE_HARDWARE", "h100")
    assert default_hardware() is HARDWARE["h100"]
    monkeypatch.setenv("TTSCALE_HARDWARE", "nope")
    with pytest.raises(ConfigError, match="neither a preset"):
        default_hardware()


def test_uncalibrated_preset_follows_the_isa():
    from ttscale.host import HostInfo

    amx = HostInfo("Xeon", frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}), 2)
    avx2 = HostInfo("EPYC", frozenset({"avx2", "fma"}), 2)
    assert host_preset(amx).name == "cpu-amx-2c"
    assert host_preset(avx2).name == "cpu-avx2-2c"
    # the AMX host moves bytes cheaper relative to its compute than datasheet AVX2 guesses
    assert host_preset(amx).peak_flops > host_preset(avx2).peak_flops
