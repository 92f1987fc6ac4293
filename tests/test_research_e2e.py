"""End to end with the real SmolLM2: `sleuth ask` over a knowledge base and over the corpus server."""

from __future__ import annotations

import json

import torch
from test_models import fresh_logprobs

from graph import TrajectoryStore


def check_recorded_tokens(smollm2, store_dir):
    """Every recorded model call decodes to its text and its logprobs match a fresh forward."""
    (traj,) = list(TrajectoryStore(store_dir))
    assert traj.model_steps and traj.tool_steps
    for step in traj.model_steps:
        assert step.role in {"planner", "searcher", "selector", "writer"}
        ids = step.completion_token_ids
        assert smollm2.tokenizer.decode(ids, skip_special_tokens=True) == step.text
        meta = {"prompt_token_ids": step.prompt_token_ids, "completion_token_ids": ids,
                "temperature": traj.config["temperature"]}
        assert torch.allclose(fresh_logprobs(smollm2, meta), torch.tensor(step.logprobs), atol=1e-4)
    return traj


def test_ask_over_knowledge_base(sleuth, smollm2, small_world, world_kb, tmp_path):
    task = small_world.tasks[1]
    out = json.loads(sleuth("ask", task["question"], "--kb", str(world_kb.path), "--max-rounds", "2",
                            "--record", str(tmp_path / "runs"), "--json").stdout)
    assert set(out) >= {"answer", "report", "citations", "stats", "trajectory_id"}
    assert out["stats"]["model_calls"] >= 3 and out["stats"]["searches"] >= 1
    retrieved = {c["doc_id"] for c in out["citations"]}
    assert retrieved <= {d["doc_id"] for d in small_world.docs}
    traj = check_recorded_tokens(smollm2, tmp_path / "runs")
    assert traj.id == out["trajectory_id"] and traj.answer == out["answer"]


def test_ask_over_the_corpus_server(sleuth, smollm2, corpus_server, small_world, tmp_path):
    task = small_world.tasks[2]
    proc = sleuth("ask", task["question"], "--web", corpus_server.url, "--max-rounds", "1",
                  "--record", str(tmp_path / "runs"))
    assert "Answer:" in proc.stdout and "plan" in proc.stderr and "search" in proc.stderr
    assert any(r.startswith("/doc/") for r in corpus_server.requests)  # pages were fetched
    traj = check_recorded_tokens(smollm2, tmp_path / "runs")
    assert {s.tool for s in traj.tool_steps} == {"web_search"}
    assert all(h["url"].startswith(corpus_server.url) for s in traj.tool_steps for h in s.output)
