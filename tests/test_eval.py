"""`sleuth eval`: scoring is exact on scripted runs, works on every shared data file."""

from __future__ import annotations

import copy
import json
import re
import tempfile

import pytest
from scripted import ScriptedChatModel, default_reply, field

from graph import ResearchConfig, TrajectoryStore
from training import rewards
from training.evaluate import evaluate, write


def answer_key(tasks, right):
    """A writer that answers the gold for tasks in `right` and something wrong otherwise."""
    gold = {t["question"]: (t["answer"], i in right) for i, t in enumerate(tasks)}

    def script(role, messages):
        if role != "writer":
            return default_reply(role, messages)
        answer, ok = gold[field(messages, "Question")]
        return f"<answer>{answer if ok else 'Nowhere at all'}</answer>\nSee [1]."
    return script


def test_scripted_eval_has_exactly_known_em(small_world, tmp_path):
    tasks = small_world.tasks[:10]
    model = ScriptedChatModel(script=answer_key(tasks, right={0, 2, 4, 6, 8}))
    result = evaluate(tasks, model=model, concurrency=4, kb_root=tmp_path / "kbs",
                      record=tmp_path / "runs", config=ResearchConfig(search_mode="fts", seed=0))
    run_ = result["runs"]["graph"]
    assert run_["overall"]["em"] == 0.5 and run_["overall"]["f1"] == 0.5
    assert {p["task_id"]: p["em"] for p in run_["per_task"]} == {
        t["id"]: float(i % 2 == 0) for i, t in enumerate(tasks)}
    assert sum(v["n"] for v in run_["by_type"].values()) == 10
    assert run_["overall"]["searches"] >= 1 and run_["overall"]["format_rate"] == 1.0
    assert run_["trajectories_per_minute"] > 0 and run_["failed"] == []
    stored = {t.id: t for t in TrajectoryStore(tmp_path / "runs")}
    assert set(stored) == {p["trajectory_id"] for p in run_["per_task"]} and len(stored) == 10
    for p in run_["per_task"]:  # the metrics, each as `training.rewards` scores the run
        t = stored[p["trajectory_id"]]
        assert t.evidence and {e["doc_id"] for e in t.evidence} <= set(rewards.retrieved_doc_ids(t))
        assert p["knowledge_f1"] == rewards.knowledge_f1(t) and p["evidence_f1"] == rewards.evidence_f1(t)
        assert p["retrieval_accuracy"] == p["evidence_recall"] == rewards.evidence_recall(t)
    assert 0 < run_["overall"]["knowledge_f1"] < 1 and 0 < run_["overall"]["retrieval_accuracy"] <= 1
    assert 0 < run_["overall"]["evidence_f1"] <= 1
    assert all({"knowledge_f1", "evidence_f1", "retrieval_accuracy"} <= set(v)
               for v in run_["by_type"].values())
    json_path, png = write(result, tmp_path / "out" / "eval.json")
    assert json.loads(json_path.read_text())["runs"]["graph"]["overall"]["em"] == 0.5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_oracle_hands_the_writer_the_gold_passages(small_world, tmp_path):
    tasks = small_world.tasks[:3]
    prompts = []

    def script(role, messages):
        if role == "writer":
            prompts.append(messages[-1].content)
        return default_reply(role, messages)

    result = evaluate(tasks, model=ScriptedChatModel(script=script), mode="oracle",
                      kb_root=tmp_path / "kbs", config=ResearchConfig(search_mode="fts"))
    assert result["runs"]["oracle"]["overall"]["evidence_f1"] == 1.0  # it read the gold only
    for t in tasks:
        prompt = next(p for p in prompts if t["question"] in p)
        titles = re.findall(r"^\[\d+\] (.+?):", prompt, re.M)
        assert sorted(titles) == sorted(d["title"] for d in t["docs"] if d["gold"])


def test_web_backend_goes_through_the_corpus_server(small_world, tmp_path):
    result = evaluate(small_world.tasks[:2], model=ScriptedChatModel(), backend="web",
                      config=ResearchConfig(max_rounds=1))
    per_task = result["runs"]["graph"]["per_task"]
    assert len(per_task) == 2 and all(p["searches"] >= 1 for p in per_task)
    assert max(p["evidence_recall"] for p in per_task) > 0


