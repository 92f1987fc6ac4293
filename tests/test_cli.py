"""The `sleuth` console script, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

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
    human = sleuth("search", first_gold["title"], "--kb", str(tmp_path / "kb")).stdout
    assert first_gold["title"][:10] in human


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
        page = json.loads(sleuth("fetch", hits[0].url, "--allow-host", "127.0.0.1", "--json").stdout)
        assert page["title"].startswith(hits[0].title)
        env_page = sleuth("fetch", hits[0].url, env={"SLEUTH_ALLOW_HOSTS": "127.0.0.1"},
                          check=False, timeout=120)
        assert env_page.returncode == 0 and hits[0].title in env_page.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("args", [["--help"], ["search", "--help"]])
def test_help(sleuth, args):
    assert "Usage" in sleuth(*args).stdout


def test_record_with_a_local_model_folder(sleuth, tiny_model, small_world, tmp_path):
    from graph import TrajectoryStore

    folder = tmp_path / "tiny"
    tiny_model.model.save_pretrained(folder)
    tiny_model.tokenizer.save_pretrained(folder)
    _, tasks = small_world.write(tmp_path / "w")
    out = json.loads(sleuth("record", str(tasks), "--kb", str(tmp_path / "kb"), "--samples", "2",
                            "--limit", "2", "--model", f"hf:{folder}", "--out", str(tmp_path / "runs"),
                            "--json").stdout)
    assert out["trajectories"] == 4 and out["failed"] == 0
    store = TrajectoryStore(tmp_path / "runs")
    groups = store.groups()
    assert len(groups) == 2 and all(len(g) == 2 for g in groups.values())
    assert all(s.completion_token_ids for t in store for s in t.model_steps)


def test_record_source_errors_are_one_line(sleuth, tmp_path):
    tasks = tmp_path / "bamboogle.jsonl"
    tasks.write_text(json.dumps({"id": "b1", "question": "Who?", "answer": "x"}) + "\n")
    (tmp_path / "file").write_text("x")
    for source, message in ((["--corpus-server"], "no documents"),
                            (["--kb", str(tmp_path / "kb")], "no documents"),
                            (["--kb", str(tmp_path / "file")], "is a file")):
        proc = sleuth("record", str(tasks), *source, "--out", str(tmp_path / "runs"), check=False)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "kb").exists()
