"""Embedded model store: part discovery, corrupt or missing parts give a ModelError naming
the fix, local paths are validated, and conversion is skipped once done."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ttscale import ModelError
from ttscale.engine.models import EmbeddedModel, _ensure_converted, resolve_model


def fake_model(tmp_path, monkeypatch, payloads, sha="0" * 64):
    site = tmp_path / "site"
    for i, data in enumerate(payloads, 1):
        pkg = site / f"fakepart{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("TTSCALE_CACHE", str(tmp_path / "cache"))
    n = len(payloads)
    return EmbeddedModel(
        name="fake",
        description="test",
        packages=tuple(f"fakepart{i}" for i in range(1, n + 1)),
        part_files=tuple(f"part{i:02d}.bin" for i in range(1, n + 1)),
        size=sum(len(p) for p in payloads),
        sha256=sha,
        gguf_name="fake.gguf",
        pip_hint="pip install fakepart1 fakepart2",
    )


def test_corrupt_parts_are_detected(tmp_path, monkeypatch):
    model = fake_model(tmp_path, monkeypatch, [b"abc", b"def"])
    with pytest.raises(ModelError, match="corrupt.*fix: pip install fakepart1"):
        _ensure_converted(model)
    assert not (tmp_path / "cache" / "models" / "fake").exists()  # nothing half-written


def test_missing_part_package(tmp_path, monkeypatch):
    model = fake_model(tmp_path, monkeypatch, [b"abc"])
    broken = dataclasses.replace(
        model, packages=("fakepart1", "nosuchpart_xyz"), part_files=("part01.bin", "part02.bin")
    )
    with pytest.raises(ModelError, match="'nosuchpart_xyz' is not installed; fix: pip install"):
        _ensure_converted(broken)


def test_already_converted_is_reused(tmp_path, monkeypatch):
    model = fake_model(tmp_path, monkeypatch, [b"abc"])
    target = tmp_path / "cache" / "models" / "fake"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / "ttscale-model.json").write_text(json.dumps({"name": "fake"}))
    assert _ensure_converted(model) == target  # no join/verify/convert attempted


def test_local_path_validation(tmp_path):
    with pytest.raises(ModelError, match="neither an embedded model"):
        resolve_model(tmp_path / "missing")
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(tmp_path) == tmp_path