def test_evaluate_keeps_no_temp_store_and_leaves_its_input_alone(small_world, tmp_path,
                                                                   monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    tasks = [{k: v for k, v in t.items() if k != "id"} for t in small_world.tasks[:2]]
    before = copy.deepcopy(tasks)
    result = evaluate(tasks, model=ScriptedChatModel(), kb_root=tmp_path / "kbs",
                      config=ResearchConfig(search_mode="fts", max_rounds=1))
    assert tasks == before
    assert [p["task_id"] for p in result["runs"]["graph"]["per_task"]] == ["q0", "q1"]
    assert result["record"] is None and not list(tmp.glob("sleuth-eval-*"))


def test_cli_retrieval_baseline_and_bamboogle_error(sleuth_in_process, shared_file, small_world,
                                                    tmp_path):
    """In process (test_cli.py checks that a fresh `sleuth` mounts `eval`)."""
    _, tasks = small_world.write(tmp_path / "w")
    proc = sleuth_in_process("eval", str(tasks), "--mode", "retrieval", "--limit", "4",
                             "--out", str(tmp_path / "ret.json"))
    result = json.loads((tmp_path / "ret.json").read_text())
    assert set(result["runs"]) == {"retrieval-title", "retrieval-sentence"}
    assert [p["task_id"] for p in result["runs"]["retrieval-title"]["per_task"]] == \
        [t["id"] for t in small_world.tasks[:4]]
    assert "retrieval-title" in proc.stdout and (tmp_path / "ret.png").exists()
    assert all(h in proc.stdout for h in ("KF1", "evid F1", "retrieval"))
    title = result["runs"]["retrieval-title"]["per_task"]
    assert any(p["evidence_f1"] > 0 for p in title)  # the top passage is gold somewhere
    bamboogle = shared_file("bamboogle_dev.jsonl")
    proc = sleuth_in_process("eval", str(bamboogle), "--out", str(tmp_path / "b.json"), check=False)
    assert proc.returncode == 1 and not (tmp_path / "b.json").exists()
    assert "no documents" in proc.stderr and "search_url" in proc.stderr.replace("-", "_")


@pytest.mark.parametrize("name", ["hotpotqa_dev.jsonl", "2wikimultihopqa_dev.jsonl",
                                  "musique_dev.jsonl", "rezero_apollo13_dev.jsonl"])
def test_every_shared_file_evaluates(name, shared_file, tmp_path):
    from tools.documents import read_tasks

    rows = read_tasks(shared_file(name), 3)
    result = evaluate(shared_file(name), mode="retrieval", limit=3, kb_root=tmp_path)
    assert set(result["runs"]) == {"retrieval-title", "retrieval-sentence"}
    for run_ in result["runs"].values():
        assert [p["task_id"] for p in run_["per_task"]] == [r["id"] for r in rows]
        assert [p["gold"] for p in run_["per_task"]] == [r["answer"] for r in rows]
        assert all(p["answer"] and p["searches"] == 1 for p in run_["per_task"])
        assert run_["overall"]["evidence_recall"] > 0  # the tasks' own paragraphs were found


@pytest.mark.slow
def test_real_smollm2_on_five_world_tasks(smollm2, small_world, tmp_path):
    result = evaluate(small_world.tasks[:5], model=smollm2, concurrency=5,
                      kb_root=tmp_path, config=ResearchConfig(max_rounds=2, seed=0))
    run_ = result["runs"]["graph"]
    assert len(run_["per_task"]) == 5 and run_["failed"] == []
    assert run_["overall"]["model_calls"] >= 3 and run_["overall"]["searches"] >= 1


def test_eval_scores_conflict_tasks_by_every_valid_answer_and_no_wrong_one():
    from graph.trajectory import Gold, Trajectory
    from training.evaluate import score_trajectory

    gold = Gold(answer="Varo", valid_answers=["Varo", "Holm"], wrong_answers=["Oslo"])
    both, one, wrong = (Trajectory(answer=a) for a in ("Holm; Varo", "Varo", "Varo; Holm; Oslo"))
    assert [score_trajectory(t, gold)["conflict_accuracy"] for t in (both, one, wrong)] == [1, 0, 0]
    plain = Gold(answer="Varo")
    assert score_trajectory(Trajectory(answer="Varo"), plain)["conflict_accuracy"] == 1.0
