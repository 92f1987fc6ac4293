"""Lone surrogates in a model reply or a document: ingest, research and storage still work.

A Python string may hold a lone surrogate (`"\\ud800"`, e.g. from a JSON escape or a byte-level
decode); UTF-8, JSON writers and Arrow refuse it. Text is made storable where it enters
(`tools.text.clean_text`): the surrogate becomes U+FFFD.
"""

from __future__ import annotations

import json

import pytest
from scripted import ScriptedChatModel, default_reply

from graph import ResearchConfig, TrajectoryRecorder, research
from graph.store import TrajectoryStore
from graph.trajectory import ModelStep, Trajectory
from tools.documents import Document, content_id, load_documents
from tools.embeddings import HashEmbedder
from tools.knowledge import KnowledgeBase
from tools.text import clean_data, clean_text

pytestmark = pytest.mark.timeout(60)

LONE = "\ud800"
BAD_DOC = {"id": "bad", "title": f"Varo {LONE}harbour", "text": f"Ada Lenn was born in Varo{LONE}. "
           f"The Iron Harbour is a film directed by Ada Lenn.{LONE}", "metadata": {"k": f"v{LONE}"}}
GOOD_DOC = {"id": "good", "title": "Orla Press", "text": "Orla Press was founded in 1901 in Varo."}


def test_clean_text_replaces_lone_surrogates_and_keeps_pairs():
    assert clean_text(f"a{LONE}b\udc00") == "a\ufffdb\ufffd"
    assert clean_text("\ud83d\ude00") == "\U0001f600"  # a pair in a str joins into its character
    assert clean_text("plain ü 😀") == "plain ü 😀"
    assert clean_data({f"k{LONE}": [(LONE, 1)], "n": 2.5}) == {"k\ufffd": [("\ufffd", 1)], "n": 2.5}


def test_documents_and_ingest_survive_surrogates(tmp_path):
    doc = Document.from_dict(BAD_DOC)
    assert LONE not in doc.title + doc.text and doc.metadata == {"k": "v\ufffd"}
    assert Document(doc_id=f"x{LONE}", text=LONE).doc_id == "x\ufffd"
    assert content_id(LONE, "t") == content_id("\ufffd", "t")
    path = tmp_path / "docs.jsonl"  # a JSON escape is how lone surrogates usually arrive
    path.write_text(json.dumps(BAD_DOC) + "\n" + json.dumps(GOOD_DOC) + "\n")
    assert "\\ud800" in path.read_text()
    kb = KnowledgeBase(tmp_path / "kb", embedder=HashEmbedder())
    stats = kb.ingest(load_documents([path]), progress=False)
    assert stats.documents == 2 and stats.chunks >= 2
    hits = kb.search(f"Varo{LONE} harbour", k=3, mode="hybrid")  # a query with one too
    assert hits and all(LONE not in p.text + p.title for p in hits)
    assert "\ufffd" in "".join(p.title for p in hits)


def surrogate_script(role, messages):
    """The default scripted replies, each carrying a lone surrogate."""
    reply = default_reply(role, messages)
    if role == "writer":
        return f"<answer>Varo{LONE}</answer>\nBorn in Varo{LONE} [1]."
    if role == "searcher":
        return reply.replace("</search>", f" {LONE}</search>")
    return reply + LONE


def test_research_with_surrogates_in_replies_and_documents_is_stored(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb", embedder=HashEmbedder())
    kb.ingest([BAD_DOC, GOOD_DOC], progress=False)
    store = TrajectoryStore(tmp_path / "runs")
    r = research(f"Where was Ada Lenn{LONE} born?", model=ScriptedChatModel(script=surrogate_script),
                 knowledge=kb, store=store, config=ResearchConfig(search_mode="fts", max_rounds=2))
    assert r.error is None and r.trajectory_id, r.error
    assert r.answer.startswith("Varo")
    stored = TrajectoryStore(tmp_path / "runs")
    t = stored.get(r.trajectory_id)
    assert [x.id for x in stored] == [r.trajectory_id] and stored.unreadable == []
    line = (tmp_path / "runs" / "trajectories.jsonl").read_text(encoding="utf-8")
    assert LONE not in line and "\ufffd" in line
    writer = [s for s in t.model_steps if s.role == "writer"]
    assert writer and "\ufffd" in writer[-1].text and LONE not in writer[-1].text
    assert t.answer == clean_text(r.answer)
    assert r.question == t.question == "Where was Ada Lenn\ufffd born?"  # the question too
    assert any("\ufffd" in str(s.prompt_messages) for s in t.model_steps)  # the page's U+FFFD


def test_the_store_writes_any_trajectory_with_surrogates_without_touching_it(tmp_path):
    t = Trajectory(question=f"q{LONE}", answer=LONE, metrics={f"m{LONE}": LONE},
                   steps=[ModelStep(text=f"<done>{LONE}", parsed={"x": [LONE]},
                                    prompt_messages=[{"role": "human", "content": LONE}])])
    store = TrajectoryStore(tmp_path)
    store.append(t)
    assert t.answer == LONE  # the caller's object is left as it was
    back = TrajectoryStore(tmp_path).get(t.id)
    assert (back.question, back.answer, back.steps[0].text) == ("q\ufffd", "\ufffd", "<done>\ufffd")
    assert back.steps[0].parsed == {"x": ["\ufffd"]} and back.metrics["m\ufffd"] == "\ufffd"
    assert TrajectoryStore(tmp_path).query("answer = '\ufffd'")[0].id == t.id  # the index row too


def test_the_recorder_cleans_what_enters_a_trajectory():
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.outputs import ChatGeneration, LLMResult

    rec = TrajectoryRecorder()
    import uuid

    run = uuid.uuid4()
    rec.on_chat_model_start({}, [[HumanMessage(f"prompt{LONE}")]], run_id=run, metadata={})
    rec.on_llm_end(LLMResult(generations=[[ChatGeneration(message=AIMessage(f"reply{LONE}"))]]),
                   run_id=run)
    tool = uuid.uuid4()
    rec.on_tool_start({"name": "kb"}, f"q{LONE}", run_id=tool)
    rec.on_tool_end([{"doc_id": "d", "text": f"page{LONE}"}], run_id=tool)
    t = rec.trajectory()
    assert t.steps[0].text == "reply\ufffd" and t.steps[0].prompt_messages[0]["content"] == "prompt\ufffd"
    assert t.steps[1].input == "q\ufffd" and t.steps[1].output[0]["text"] == "page\ufffd"
    t.model_dump_json()  # serialises as recorded
