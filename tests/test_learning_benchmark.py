"""benchmarks/learning.py: reusing an earlier run's untrained evaluation only when it matches."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import learning  # noqa: E402

EARLIER = ROOT / "benchmarks" / "results" / "learning_rplanner_all.json"


def tasks_of(data: dict) -> dict[str, list[dict]]:
    """The task lists an earlier results file was evaluated on (ids are all the check reads)."""
    return {s: [{"id": r["task_id"]} for r in data["before"][s]["per_task"]]
            for s in ("world", "hotpotqa")}


def test_an_earlier_run_on_the_same_protocol_and_tasks_is_reused() -> None:
    data = json.loads(EARLIER.read_text())
    before, title = learning.earlier_before(EARLIER, tasks_of(data))
    assert before == data["before"]
    assert title == data["hotpotqa_retrieval_title"]["per_task"]


def test_another_research_configuration_is_refused(tmp_path: Path) -> None:
    data = json.loads(EARLIER.read_text())
    data["protocol"]["eval"]["max_rounds"] += 1
    path = tmp_path / "learning.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SystemExit, match="another research configuration"):
        learning.earlier_before(path, tasks_of(data))


def test_other_tasks_are_refused() -> None:
    data = json.loads(EARLIER.read_text())
    tasks = tasks_of(data)
    with pytest.raises(SystemExit, match="world rows are not this run's tasks"):
        learning.earlier_before(EARLIER, {**tasks, "world": tasks["world"][:100]})
    with pytest.raises(SystemExit, match="hotpotqa rows"):
        learning.earlier_before(EARLIER, {**tasks, "hotpotqa": tasks["hotpotqa"][::-1]})


def test_group_spread_refuses_a_group_of_one():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "group_spread.py"
    proc = subprocess.run([sys.executable, str(script), "--policy", "local:smollm2", "--group", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "at least 2" in proc.stderr


def test_group_spread_compares_later_policies_with_the_first_task_by_task():
    import group_spread

    def measured(policy: str, per_task: dict[str, list[float]]) -> dict:
        return {"policy": policy, "temperatures": [{"temperature": 0.7, "per_task": per_task}]}

    base = measured("warm", {"a": [1, 0, 0, 0], "b": [0, 0, 0, 0], "c": [1, 1, 1, 1]})
    rl = measured("rl", {"a": [1, 1, 0, 0], "b": [0, 0, 0, 0], "c": [1, 1, 1, 0]})
    [row] = group_spread._against_first([base, rl])
    # task a: 0.25 -> 0.5, b: same, c: 1 -> 0.75; the mean gain is 0 points
    assert (row["policy"], row["temperature"], row["gain"], row["gained"], row["lost"], row["n"]) == (
        "rl", 0.7, 0.0, 1, 1, 3)


def _run(tmp_path: Path, name: str, seed: int, warm: list[float], after: list[float]) -> Path:
    """A chains,grpo results file with world and HotpotQA rows of the given EMs."""
    def evaluation(ems: list[float]) -> dict:
        rows = [{"task_id": f"t{i}", "em": em, "answer": f"a{i}" if em else "x"}
                for i, em in enumerate(ems)]
        return {"summary": {"all": {"em": round(100 * sum(ems) / len(ems), 1)}}, "per_task": rows}

    data = {"protocol": {"seed": seed},
            "stages": {"chains": {s: evaluation(warm) for s in ("world", "hotpotqa")},
                       "grpo": {"record": {"steps": 40},
                                **{s: evaluation(after) for s in ("world", "hotpotqa")}}}}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_seeds_pools_the_runs_of_one_recipe_task_by_task(tmp_path: Path) -> None:
    import seeds

    warm = [0, 0, 1, 1]
    a = _run(tmp_path, "a", 0, warm, [1, 1, 1, 1])  # +50 points
    b = _run(tmp_path, "b", 1, warm, [0, 0, 0, 1])  # -25 points
    data = seeds.compare([a, b])
    assert [r["seed"] for r in data["runs"]] == [0, 1]
    assert [r["rl_stage"]["gain"] for r in data["runs"]] == [50.0, -25.0]
    assert [r["world_answers_changed"] for r in data["runs"]] == [2, 1]
    s = data["summary"]
    # per task, the runs' mean EM: 0.5, 0.5, 0.5, 1 against 0, 0, 1, 1: +12.5 points
    gains = (s["rl_stage_em_gain_mean"], s["rl_stage_em_gain_min"], s["rl_stage_em_gain_max"])
    assert gains == (12.5, -25.0, 50.0)
    assert s["rl_stage_em_gain_mean_ci95"][0] <= 12.5 <= s["rl_stage_em_gain_mean_ci95"][1]


def test_seeds_refuses_runs_from_another_warm_start(tmp_path: Path) -> None:
    import seeds

    a = _run(tmp_path, "a", 0, [0, 0, 1, 1], [1, 1, 1, 1])
    b = _run(tmp_path, "b", 1, [0, 1, 1, 1], [1, 1, 1, 1])
    with pytest.raises(SystemExit, match="another warm start"):
        seeds.compare([a, b])


def test_seeds_refuses_a_run_without_a_grpo_stage_or_a_missing_file(tmp_path: Path) -> None:
    import seeds

    a = _run(tmp_path, "a", 0, [0, 1], [1, 1])
    chains_only = json.loads(a.read_text())
    del chains_only["stages"]["grpo"]
    b = tmp_path / "b.json"
    b.write_text(json.dumps(chains_only))
    with pytest.raises(SystemExit, match="not a chains,grpo run"):
        seeds.compare([b, a])
    with pytest.raises(SystemExit, match="no such results file"):
        seeds.compare([a, tmp_path / "nope.json"])


def test_seeds_compares_the_runs_with_another_runs_final_policy(tmp_path: Path) -> None:
    import seeds

    warm = [0, 0, 1, 1]
    a = _run(tmp_path, "a", 0, warm, [1, 1, 1, 1])
    b = _run(tmp_path, "b", 1, warm, [0, 0, 0, 1])
    shipped = _run(tmp_path, "shipped", 0, [0, 0, 0, 0], [1, 0, 0, 0])
    against = seeds.compare([a, b], against=shipped)["against"]
    assert against["file"] == "shipped.json"
    assert [r["world"]["gain"] for r in against["runs"]] == [75.0, 0.0]
    # per task, the runs' mean EM 0.5, 0.5, 0.5, 1 against 1, 0, 0, 0: +37.5 points
    assert (against["pooled"]["world"]["gain"], against["pooled"]["world"]["lost"]) == (37.5, 1)
    other_tasks = _run(tmp_path, "other", 0, [0, 0], [1, 1])
    with pytest.raises(SystemExit, match="evaluated on other tasks"):
        seeds.compare([a, b], against=other_tasks)
    with pytest.raises(SystemExit, match="no such results file"):
        seeds.compare([a], against=tmp_path / "nope.json")
