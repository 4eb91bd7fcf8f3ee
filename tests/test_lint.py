"""The tree passes ruff's lint and format checks (config in pyproject.toml; ruff is pinned in
the ``dev`` extra, so CI and every developer run the same rules)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff(args):
    pytest.importorskip("ruff", reason="ruff comes with the dev extra (scripts/setup.sh)")
    p = subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert p.returncode == 0, f"ruff {' '.join(args)}:\n{p.stdout}{p.stderr}"
