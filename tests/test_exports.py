"""Public surface: ``__all__`` matches what the package exports, and strategies/verifiers
import without any engine (vLLM blocked in ``sys.modules``)."""

from __future__ import annotations

import subprocess
import sys
from inspect import ismodule

import ttscale


def test_all_matches_public_names():
    # Submodules become package attributes once imported anywhere in the session.
    public = {
        n for n in dir(ttscale) if not n.startswith("_") and not ismodule(getattr(ttscale, n))
    } - {
        "api",
        "budget",
        "cost",
        "errors",
        "protocols",
        "types",
        "backends",
        "strategies",
        "verifiers",
        "models",
        "hardware",
        "kernels",
        "evals",
        "cli",
        "integrations",
        "server",
    }
    assert set(ttscale.__all__) - {"__version__"} == public


def test_strategies_import_without_engines():
    code = (
        "import sys; sys.modules['vllm'] = None; sys.modules['transformers'] = None; "
        "sys.modules['torch'] = None; sys.modules['openai'] = None\n"
        "from ttscale import solve, Budget\n"
        "from ttscale.strategies import BestOfN\n"
        "import ttscale.verifiers\n"
        "r = solve('What is 12*7?', budget='rollouts=4', backend='scripted')\n"
        "assert r.answer == '84', r.answer\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


def test_auto_backend_falls_back_to_transformers_without_vllm():
    code = (
        "import sys, logging; sys.modules['vllm'] = None\n"
        "import ttscale.backends.hf as hf\n"
        "class Fake:\n"
        "    def __init__(self, **kw): self.kw = kw\n"
        "hf.HFBackend = Fake\n"
        "from ttscale.backends import make_backend\n"
        "b = make_backend('auto', model='m')\n"
        "assert type(b).__name__ == 'Fake' and b.kw == {'model': 'm'}, b\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "vLLM unavailable" in p.stderr and "using the transformers backend" in p.stderr
