"""The `sleuth` console script: run as a user runs it (a subprocess) once per command, and in
process (`sleuth_in_process`) for further output and error checks of the same command."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tools.web import SearxngSearch


def test_world_ingest_search_json(sleuth, tmp_path):
    world = json.loads(sleuth("world", "--seed", "4", "--tasks", "6", "--out", str(tmp_path / "w"),
                              "--json").stdout)
    assert world["n_tasks"] == 6
    stats = json.loads(sleuth("ingest", world["corpus"], "--kb", str(tmp_path / "kb"), "--json").stdout)
    assert stats["documents"] == world["docs"] and stats["embedded"] >= stats["documents"]
    task = json.loads(Path(world["tasks"]).read_text().splitlines()[0])
    first_gold = next(d for d in task["docs"] if d["gold"])
    out = json.loads(sleuth("search", first_gold["title"], "--kb", str(tmp_path / "kb"), "-k", "3",
                            "--mode", "fts", "--json").stdout)
    assert out["passages"][0]["doc_id"] == first_gold["doc_id"]


def test_search_prints_a_table(sleuth_in_process, world_kb, small_world):
    doc = small_world.docs[3]
    human = sleuth_in_process("search", doc["title"], "--kb", str(world_kb.path), "-k", "2").stdout
    rows = [line for line in human.splitlines() if doc["doc_id"] in line]
    assert len(rows) == 1 and doc["title"] in rows[0]  # one table row per passage


def test_clear_one_line_errors(sleuth, tmp_path):
    proc = sleuth("search", "x", "--kb", str(tmp_path / "none"), check=False)
    assert proc.returncode != 0 and "sleuth ingest" in proc.stderr and "Traceback" not in proc.stderr
    proc = sleuth("fetch", "http://127.0.0.1:9/secret", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "refused" in proc.stderr
    proc = sleuth("ingest", str(tmp_path / "missing.jsonl"), "--kb", str(tmp_path / "kb"), check=False)
    assert proc.returncode != 0 and "no such file" in proc.stderr


def test_serve_corpus_and_fetch_through_it(sleuth, tmp_path):
    sleuth("world", "--seed", "2", "--tasks", "4", "--out", str(tmp_path))
    server = subprocess.Popen([sleuth.exe, "serve-corpus", str(tmp_path / "corpus.jsonl"), "--port", "0"],
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        hits = SearxngSearch(url).search("founded", k=2)
        assert hits and hits[0].url.startswith(url)
        origin = url.split("://", 1)[1]  # host:port: a bare 127.0.0.1 would mean port 80 only
        page = json.loads(sleuth("fetch", hits[0].url, "--allow-host", origin, "--json").stdout)
        assert page["title"].startswith(hits[0].title)
        env_page = sleuth("fetch", hits[0].url, env={"SLEUTH_ALLOW_HOSTS": origin},
                          check=False, timeout=120)
        assert env_page.returncode == 0 and hits[0].title in env_page.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_help_lists_every_command_the_training_ones_mounted_lazily(sleuth):
    top = sleuth("--help").stdout
    for command in ("ingest", "search", "fetch", "serve-corpus", "world", "ask", "record",
                    "view", "serve", "eval", "train"):
        assert f"│ {command} " in top, command
    assert "--mode" in sleuth("search", "--help").stdout


def test_record_with_a_local_model_folder(sleuth_in_process, tiny_model, small_world, world_kb,
                                          tmp_path):
    """In process: the one `sleuth` subprocess that runs a local model is test_research_e2e.py's."""
    from graph import TrajectoryStore

    folder = tmp_path / "tiny"
    tiny_model.model.save_pretrained(folder)
    tiny_model.tokenizer.save_pretrained(folder)
    _, tasks = small_world.write(tmp_path / "w")
    out = json.loads(sleuth_in_process(
        "record", str(tasks), "--kb", str(world_kb.path), "--samples", "2", "--limit", "2",
        "--model", f"hf:{folder}", "--seed", "3", "--out", str(tmp_path / "runs"), "--json").stdout)
    assert out["trajectories"] == 4 and out["failed"] == 0
    store = TrajectoryStore(tmp_path / "runs")
    groups = store.groups()
    assert len(groups) == 2 and all(len(g) == 2 for g in groups.values())
    assert sorted({g[0].task_id for g in groups.values()}) == sorted(t["id"] for t in small_world.tasks[:2])
    for a, b in groups.values():  # a group: two samples of one task, each with its own seed
        assert a.task_id == b.task_id and a.model == b.model == "tiny"
        assert a.model_steps[0].completion_token_ids != b.model_steps[0].completion_token_ids
    assert all(s.completion_token_ids for t in store for s in t.model_steps)


