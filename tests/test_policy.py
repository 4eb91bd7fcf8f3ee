"""Policy table: the packaged default (honest provenance), load/validation errors naming the
fix, fitting from measured rows (calibration split only), and split disjointness."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from ttscale.errors import ConfigError
from ttscale.strategies.allocation.policy import (
    DifficultyBins,
    Policy,
    default_policy_path,
    fit_policy,
    load_policy,
    prior_policy,
)
from ttscale.strategies.allocation.splits import (
    CALIBRATION_SPLIT,
    assert_disjoint,
    evaluation_slice,
    load_split,
)


def _default_dict() -> dict:
    return json.loads(default_policy_path().read_text())


def test_default_policy_is_fitted_on_the_calibration_split_only():
    pol = load_policy()
    assert isinstance(pol, Policy) and pol.version == 1 and pol.fitted
    prov = pol.provenance
    assert prov.dataset == CALIBRATION_SPLIT and prov.n_rows > 0 and prov.isa
    cal_ids = {r["id"] for r in load_split(CALIBRATION_SPLIT)}
    assert prov.problem_ids and set(prov.problem_ids) <= cal_ids
    assert_disjoint(prov.problem_ids, evaluation_slice(100))
    assert len(pol.cells) == 5 * len(pol.levels)
    fitted = [c for c in pol.cells if c.source == "fitted"]
    assert fitted and all(ch.n_rows > 0 for c in fitted for ch in c.choices)
    # the measured rows behind it are committed (scripts/allocator_cpu.sh wrote them)
    rows = Path(__file__).parents[1] / "benchmarks/results/allocator_vllm_calibration_rows.jsonl"
    data = rows.read_bytes()
    assert hashlib.sha256(data).hexdigest() == prov.rows_sha256
    lines = data.decode().splitlines()
    ids = {json.loads(x)["problem_id"] for x in lines}
    assert ids == set(prov.problem_ids) and len(lines) == prov.n_rows


def test_prior_policy_is_valid_and_marked_unfitted():
    pol = prior_policy()
    assert pol.fitted is False and "NOT fitted" in pol.provenance.notes
    assert all(c.source == "prior" and all(ch.n_rows == 0 for ch in c.choices) for c in pol.cells)
    assert len(pol.cells) == 5 * len(pol.levels)
    assert Policy.model_validate_json(pol.model_dump_json()) == pol


def test_choose_skips_verifier_strategies_without_a_verifier():
    pol = prior_policy()  # its hard cells rank verifier searches first
    with_v = pol.choose(4, "t8k", has_verifier=True)
    without = pol.choose(4, "t8k", has_verifier=False)
    assert with_v.needs_verifier and not without.needs_verifier
    assert pol.level_for(500).name == "t1k" and pol.level_for(9000).name == "t8k"
    assert pol.level_for(float("inf")).name == "t24k"


def test_bins_from_scores():
    bins = DifficultyBins()
    assert [bins.bin_of(s) for s in (1.0, 0.75, 0.5, 0.25, 0.0)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.update(version=7), "version 7 is not supported"),
        (lambda d: d["cells"].pop(), "missing"),
        (lambda d: d["cells"][0]["choices"][0].update(strategy="magic"), "not a registered"),
        (lambda d: d["cells"][0]["choices"][0]["params"].update(beams=3), "no option 'beams'"),
        (lambda d: d["bins"].update(thresholds=[0.2, 0.5, 0.7, 0.9]), "strictly descending"),
        (lambda d: d["levels"].reverse(), "strictly increasing"),
        (lambda d: d["cells"][0].update(bin=9), "cells.0.bin"),
        (lambda d: d.pop("provenance"), "provenance"),
        (lambda d: d["cells"][0].update(colour="red"), "colour"),
    ],
)
def test_invalid_policy_names_field_and_fix(mutate, match):
    data = _default_dict()
    mutate(data)
    with pytest.raises(ConfigError, match=match) as info:
        load_policy(data)
    assert "ttscale calibrate" in str(info.value) or "refit" in str(info.value)


def test_bad_json_and_missing_file(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text('{"version": 1,\n  "model": oops}')
    with pytest.raises(ConfigError, match=r"not valid JSON \(line 2"):
        load_policy(bad)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_policy(tmp_path / "absent.json")
    with pytest.raises(ConfigError, match="path, dict or Policy"):
        load_policy(42)  # type: ignore[arg-type]


def _rows():
    """Synthetic measured runs on four calibration problems (levels 2 and 5)."""
    cal = load_split(CALIBRATION_SPLIT)
    easy = [r for r in cal if r["level"] == 2][:2]
    hard = [r for r in cal if r["level"] == 5][:2]
    rows = []
    for p in easy + hard:
        is_easy = p["level"] == 2
        for strategy, budget, correct, tokens in [
            ("best_of_n_majority", 1000, is_easy, 900),
            ("best_of_n_majority", 3000, is_easy, 2500),
            ("beam_search", 3000, not is_easy, 2900),
            ("pdr", 8000, False, 7000),
        ]:
            rows.append(
                {
                    "problem_id": p["id"],
                    "level": p["level"],
                    "strategy": strategy,
                    "budget_tokens": budget,
                    "correct": correct,
                    "generated_tokens": tokens,
                }
            )
    return rows


def test_fit_ranks_by_accuracy_then_cost(tmp_path):
    rows = _rows()
    cal_ids = [r["id"] for r in load_split(CALIBRATION_SPLIT)]
    pol = fit_policy(
        rows, calibration_ids=cal_ids, dataset=CALIBRATION_SPLIT, model="m", prior=prior_policy()
    )
    assert pol.fitted and pol.provenance.bin_source == "level"
    assert pol.provenance.dataset == CALIBRATION_SPLIT and len(pol.provenance.problem_ids) == 4
    easy_low = pol.cell(2, "t1k")
    assert easy_low.source == "fitted" and easy_low.choices[0].strategy == "best_of_n"
    assert easy_low.choices[0].expected_accuracy == 1.0
    easy_mid = pol.cell(2, "t3k")  # same accuracy, cheaper config first
    assert easy_mid.choices[0].mean_tokens == 900.0
    hard_mid = pol.cell(5, "t3k")
    assert hard_mid.choices[0].strategy == "beam_search"
    assert pol.choose(5, "t3k", has_verifier=False).strategy == "best_of_n"
    assert pol.cell(5, "t24k").source == "fitted"  # rows at <= 24k tokens count
    assert pol.cell(1, "t1k").source == "prior"  # no rows in bin 1: the prior fills it
    # Round trip through JSON.
    path = pol.save(tmp_path / "fit.json")
    assert load_policy(path) == pol


def test_fit_uses_probe_bins_when_rows_have_them():
    rows = _rows()
    for r in rows:
        r["probe_score"] = 1.0 if r["level"] == 2 else 0.0
    cal_ids = [r["id"] for r in load_split(CALIBRATION_SPLIT)]
    pol = fit_policy(
        rows, calibration_ids=cal_ids, dataset=CALIBRATION_SPLIT, model="m", prior=prior_policy()
    )
    assert pol.provenance.bin_source == "probe"
    assert pol.cell(1, "t1k").source == "fitted" and pol.cell(2, "t1k").source == "prior"


def test_fit_bins_each_level_with_the_probe_that_level_gets():
    # One problem, one config at 1000 tokens; its 1-sample probe says easy (bin 1), 2 samples
    # say bin 3, the full 4-sample probe says bin 5. auto at t1k probes with 1 sample, at t3k
    # with 2, at t8k and up with 4: the row must land in that bin at each level.
    bins = prior_policy().bins
    assert [bins.samples_for(t) for t in (1000, 3000, 8000, 24000)] == [1, 2, 4, 4]
    pid = load_split(CALIBRATION_SPLIT)[0]["id"]
    row = {
        "problem_id": pid,
        "strategy": "best_of_n_majority",
        "budget_tokens": 1000,
        "correct": True,
        "generated_tokens": 900,
        "difficulty_bin": 1,
        "probe_bins": {"1": 1, "2": 3, "3": 3, "4": 5},
    }
    pol = fit_policy(
        [row], calibration_ids=[pid], dataset=CALIBRATION_SPLIT, model="m", prior=prior_policy()
    )
    fitted = {(c.bin, c.level) for c in pol.cells if c.source == "fitted"}
    assert fitted == {(1, "t1k"), (3, "t3k"), (5, "t8k"), (5, "t24k")}
    assert "probe_bins" in pol.provenance.bin_source


def test_fit_refuses_evaluation_problems():
    rows = _rows()
    rows[0] = dict(rows[0], problem_id="test/algebra/1.json")
    cal_ids = [r["id"] for r in load_split(CALIBRATION_SPLIT)]
    with pytest.raises(ConfigError, match="outside the calibration split"):
        fit_policy(
            rows,
            calibration_ids=cal_ids,
            dataset=CALIBRATION_SPLIT,
            model="m",
            prior=prior_policy(),
        )
    with pytest.raises(ConfigError, match="no rows"):
        fit_policy(
            [], calibration_ids=cal_ids, dataset=CALIBRATION_SPLIT, model="m", prior=prior_policy()
        )


def test_splits_are_disjoint_and_checked():
    cal = load_split(CALIBRATION_SPLIT)
    ev = evaluation_slice(25, seed=1)
    assert len(ev) == 25 and {r["level"] for r in ev} == {1, 2, 3, 4, 5}
    assert all(r["id"].startswith("test/") for r in ev)
    assert_disjoint(cal, load_split("math500"))  # the whole of MATH-500 is held out
    with pytest.raises(ConfigError, match="also appear in the calibration"):
        assert_disjoint(cal, [cal[3]])
    renamed = dict(cal[5], id="x/1", problem="  " + cal[5]["problem"].upper() + "\n")
    with pytest.raises(ConfigError, match="x/1"):
        assert_disjoint(cal, [renamed])  # same text, other id: still caught
    first = evaluation_slice(5)[0]["id"]
    with pytest.raises(ConfigError, match=first):
        evaluation_slice(5, policy_problem_ids=[first])  # a policy fitted on it cannot be scored
