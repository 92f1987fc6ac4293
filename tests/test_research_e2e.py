"""End to end with the real SmolLM2: `sleuth ask` over a knowledge base (and, slow, the web).

The one real-model test of the default suite: the whole answer pipeline, from the command
line to the recorded trajectory a trainer reads. The decoder's own contract (token ids,
logprobs, batching, stop strings) is tested on the tiny model in test_models.py, and the
human-readable `ask` over the corpus server with the tiny model in test_cli.py.
"""

from __future__ import annotations

import json

import pytest


def test_ask_over_knowledge_base(sleuth, smollm2, check_recorded_tokens, small_world, world_kb,
                                 tmp_path):
    task = small_world.tasks[1]
    out = json.loads(sleuth("ask", task["question"], "--kb", str(world_kb.path), "--max-rounds", "1",
                            "--record", str(tmp_path / "runs"), "--json").stdout)
    assert out["stats"]["model_calls"] >= 3 and out["stats"]["searches"] >= 1
    traj = check_recorded_tokens(smollm2, tmp_path / "runs")
    assert traj.id == out["trajectory_id"] and traj.answer == out["answer"] != ""
    assert traj.model == "smollm2-135m-instruct" and traj.config["temperature"] == 0.0
    assert {s.tool for s in traj.tool_steps} == {"knowledge_base"}
    # every citation points at a passage this run retrieved (greedy decoding cites here)
    retrieved = {h["chunk_id"]: h["doc_id"] for s in traj.tool_steps for h in s.output}
    assert out["citations"]
    for c in out["citations"]:
        assert retrieved.get(c["chunk_id"]) == c["doc_id"]
    assert [c["chunk_id"] for c in out["citations"]] == [c["chunk_id"] for c in traj.citations]


@pytest.mark.slow
def test_ask_over_the_corpus_server(sleuth, smollm2, check_recorded_tokens, corpus_server,
                                    small_world, tmp_path):
    task = small_world.tasks[2]
    proc = sleuth("ask", task["question"], "--web", corpus_server.url, "--max-rounds", "1",
                  "--record", str(tmp_path / "runs"), timeout=1200)  # ~20 s idle, minutes loaded
    assert "Answer:" in proc.stdout and "plan" in proc.stderr and "search" in proc.stderr
    assert any(r.startswith("/doc/") for r in corpus_server.requests)  # pages were fetched
    traj = check_recorded_tokens(smollm2, tmp_path / "runs")
    assert {s.tool for s in traj.tool_steps} == {"web_search"}
    assert all(h["url"].startswith(corpus_server.url) for s in traj.tool_steps for h in s.output)
