"""The `sleuth` console script, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tools.web import SearxngSearch

SLEUTH = str(Path(sys.executable).parent / "sleuth")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([SLEUTH, *args], capture_output=True, text=True, timeout=300, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"sleuth {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def test_world_ingest_search_json(tmp_path):
    world = json.loads(run("world", "--seed", "4", "--tasks", "6", "--out", str(tmp_path / "w"),
                           "--json").stdout)
    assert world["n_tasks"] == 6
    stats = json.loads(run("ingest", world["corpus"], "--kb", str(tmp_path / "kb"), "--json").stdout)
    assert stats["documents"] == world["docs"] and stats["embedded"] >= stats["documents"]
    task = json.loads(Path(world["tasks"]).read_text().splitlines()[0])
    first_gold = next(d for d in task["docs"] if d["gold"])
    out = json.loads(run("search", first_gold["title"], "--kb", str(tmp_path / "kb"), "-k", "3",
                         "--mode", "fts", "--json").stdout)
    assert out["passages"][0]["doc_id"] == first_gold["doc_id"]
    human = run("search", first_gold["title"], "--kb", str(tmp_path / "kb")).stdout
    assert first_gold["title"][:10] in human


def test_clear_one_line_errors(tmp_path):
    proc = run("search", "x", "--kb", str(tmp_path / "none"), check=False)
    assert proc.returncode != 0 and "sleuth ingest" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("fetch", "http://127.0.0.1:9/secret", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "refused" in proc.stderr
    proc = run("ingest", str(tmp_path / "missing.jsonl"), "--kb", str(tmp_path / "kb"), check=False)
    assert proc.returncode != 0 and "no such file" in proc.stderr


def test_serve_corpus_and_fetch_through_it(tmp_path):
    run("world", "--seed", "2", "--tasks", "4", "--out", str(tmp_path))
    server = subprocess.Popen([SLEUTH, "serve-corpus", str(tmp_path / "corpus.jsonl"), "--port", "0"],
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        hits = SearxngSearch(url).search("founded", k=2)
        assert hits and hits[0].url.startswith(url)
        page = json.loads(run("fetch", hits[0].url, "--allow-host", "127.0.0.1", "--json").stdout)
        assert page["title"].startswith(hits[0].title)
        env_page = subprocess.run([SLEUTH, "fetch", hits[0].url], capture_output=True, text=True,
                                  env={**os.environ, "SLEUTH_ALLOW_HOSTS": "127.0.0.1"}, timeout=120)
        assert env_page.returncode == 0 and hits[0].title in env_page.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize("args", [["--help"], ["search", "--help"]])
def test_help(args):
    assert "Usage" in run(*args).stdout


def test_record_with_a_local_model_folder(tiny_model, small_world, tmp_path):
    from graph import TrajectoryStore

    folder = tmp_path / "tiny"
    tiny_model.model.save_pretrained(folder)
    tiny_model.tokenizer.save_pretrained(folder)
    _, tasks = small_world.write(tmp_path / "w")
    out = json.loads(run("record", str(tasks), "--kb", str(tmp_path / "kb"), "--samples", "2",
                         "--limit", "2", "--model", f"hf:{folder}", "--out", str(tmp_path / "runs"),
                         "--json").stdout)
    assert out["trajectories"] == 4 and out["failed"] == 0
    store = TrajectoryStore(tmp_path / "runs")
    groups = store.groups()
    assert len(groups) == 2 and all(len(g) == 2 for g in groups.values())
    assert all(s.completion_token_ids for t in store for s in t.model_steps)
