"""The reproducibility sweep's arithmetic: the README's mean, spread and 'inside the interval' come from it."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reproducibility  # noqa: E402


def part(runs, commit="abc1234"):
    return {"commit": commit, "overrides": [], "tta": None, "runs": runs}


def run(seed, numerics, test):
    return {"seed": seed, "numerics": numerics, "test_accuracy": test}


def test_combined_reports_give_the_spread_and_count_the_runs_inside_the_committed_interval(monkeypatch):
    monkeypatch.setattr(reproducibility, "committed_interval", lambda: [0.95, 0.98])
    one = part([run(42, "onednn", 0.97), run(1, "onednn", 0.95)])
    other = part([run(42, "no-onednn", 0.99), run(1, "no-onednn", 0.93)])
    report = reproducibility.combine([one, other])
    assert [r["test_accuracy"] for r in report["runs"]] == [0.97, 0.95, 0.99, 0.93]
    assert report["test_accuracy"] == {"runs": 4, "mean": 0.96, "std": pytest.approx(0.0258, abs=1e-4),
                                       "min": 0.93, "max": 0.99}
    assert report["inside_committed_interval"] == 2  # 0.97 and 0.95 (the bounds count), not 0.99 or 0.93
    assert report["test_accuracy_by_numerics"]["no-onednn"]["mean"] == 0.96
    assert report["test_accuracy_by_seed"][42] == {"runs": 2, "mean": 0.98, "std": pytest.approx(0.0141, abs=1e-4),
                                                   "min": 0.97, "max": 0.99}


def test_reports_of_different_recipes_are_not_combined(monkeypatch):
    monkeypatch.setattr(reproducibility, "committed_interval", lambda: [0.95, 0.98])
    with pytest.raises(SystemExit, match="different recipes"):
        reproducibility.combine([part([run(42, "onednn", 0.97)]), part([run(1, "onednn", 0.96)], commit="def5678")])


def test_a_param_override_reaches_nested_keys_as_yaml_values():
    params = {"finetune": {"epochs": 30}}
    reproducibility.set_param(params, "finetune.epochs=16")
    reproducibility.set_param(params, "evaluate.tta=null")
    assert params == {"finetune": {"epochs": 16}, "evaluate": {"tta": None}}