def test_record_source_errors_are_one_line(sleuth, sleuth_in_process, tmp_path):
    tasks = tmp_path / "bamboogle.jsonl"
    tasks.write_text(json.dumps({"id": "b1", "question": "Who?", "answer": "x"}) + "\n")
    (tmp_path / "file").write_text("x")
    proc = sleuth("record", str(tasks), "--corpus-server", "--out", str(tmp_path / "runs"),
                  check=False)  # once as a user sees it
    assert proc.returncode == 1 and "no documents" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    for source, message in ((["--kb", str(tmp_path / "kb")], "no documents"),
                            (["--kb", str(tmp_path / "file")], "is a file")):
        proc = sleuth_in_process("record", str(tasks), *source, "--out", str(tmp_path / "runs"),
                                 check=False)
        assert proc.returncode == 1 and message in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "kb").exists()


def test_ask_prints_progress_answer_and_stats(sleuth_in_process, tiny_model, check_recorded_tokens,
                                              world_kb, corpus_server, small_world, tmp_path):
    """The human-readable `ask` over both sources, with a local model folder (the real-model run
    in test_research_e2e.py prints JSON); the recorded tokens are the model's, token by token."""
    folder = tmp_path / "tiny"
    tiny_model.model.save_pretrained(folder)
    tiny_model.tokenizer.save_pretrained(folder)
    proc = sleuth_in_process("ask", small_world.tasks[2]["question"], "--kb", str(world_kb.path),
                             "--web", corpus_server.url, "--max-rounds", "1", "--temperature", "0.7",
                             "--model", f"hf:{folder}", "--record", str(tmp_path / "runs"))
    assert "Answer:" in proc.stdout and re.search(r"\d+ model calls, [1-9]\d* searches", proc.stdout)
    assert "plan round 1: 1. " in proc.stderr and re.search(r"^search '.+': \d+ new", proc.stderr, re.M)
    traj = check_recorded_tokens(tiny_model, tmp_path / "runs")  # the same weights, saved and loaded
    assert traj.id in proc.stdout and traj.model == "tiny" and traj.config["temperature"] == 0.7
    assert {s.tool for s in traj.tool_steps} == {"knowledge_base", "web_search"}
    web_hits = [h for s in traj.tool_steps if s.tool == "web_search" for h in s.output]
    assert web_hits and all(h["url"].startswith(corpus_server.url) for h in web_hits)
    assert any(r.startswith("/doc/") for r in corpus_server.requests)  # pages were fetched


def test_pipeline_prompt_options_are_checked_before_training(sleuth_in_process, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"id": "q1"}\n')
    for option, message in ((("--prompt", "writer"), "--prompt takes ROLE=PROMPT"),
                            (("--chain-tasks", str(tmp_path / "none.jsonl")), "none.jsonl: No such file"),
                            (("--reward", "strict"), "unknown reward mix 'strict'"),
                            (("--chain-tasks", str(tmp_path / "bad.jsonl")),
                             "bad.jsonl:1: a task needs a 'question' string"),
                            (("--prompt", "critic=writer_reasoned"), "unknown role 'critic'"),
                            (("--prompt", "planner=no_such_prompt"), "no prompt file"),
                            (("--engine", "vllm"), "--engine is transformers or ct2-int8")):
        proc = sleuth_in_process("train", "pipeline", "--output", str(tmp_path / "run"),
                                 *option, check=False)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "chains").exists()
