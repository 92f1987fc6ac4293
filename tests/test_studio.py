"""langgraph.json: the graph LangGraph Server (`langgraph dev`) and Studio load, run here."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
from scripted import ScriptedChatModel

from tools.embeddings import HashEmbedder
from tools.knowledge import KnowledgeBase

REPO = Path(__file__).resolve().parents[1]


def load_named_graph(graph_id: str = "research"):
    """What the server does: read langgraph.json, import the file it names, take the object."""
    spec = json.loads((REPO / "langgraph.json").read_text())
    assert "." in spec["dependencies"]  # the server installs this project
    path, _, attr = spec["graphs"][graph_id].rpartition(":")
    file = (REPO / path).resolve()
    assert file.is_relative_to(REPO) and file.exists()
    module_spec = importlib.util.spec_from_file_location(f"studio_{graph_id}", file)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    return module, getattr(module, attr)


@pytest.fixture
def kb_folder(tmp_path, small_world) -> Path:
    kb = KnowledgeBase(tmp_path / "kb", embedder=HashEmbedder())
    kb.ingest(small_world.docs, progress=False)
    return kb.path


@pytest.fixture
def env(monkeypatch):
    for name in ("SLEUTH_MODEL", "SLEUTH_KB", "SLEUTH_SEARCH_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_importing_the_named_module_loads_nothing(env):
    code = ("import importlib.util as u; s = u.spec_from_file_location('m', 'graph/studio.py'); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); from agents import models; "
            "print(len(models._LOADED))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "0"  # no model loaded, no knowledge base opened, no env var needed


def test_the_named_factory_builds_and_runs_the_research_graph(env, kb_folder, small_world):
    module, make_graph = load_named_graph()
    assert list(inspect.signature(make_graph).parameters) == ["config"]  # as the server calls it
    env.setenv("SLEUTH_KB", str(kb_folder))
    config = {"configurable": {"search_mode": "fts", "max_attempts": 1}}
    model = ScriptedChatModel()
    graph = module.studio_graph(config, model=model)  # make_graph's graph, its model in process
    assert set(graph.get_graph().nodes) >= {"plan", "search", "select", "write"}
    task = small_world.tasks[0]
    out = graph.invoke({"question": task["question"]}, config)
    assert out["answer"] and out["answer"] != "unknown"
    assert out["citations"] and out["stop_reason"] == "planner_done"
    assert model.calls["writer"] == 1 and model.calls["searcher"] >= 1


def test_configurable_overrides_the_environment(env, kb_folder, tmp_path, make_tiny_policy):
    _, make_graph = load_named_graph()
    folder = tmp_path / "tiny"
    chat = make_tiny_policy(seed=1)
    chat.model.save_pretrained(folder)
    chat.tokenizer.save_pretrained(folder)
    env.setenv("SLEUTH_KB", str(tmp_path / "missing"))
    env.setenv("SLEUTH_MODEL", "hf:/nowhere")
    with pytest.raises(FileNotFoundError, match="missing"):
        asyncio.run(make_graph({"configurable": {"model": f"hf:{folder}"}}))
    config = {"configurable": {"model": f"hf:{folder}", "knowledge": str(kb_folder),
                               "search_mode": "fts", "max_rounds": 1, "max_new_tokens": 8,
                               "temperature": 0.0}}
    out = asyncio.run(make_graph(config)).invoke({"question": "Who founded the observatory?"}, config)
    assert out["stop_reason"] and "answer" in out  # a real (tiny, random) policy ran to the end


def test_without_a_source_the_graph_still_builds_and_a_run_says_what_is_missing(env):
    from graph.studio import studio_graph

    graph = studio_graph(None, model=ScriptedChatModel())  # what Studio draws before any setting
    assert "search" in graph.get_graph().nodes
    with pytest.raises(ValueError, match="SLEUTH_KB"):
        graph.invoke({"question": "Who founded the observatory?"})


def test_studio_can_read_the_graphs_input_schema(env):
    from graph.studio import studio_graph

    graph = studio_graph(None, model=ScriptedChatModel())
    assert "question" in graph.get_input_jsonschema()["properties"]
