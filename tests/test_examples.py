"""The examples, run as a user runs them (this venv's Python on the script) on small data.

Each script prints a JSON summary as its last stdout line with `--json`; the tests check it
against the files the script wrote (the trajectory store, the trained model folders).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.text import normalize_answer
from tools.worlds import generate_world

REPO = Path(__file__).resolve().parents[1]


def run_example(script: str, *args: str, cwd: Path) -> tuple[dict, str]:
    """Run examples/SCRIPT ARGS --json; return its JSON summary and its whole stdout."""
    proc = subprocess.run([sys.executable, str(REPO / "examples" / script), *args, "--json"],
                          capture_output=True, text=True, timeout=600, cwd=cwd,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, f"{script} failed:\n{proc.stderr[-4000:]}"
    last = [line for line in proc.stdout.splitlines() if line.startswith("{")][-1]
    return json.loads(last), proc.stdout


def read_store(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "trajectories.jsonl").read_text().splitlines()
            if line.strip()]


@pytest.fixture(scope="module")
def tiny_folder(make_tiny_policy, tmp_path_factory) -> Path:
    """A tiny random Llama saved as an HF folder: what `--model hf:DIR` loads, in seconds
    (the examples' default `local:smollm2` runs the same code path, 10x slower)."""
    folder = tmp_path_factory.mktemp("tiny")
    chat = make_tiny_policy(seed=0)
    chat.model.save_pretrained(folder)
    chat.tokenizer.save_pretrained(folder)
    return folder


def test_research_example_answers_records_and_queries(tmp_path, tiny_folder):
    summary, stdout = run_example("research.py", "--model", f"hf:{tiny_folder}", "--tasks", "2",
                                  "--max-rounds", "1", "--out", str(tmp_path / "out"),
                                  cwd=tmp_path)
    check_research(summary, stdout, tmp_path / "out")


def check_research(summary: dict, stdout: str, out: Path) -> None:
    tasks = generate_world(seed=0, n_tasks=2, hops=(2,)).tasks
    assert summary["question"] == tasks[0]["question"]
    assert f"Q: {tasks[0]['question']}" in stdout and f"A: {summary['answer']!r}" in stdout
    stats = summary["stats"]
    assert stats["model_calls"] >= 2 and stats["tokens"] > 0 and stats["rounds"] == 1
    corpus = {d["doc_id"] for t in tasks for d in t["docs"]}
    assert set(summary["citations"]) <= corpus

    lines = read_store(out / "runs")
    assert summary["store"] == str(out / "runs" / "trajectories.jsonl")
    # one line per run, in the order the runs finished
    assert sorted(t["id"] for t in lines) == sorted(summary["recorded"])
    assert sorted(t["task_id"] for t in lines) == [t["id"] for t in tasks]
    for t in lines:  # scored at record time, against the gold the run carries
        assert isinstance(t["metrics"].get("reward"), float)
        assert {"f1", "exact_match", "evidence_recall"} <= set(t["metrics"]["reward_components"])
        assert t["gold"]["answer"] == next(x["answer"] for x in tasks if x["id"] == t["task_id"])
    assert summary["reward_at_least_0.5"] == [t["id"] for t in lines
                                              if t["metrics"]["reward"] >= 0.5]
    assert f"{len(lines)} trajectories in" in stdout


def test_custom_graph_example_records_steps_and_nests(tmp_path, tiny_folder):
    summary, _ = run_example("custom_graph.py", "--model", f"hf:{tiny_folder}", "--tasks", "2",
                             "--max-rounds", "1", cwd=tmp_path)
    check_custom_graph(summary)


def check_custom_graph(summary: dict) -> None:
    stats, steps = summary["stats"], summary["steps"]
    assert stats["rounds"] == 1 and stats["searches"] <= 4  # the budget from `configurable`
    model_steps = [s for s in steps if s["kind"] == "model"]
    assert len(model_steps) == stats["model_calls"]
    roles = [s["role"] for s in model_steps]
    assert roles[0] == "planner" and roles[-1] == "writer" and "searcher" in roles
    assert "selector" not in roles  # our top3 function selected, no model call
    assert all(s["prompt_tokens"] > 0 and s["completion_tokens"] > 0 for s in model_steps)
    tool_steps = [s for s in steps if s["kind"] == "tool"]
    assert len(tool_steps) == stats["searches"] and any(s["hits"] for s in tool_steps)
    assert len(summary["evidence"]) == min(3, summary["retrieved_docs"])  # top3's work
    assert len(set(summary["evidence"])) == len(summary["evidence"])

    tasks = generate_world(seed=0, n_tasks=2, hops=(2,)).tasks
    runs = summary["pipeline"]
    assert [r["task_id"] for r in runs] == [t["id"] for t in tasks]
    for r, t in zip(runs, tasks, strict=True):  # the grade node ran on the subgraph's answer
        gold, answer = normalize_answer(t["answer"]), normalize_answer(r["answer"])
        assert r["correct"] is (f" {gold} " in f" {answer} ")


@pytest.mark.slow  # 40-95 s on 2 busy CPU cores: records 4 runs, SFT, a GRPO step, reloads
def test_train_example_sft_grpo_and_load_back(tmp_path, tiny_folder):
    tiny = tiny_folder
    out = tmp_path / "out"
    summary, _ = run_example("train.py", "--model", f"hf:{tiny}", "--tasks", "1", "--steps", "1",
                             "--min-reward", "0", "--no-dynamic-sampling", "--out", str(out),
                             cwd=tmp_path)
    check_train(summary, tiny, out)


def check_train(summary: dict, tiny: Path, out: Path) -> None:
    from safetensors.torch import load_file

    lines = read_store(out / "runs")
    assert summary["recorded"] == len(lines) == 4  # 1 task x 4 samples, one group
    assert len({t["group_id"] for t in lines}) == 1 and len({t["id"] for t in lines}) == 4
    assert all(isinstance(t["metrics"].get("reward"), float) for t in lines)

    sft = summary["sft"]
    assert sft["steps"] == 1 and sft["trajectories"] == 4 and sft["samples"] > 0
    for folder in (out / "sft", out / "grpo"):
        assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
        assert (folder / "adapter" / "adapter_model.safetensors").exists()
    before = load_file(tiny / "model.safetensors")
    after = load_file(out / "sft" / "model.safetensors")
    shared = before.keys() & after.keys()
    assert shared and any(not (before[k] == after[k]).all() for k in shared)  # SFT trained

    assert summary["grpo_start"] == f"hf:{out / 'sft'}"
    rows = [json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert summary["grpo_metrics"] == rows and len(rows) == 1
    assert rows[0]["step"] == 1 and rows[0]["rollouts"] == 4 and rows[0]["samples"] > 0
    assert summary["loaded"] == "LocalChatModel" and summary["reply_tokens"] > 0
