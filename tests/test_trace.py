"""``ttscale trace show`` and ``ttscale.evals.trace`` on saved Results (the JSON that
``Result.to_json`` / ``ttscale solve --json`` writes) of beam search, DVTS, particle
filtering and ETS: the rebuilt tree matches the trace (parents, kept/pruned/finished),
the terminal tree marks them, ``--out`` writes HTML/PNG/SVG, and non-tree traces or bad
files give one clear error line (exit 2)."""

from __future__ import annotations

import asyncio
import json

import pytest

from ttscale import Budget, ConfigError, solve
from ttscale.backends import ScriptedBackend
from ttscale.cli import main
from ttscale.evals.trace import kv_profile, load_result, render_text, save, trace_graph
from ttscale.strategies import DVTS, ETS, BeamSearch, ParticleFilter
from ttscale.types import Problem
from ttscale.verifiers import ScriptedVerifier

VERIFIER = ScriptedVerifier(
    lambda p, steps: [0.9 if "Direct" in s or "answer" in s else 0.3 for s in steps]
)
STRATEGIES = {
    "beam_search": BeamSearch(n=4, beam_width=2),
    "dvts": DVTS(n=4, beam_width=2),
    "particle_filter": ParticleFilter(n=6),
    "ets": ETS(width=6),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One saved Result JSON per tree strategy."""
    root = tmp_path_factory.mktemp("traces")
    paths = {}
    for name, strategy in STRATEGIES.items():
        res = asyncio.run(
            strategy.run(Problem("What is 12*7?"), ScriptedBackend(), VERIFIER, Budget(tokens=4000))
        )
        paths[name] = root / f"{name}.json"
        paths[name].write_text(res.to_json(indent=2))  # what `ttscale solve --json` prints
    return paths


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_graph_matches_trace(saved, name):
    data = load_result(saved[name])
    g = trace_graph(data)
    assert g.nodes[0]["status"] == "root" and g.graph["strategy"] == name
    rows = [r for rec in data["trace"] for r in rec.get("children", rec.get("particles", []))]
    assert {r["id"] for r in rows} == set(g) - {0}
    for r in rows:
        assert next(iter(g.predecessors(r["id"]))) == (r["parent"] or 0)
        assert g.nodes[r["id"]]["cum_tokens"] == r["tokens"]
        if r["done"]:
            assert g.nodes[r["id"]]["status"] == "finished"
    statuses = {g.nodes[v]["status"] for v in g}
    assert "finished" in statuses
    # Every non-finished, non-pruned node with children was kept (expanded).
    for v in g:
        if list(g.successors(v)) and v != 0:
            assert g.nodes[v]["status"] == "kept"
    if name in ("beam_search", "dvts", "ets"):
        assert "pruned" in statuses  # these runs drop branches at this width


def test_pruned_marks_follow_the_trace(saved):
    data = load_result(saved["beam_search"])
    g = trace_graph(data)
    for rec in data["trace"]:
        for c in rec["children"]:
            want = "finished" if c["done"] else "kept" if c["kept"] else "pruned"
            assert g.nodes[c["id"]]["status"] == want
    pf = load_result(saved["particle_filter"])
    g = trace_graph(pf)
    for rec in pf["trace"]:
        if rec["resampled"]:
            survivors = {rec["particles"][a]["id"] for a in rec["ancestors"]}
            for p in rec["particles"]:
                if not p["done"]:
                    assert (g.nodes[p["id"]]["status"] == "kept") == (p["id"] in survivors)


def test_kv_profile_counts_shared_prefixes_once(saved):
    beam = load_result(saved["beam_search"])
    prof = kv_profile(beam, prompt_len=100)
    assert len(prof) == len(beam["trace"])
    for step in prof:
        assert step["kv_tree"] <= step["kv_no_sharing"]
    # Beam step 0: n children of the prompt; the prompt is held once, not n times.
    first = beam["trace"][0]["children"]
    assert prof[0]["kv_no_sharing"] == sum(100 + c["tokens"] for c in first)
    distinct = {c["step"]: c["tokens"] for c in first}  # identical siblings held once
    assert prof[0]["kv_tree"] == 100 + sum(distinct.values())
    assert prof[0]["prompt_tokens"] == 100


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_cli_trace_show_terminal_and_files(saved, name, tmp_path, capsys):
    out = tmp_path / f"{name}.html"
    main(["trace", "show", str(saved[name]), "--out", str(out), "--max-chars", "40"])
    text = capsys.readouterr().out
    assert "prompt" in text and name in text and "✓" in text
    if name != "particle_filter":
        assert "✗" in text
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page and "boxed{84}" in page
    assert "http" not in page.split("<svg", 1)[0]  # self-contained: no external assets


def test_png_and_svg(saved, tmp_path):
    g = trace_graph(load_result(saved["ets"]))
    png = save(g, tmp_path / "t.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    svg = save(g, tmp_path / "t.svg")
    assert "<svg" in svg.read_text()
    with pytest.raises(ConfigError, match=".html, .png or .svg"):
        save(g, tmp_path / "t.pdf")


def test_render_text_marks_scores_and_status(saved):
    from rich.console import Console

    g = trace_graph(load_result(saved["ets"]))
    console = Console(record=True, width=200)
    console.print(render_text(g))
    text = console.export_text()
    assert "score=0.900" in text and "alloc=" in text and "pruned" in text


def test_errors_are_one_line(tmp_path, capsys):
    res = solve("What is 12*7?", budget="rollouts=4", backend="scripted")
    flat = tmp_path / "bon.json"
    flat.write_text(res.to_json())
    with pytest.raises(SystemExit) as exc:
        main(["trace", "show", str(flat)])
    assert exc.value.code == 2 and "holds no search tree" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit) as exc:
        main(["trace", "show", str(bad)])
    assert exc.value.code == 2 and "cannot read a Result JSON" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"a": 1}))
    with pytest.raises(ConfigError, match="not a saved Result"):
        load_result(other)
