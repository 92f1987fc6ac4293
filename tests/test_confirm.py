"""benchmarks/confirm.py: fresh sets, pooled comparisons, and the policies it refuses."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import confirm  # noqa: E402
import protocol  # noqa: E402


def block(ems: list[float]) -> dict:
    """A policy's block on one suite, from per-task EMs."""
    return {"per_task": [{"task_id": f"t{i}", "em": em} for i, em in enumerate(ems)]}


def test_the_fresh_sets_share_no_task_with_the_held_out_ones() -> None:
    held, fresh = protocol.suites(), protocol.fresh_suites()
    assert [len(fresh[s]) for s in ("world", "hotpotqa")] == [200, 100]
    for suite in ("world", "hotpotqa"):
        assert not {t["id"] for t in held[suite]} & {t["id"] for t in fresh[suite]}
        assert not {t["question"] for t in held[suite]} & {t["question"] for t in fresh[suite]}


def test_retry_rate_is_searches_after_a_miss_over_misses() -> None:
    rows = [{"searches_after_miss": 1, "search_misses": 1},
            {"searches_after_miss": 0, "search_misses": 3}]
    assert confirm.retry_rate(rows) == 0.25
    assert confirm.retry_rate([{"searches_after_miss": 0, "search_misses": 0}]) is None


def test_a_pooled_side_averages_each_task_over_its_policies() -> None:
    policies = {"a": {"world": block([1, 1, 0, 0])}, "b": {"world": block([1, 0, 0, 0])},
                "c": {"world": block([0, 0, 0, 0])}}
    out = confirm.comparisons(["a+b:c", "a:b", "a:missing"], policies)
    assert [(c["after"], c["before"], c["suite"]) for c in out] == [("a+b", "c", "world"),
                                                                     ("a", "b", "world")]
    assert out[0]["gain"] == 37.5 and out[0]["gained"] == 2 and out[0]["lost"] == 0
    assert out[1]["gain"] == 25.0 and (out[1]["gained"], out[1]["lost"]) == (1, 0)


@pytest.mark.parametrize("pair", ["a", "a:", ":b", "a:z", "a+z:b"])
def test_a_malformed_or_unknown_comparison_is_refused(pair: str) -> None:
    with pytest.raises(SystemExit, match="AFTER:BEFORE"):
        confirm.check_pairs([pair], ["a", "b", "title"])


def test_a_stage_from_a_run_that_trained_on_the_fresh_hotpotqa_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLEUTH_HOME", str(tmp_path))
    for run, stages in (("with-cml", ["chains", "cml"]), ("without", ["chains", "grpo"])):
        (tmp_path / run / "grpo").mkdir(parents=True)
        (tmp_path / run / "grpo" / "config.json").write_text("{}")
        (tmp_path / run / "pipeline.json").write_text(json.dumps({"config": {"stages": stages}}))
    with pytest.raises(SystemExit, match="cml stage"):
        confirm.refuse_cml("with-cml/grpo")
    confirm.refuse_cml("without/grpo")
    confirm.refuse_cml("local:smollm2")
    load, recorded, weights = protocol.resolve_policy("without/grpo")
    assert (load, recorded, weights) == (f"hf:{tmp_path / 'without' / 'grpo'}",
                                         "hf:$SLEUTH_HOME/without/grpo", tmp_path / "without" / "grpo")
    with pytest.raises(SystemExit, match="neither a model spec"):
        protocol.resolve_policy("nowhere/grpo")
