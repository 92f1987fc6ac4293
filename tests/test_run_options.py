"""Run options on real components: a model per role, web search specs, resuming and approving
from the command line, the tool cache, passage judging, and LanceDB URIs.

Command-line runs happen in process (typer's CliRunner) with scripted chat models that this
process "has loaded already": `load_chat_model` keeps local models by spec, so a scripted
model seeded under `hf:NAME` is what `--model hf:NAME` resolves to, through the real code.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import BaseModel
from scripted import ScriptedChatModel, default_reply
from typer.testing import CliRunner

from agents import models as model_layer
from agents.schemas import Counters
from graph import ResearchConfig, TrajectoryStore, build_research_graph, research
from graph.builder import role_models
from graph.cli import app
from graph.run import resolve_sources, sqlite_checkpointer, web_backend
from tools.cache import CachedRetriever, ToolCache
from tools.corpus_server import CorpusServer
from tools.embeddings import HashEmbedder
from tools.knowledge import KnowledgeBase
from tools.web import BraveSearch, SearxngSearch, TavilySearch


@pytest.fixture
def kb(tmp_path, small_world):
    kb = KnowledgeBase(tmp_path / "kb", embedder=HashEmbedder())
    kb.ingest(small_world.docs, progress=False)
    return kb


def two_subquestions(role, messages):
    """The planner asks two sub-questions in round 1, then is done; the rest as default."""
    if role == "planner" and "Evidence: none yet." in str(messages[-1].content):
        return ("<subquestions>\n1. sub-question 0 about founded\n"
                "2. sub-question 1 about founded\n</subquestions>")
    return default_reply(role, messages)


class Unlisted(BaseModel):
    """A type no research state holds."""

    x: int = 1


def answer_with(text):
    return lambda role, messages: f"<answer>{text}</answer>\nIt is in [1]."


@pytest.fixture
def loaded(monkeypatch):
    """`loaded("hf:name", model)`: make `load_chat_model("hf:name")` this process's `model`."""
    def load(spec, model):
        monkeypatch.setitem(model_layer._LOADED, f"{spec}:[]", model)
        return model
    return load


def cli(*args, input=None, env=None):
    """`sleuth ARGS` in process: (exit code, stdout, stderr). CliRunner echoes typed input on
    stdout (a terminal shows it, a pipe does not get it): stdout starts at the JSON here."""
    result = CliRunner(env=env).invoke(app, list(args), input=input, catch_exceptions=False)
    out = result.stdout
    return result.exit_code, out[out.find("{"):] if input and "{" in out else out, result.stderr


# --------------------------------------------------------------------------- a model per role


def test_each_role_calls_its_own_model_and_the_trajectory_says_which(kb, small_world):
    default = ScriptedChatModel(model_name="default-model")
    planner = ScriptedChatModel(script=two_subquestions, model_name="planner-model")
    writer = ScriptedChatModel(script=answer_with("Varo"), model_name="writer-model")
    r = research(small_world.tasks[0]["question"], model=default, knowledge=kb,
                 models={"planner": planner, "writer": writer},
                 config=ResearchConfig(search_mode="fts", max_attempts=1))
    assert planner.calls == {"planner": 2} and writer.calls == {"writer": 1}
    assert default.calls == {"searcher": 2} and r.answer == "Varo"
    served = {(s.role, s.model) for s in r.trajectory.model_steps}
    assert served == {("planner", "planner-model"), ("searcher", "default-model"),
                      ("writer", "writer-model")}
    assert r.trajectory.model == "planner-model+default-model+writer-model"
    assert r.trajectory.config["models"] == {"planner": "planner-model", "writer": "writer-model"}


def test_role_specs_in_the_config_load_once_each(kb, small_world, loaded, monkeypatch):
    planner = loaded("hf:planner", ScriptedChatModel(model_name="p"))
    writer = loaded("hf:writer", ScriptedChatModel(script=answer_with("W"), model_name="w"))
    cfg = ResearchConfig(search_mode="fts", max_attempts=1, model="hf:planner",
                         models={"writer": "hf:writer"})
    r = research(small_world.tasks[0]["question"], knowledge=kb, config=cfg)
    assert set(planner.calls) == {"planner", "searcher"} and writer.calls == {"writer": 1}
    assert r.answer == "W" and r.trajectory.config["models"] == {"writer": "hf:writer"}
    # API specs build a new client per load: one spec named for two roles is one client
    monkeypatch.setenv("OPENAI_API_KEY", "not-sent")
    chats = role_models(["planner", "searcher", "writer"], model="hf:planner",
                        models={"planner": "openai:m", "writer": "openai:m"})
    assert chats["planner"] is chats["writer"] and chats["searcher"] is planner
    with pytest.raises(ValueError, match="planner, searcher, selector, writer"):
        ResearchConfig(models={"summarizer": "hf:x"})
    with pytest.raises(ValueError, match="unknown roles"):
        build_research_graph(tools=[kb], model=planner, models={"critic": writer})


def test_debate_roles_have_their_own_models_or_the_writers(kb, small_world):
    question = small_world.tasks[0]["question"]
    cfg = ResearchConfig(search_mode="fts", max_attempts=1, writer="debate", debate_rounds=1,
                         max_debaters=2)
    default, writer = ScriptedChatModel(), ScriptedChatModel(model_name="writer-model")
    research(question, model=default, knowledge=kb, config=cfg, models={"writer": writer})
    assert set(writer.calls) == {"debater", "aggregator"} and "debater" not in default.calls
    debater, aggregator = ScriptedChatModel(), ScriptedChatModel()
    research(question, model=default, knowledge=kb, config=cfg,
             models={"debater": debater, "aggregator": aggregator})
    assert set(debater.calls) == {"debater"} and aggregator.calls == {"aggregator": 1}


def test_cli_model_per_role(kb, small_world, loaded, tmp_path):
    default = loaded("hf:default", ScriptedChatModel())
    planner = loaded("hf:planner", ScriptedChatModel(script=two_subquestions, model_name="p"))
    writer = loaded("hf:writer", ScriptedChatModel(script=answer_with("Holm"), model_name="w"))
    code, out, err = cli("ask", small_world.tasks[0]["question"], "--kb", str(kb.path),
                         "--model", "hf:default", "--model-planner", "hf:planner",
                         "--model-writer", "hf:writer", "--record", str(tmp_path / "runs"),
                         "--json")
    assert code == 0, err
    assert json.loads(out)["answer"] == "Holm"
    assert set(planner.calls) == {"planner"} and set(writer.calls) == {"writer"}
    assert set(default.calls) == {"searcher"}
    traj = next(iter(TrajectoryStore(tmp_path / "runs")))
    assert {s.role: s.model for s in traj.model_steps} == {"planner": "p", "searcher": "scripted",
                                                          "writer": "w"}
    assert traj.config["models"] == {"planner": "hf:planner", "writer": "hf:writer"}


# --------------------------------------------------------------------------- web search specs


class FakeSearchAPI(ThreadingHTTPServer):
    """Brave's and Tavily's search endpoints on loopback, answering with links to its own
    pages; it keeps every request (method, path, query, headers, body)."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _APIHandler)
        self.seen: list[dict] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def results(self) -> list[dict]:
        return [{"title": "Orla Press", "url": f"{self.url}/page/orla",
                 "description": "Orla Press was founded in Varo.",
                 "content": "Orla Press was founded in Varo."}]


class _APIHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self, body: bytes, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self, body: bytes = b"") -> None:
        parts = urlsplit(self.path)
        self.server.seen.append({"method": self.command, "path": parts.path,
                                 "query": parse_qs(parts.query), "headers": dict(self.headers),
                                 "json": json.loads(body) if body else None})

    def do_GET(self):
        self._record()
        if self.path.startswith("/res/v1/web/search"):
            return self._answer(json.dumps({"web": {"results": self.server.results()}}).encode(),
                                "application/json")
        self._answer(b"<html><head><title>Orla Press</title></head><body><article><p>Orla Press "
                     b"is a publisher. Orla Press was founded in Varo by Ana Holm in 1901, and "
                     b"it printed maps.</p></article></body></html>", "text/html")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._record(body)
        self._answer(json.dumps({"results": self.server.results()}).encode(), "application/json")


@pytest.fixture
def search_api():
    server = FakeSearchAPI()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_web_specs_resolve_in_one_place(monkeypatch):
    monkeypatch.delenv("BRAVE_API_KEY", raising=False)
    monkeypatch.delenv("TAVILY_API_KEY", raising=False)
    bare = web_backend("http://127.0.0.1:9/")
    assert isinstance(bare, SearxngSearch) and bare.base_url == "http://127.0.0.1:9"
    assert web_backend("searxng:http://127.0.0.1:9").base_url == "http://127.0.0.1:9"
    for spec, env in (("brave:", "BRAVE_API_KEY"), ("tavily:", "TAVILY_API_KEY"),
                      ("brave", "BRAVE_API_KEY")):
        with pytest.raises(ValueError, match=f"set {env}"):
            web_backend(spec)
    for spec in ("bing:", "searxng:", "127.0.0.1:8080", "ftp://x"):
        with pytest.raises(ValueError, match="unknown web search"):
            web_backend(spec)
    monkeypatch.setenv("BRAVE_API_KEY", "b-key")
    monkeypatch.setenv("TAVILY_API_KEY", "t-key")
    brave, tavily = web_backend("brave:"), web_backend("tavily:http://127.0.0.1:9")
    assert isinstance(brave, BraveSearch) and brave.base_url == "https://api.search.brave.com"
    assert isinstance(tavily, TavilySearch) and tavily.base_url == "http://127.0.0.1:9"
    assert brave.api_key == "b-key" and tavily.api_key == "t-key"
    web = resolve_sources(web="brave:")[0]  # nothing is sent until a search
    assert web.backend is not None and web.name == "web:brave"


def test_brave_and_tavily_specs_search_with_their_keys(kb, search_api, monkeypatch):
    """A research run over each API (a fake one on loopback): the request carries the key
    from the environment, and the pages the API links are fetched and cited."""
    monkeypatch.setenv("BRAVE_API_KEY", "b-key")
    monkeypatch.setenv("TAVILY_API_KEY", "t-key")
    cfg = ResearchConfig(max_attempts=1, max_rounds=1)
    for spec in (f"brave:{search_api.url}", f"tavily:{search_api.url}"):
        r = research("Where was Orla Press founded?", model=ScriptedChatModel(), web=spec,
                     config=cfg)
        assert r.citations and r.citations[0].url == f"{search_api.url}/page/orla"
    brave, page, tavily, _ = search_api.seen
    assert brave["method"] == "GET" and brave["path"] == "/res/v1/web/search"
    assert brave["headers"]["X-Subscription-Token"] == "b-key"
    assert brave["query"]["q"] == ["Where was Orla Press founded?"]
    assert page["path"] == "/page/orla"
    assert tavily["method"] == "POST" and tavily["headers"]["Authorization"] == "Bearer t-key"
    assert tavily["json"]["query"] == "Where was Orla Press founded?"


def test_cli_web_spec_without_a_key_is_one_line(monkeypatch):
    monkeypatch.delenv("TAVILY_API_KEY", raising=False)
    code, out, err = cli("ask", "Where?", "--web", "tavily:", "--model", "hf:never-loaded")
    assert code == 1 and not out
    assert err.strip().splitlines() == [
        "error: web search tavily: needs an API key: set TAVILY_API_KEY in the environment "
        "(--web tavily:)"]


# --------------------------------------------------------------------------- resume, approve


def test_cli_thread_id_resumes_a_crashed_run(kb, small_world, loaded, tmp_path):
    crashed = []

    def crash_once(role, messages):
        if role == "writer" and not crashed:
            crashed.append(1)
            raise KeyboardInterrupt  # Ctrl-C while the writer runs
        return default_reply(role, messages)

    model = loaded("hf:scripted", ScriptedChatModel(script=crash_once))
    db = tmp_path / "ck" / "checkpoints.sqlite"
    args = ("ask", small_world.tasks[0]["question"], "--kb", str(kb.path), "--model",
            "hf:scripted", "--thread-id", "job-1", "--checkpoint-db", str(db), "--json")
    code, out, _ = cli(*args)
    assert code != 0 and not out and crashed
    assert model.calls == {"planner": 2, "searcher": 1, "writer": 1}
    code, out, err = cli(*args)  # resumes at the writer: planning and searching are not redone
    assert code == 0, err
    assert json.loads(out)["answer"] and model.calls == {"planner": 2, "searcher": 1, "writer": 2}
    code, _, err = cli(*args)
    assert code == 1 and "thread job-1 finished already" in err
    code, _, err = cli("ask", "Another question?", *args[2:])
    assert code == 1 and "finished already" in err
    with pytest.raises(ValueError, match="researches"):  # an unfinished thread keeps its question
        saver = sqlite_checkpointer(tmp_path / "py.sqlite")
        with pytest.raises(KeyboardInterrupt):
            research("Where was the founder born?", model=ScriptedChatModel(script=lambda r, m: (
                (_ for _ in ()).throw(KeyboardInterrupt) if r == "writer" else default_reply(r, m))),
                knowledge=kb, checkpointer=saver, thread_id="t")
        research("Something else?", model=ScriptedChatModel(), knowledge=kb, checkpointer=saver,
                 thread_id="t")
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0] > 0
    # the state's own types are allow-listed by name (LangGraph warns about others, and will
    # refuse them): they come back as themselves
    serde = sqlite_checkpointer(tmp_path / "s.sqlite").serde
    counters = Counters(searches=2, tokens=7)
    assert serde.loads_typed(serde.dumps_typed(counters)) == counters
    assert not isinstance(serde.loads_typed(serde.dumps_typed(Unlisted())), Unlisted)


def test_cli_approve_accepts_edits_or_stops_the_plan(kb, small_world, loaded, tmp_path):
    model = loaded("hf:scripted", ScriptedChatModel(script=two_subquestions))
    base = ("ask", "Q about founded?", "--kb", str(kb.path), "--model", "hf:scripted",
            "--approve", "--max-rounds", "1", "--json")
    code, out, err = cli(*base, "--record", str(tmp_path / "runs"),
                         input="edited founded question; another founded question\n")
    assert code == 0, err
    assert "1. sub-question 0 about founded" in err and "2. sub-question 1 about founded" in err
    traj = next(iter(TrajectoryStore(tmp_path / "runs")))
    asked = {s.input["query"] for s in traj.tool_steps}
    assert asked == {"edited founded question", "another founded question"}
    code, out, err = cli(*base, input="\n")  # Enter keeps the plan
    assert code == 0 and json.loads(out)["stats"]["searches"] >= 2  # both sub-questions
    searches = model.calls["searcher"]
    code, out, err = cli(*base, input="n\n")
    assert code == 0 and json.loads(out)["stop_reason"] == "plan_rejected"
    assert model.calls["searcher"] == searches  # nothing was searched


def test_a_pending_approval_survives_in_the_checkpoint(kb, loaded, tmp_path):
    """Stopped at the plan (Ctrl-C at the prompt), a run with a thread id asks again when it
    is resumed, from the command line."""
    loaded("hf:scripted", ScriptedChatModel(script=two_subquestions))
    db = tmp_path / "ck.sqlite"

    def ctrl_c(payload):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        research("Q about founded?", model="hf:scripted", knowledge=kb, approve=ctrl_c,
                 config=ResearchConfig(approve_plan=True, max_rounds=1),
                 checkpointer=sqlite_checkpointer(db), thread_id="ask-1")
    code, out, err = cli("ask", "Q about founded?", "--kb", str(kb.path), "--model",
                         "hf:scripted", "--approve", "--max-rounds", "1", "--json",
                         "--thread-id", "ask-1", "--checkpoint-db", str(db), input="\n")
    assert code == 0, err
    assert err.count("for approval") == 1 and json.loads(out)["stats"]["searches"] >= 2


# --------------------------------------------------------------------------- cache, judging


def test_cli_cache_records_then_replays_with_the_server_stopped(small_world, loaded, tmp_path):
    loaded("hf:scripted", ScriptedChatModel())
    kb = KnowledgeBase(tmp_path / "kb", embedder=HashEmbedder())
    kb.ingest(small_world.docs, progress=False)
    question = small_world.tasks[1]["question"]
    with CorpusServer(small_world.docs) as server:
        args = ("ask", question, "--kb", str(kb.path), "--web", server.url, "--model",
                "hf:scripted", "--cache", str(tmp_path / "cache"), "--json")
        code, recorded, err = cli(*args, "--record", str(tmp_path / "rec"))
        assert code == 0, err
        assert any(r.startswith("/doc/") for r in server.requests)
    assert len(ToolCache(tmp_path / "cache" / "tools.sqlite")) >= 3  # kb, search, fetches
    # the server is gone and the knowledge base's embedder is never asked: replay sends nothing
    code, replayed, err = cli(*args, "--cache-mode", "replay", "--record", str(tmp_path / "rep"))
    assert code == 0, err
    first, second = json.loads(recorded), json.loads(replayed)
    assert second["answer"] == first["answer"] and second["citations"] == first["citations"]
    rec, rep = (next(iter(TrajectoryStore(tmp_path / d))) for d in ("rec", "rep"))
    assert [s.output for s in rep.tool_steps] == [s.output for s in rec.tool_steps]
    assert not any(s.error for s in rep.tool_steps)
    assert {s.tool for s in rep.tool_steps} == {"knowledge_base", "web_search"}
    code, _, err = cli("ask", question, "--kb", str(kb.path), "--model", "hf:scripted",
                       "--cache", str(tmp_path / "none"), "--cache-mode", "replay")
    assert code == 1 and "record it first" in err
    code, _, err = cli("ask", question, "--kb", str(kb.path), "--cache-mode", "replay")
    assert code == 1 and "--cache-mode needs --cache DIR" in err


def test_cached_knowledge_base_keeps_its_tool_name_and_mode(kb, tmp_path):
    cache = ToolCache(tmp_path / "c.sqlite")
    cached = resolve_sources(knowledge=kb, cache=cache)[0]
    assert isinstance(cached, CachedRetriever) and cached.retriever is kb
    graph = build_research_graph(tools=[cached], model=ScriptedChatModel(),
                                 config=ResearchConfig(search_mode="fts", max_rounds=1))
    out = graph.invoke({"question": "Where was the founder born?"})
    assert out["retrieved"] and len(cache) == 1
    request = json.loads(cache._db.execute("SELECT request FROM calls").fetchone()[0])
    assert request["mode"] == "fts" and request["retriever"] == f"kb:{kb.path}"


def test_cli_judge_passages_flag_overrides_the_policy_card(kb, small_world, loaded):
    class Judging(ScriptedChatModel):
        judges_passages: bool = True

    plain = loaded("hf:plain", ScriptedChatModel())
    trained = loaded("hf:trained", Judging())
    base = ("ask", small_world.tasks[0]["question"], "--kb", str(kb.path), "--json")
    assert cli(*base, "--model", "hf:plain", "--judge-passages")[0] == 0
    assert plain.calls.get("selector", 0) >= 1
    assert cli(*base, "--model", "hf:trained", "--no-judge-passages")[0] == 0
    assert "selector" not in trained.calls
    assert cli(*base, "--model", "hf:trained")[0] == 0  # no flag: the card decides
    assert trained.calls.get("selector", 0) >= 1


# --------------------------------------------------------------------------- LanceDB URIs


def test_a_lancedb_uri_stays_a_uri(small_world, tmp_path):
    uri = f"file://{tmp_path}/remote-kb"
    kb = KnowledgeBase(uri, embedder=HashEmbedder())
    assert kb.path == uri  # Path() would have folded it into "file:/..."
    kb.ingest(small_world.docs[:6], progress=False)
    assert (tmp_path / "remote-kb").is_dir() and not Path("file:").exists()
    again = resolve_sources(knowledge=uri)[0]
    assert isinstance(again, KnowledgeBase) and len(again) == len(kb)
    title = small_world.docs[2]["title"]
    assert KnowledgeBase(uri).search(title, k=1, mode="fts")[0].title == title


def test_cli_ingest_and_search_a_lancedb_uri(small_world, tmp_path):
    corpus, _ = small_world.write(tmp_path / "w")
    uri = f"file://{tmp_path}/uri-kb"
    code, out, err = cli("ingest", str(corpus), "--kb", uri, "--json")
    assert code == 0, err
    assert json.loads(out)["kb"] == uri and (tmp_path / "uri-kb").is_dir()
    doc = small_world.docs[4]
    code, out, err = cli("search", doc["title"], "--kb", uri, "-k", "1", "--mode", "fts", "--json")
    assert code == 0, err
    assert json.loads(out)["passages"][0]["doc_id"] == doc["doc_id"]


def test_eval_takes_a_lancedb_uri_for_its_knowledge_base(small_world, tmp_path, loaded):
    """`sleuth eval --kb URI` builds and searches the knowledge base at that URI."""
    loaded("hf:scripted-eval", ScriptedChatModel())
    _, tasks = small_world.write(tmp_path / "w")
    uri = f"file://{tmp_path}/eval-kb"
    code, out, err = cli("eval", str(tasks), "--kb", uri, "--limit", "2", "--model",
                         "hf:scripted-eval", "--out", str(tmp_path / "r.json"))
    assert code == 0, err
    assert (tmp_path / "eval-kb").is_dir() and (tmp_path / "r.json").exists()


def test_cli_eval_takes_a_model_per_role_and_retrieval_reads_the_given_kb(kb, small_world,
                                                                          loaded, tmp_path):
    loaded("hf:default", ScriptedChatModel())
    writer = loaded("hf:writer", ScriptedChatModel(script=answer_with("Holm"), model_name="w"))
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(t) + "\n" for t in small_world.tasks[:2]))
    code, _, err = cli("eval", str(tasks), "--kb", str(kb.path), "--model", "hf:default",
                       "--model-writer", "hf:writer", "--record", str(tmp_path / "runs"),
                       "--out", str(tmp_path / "eval.json"))
    assert code == 0, err
    assert writer.calls == {"writer": 2}
    trajs = list(TrajectoryStore(tmp_path / "runs"))
    assert all(t.config["models"] == {"writer": "hf:writer"} for t in trajs) and len(trajs) == 2
    # retrieval-only baselines search the knowledge base given, not one built from the docs
    empty = tmp_path / "other-kb"
    from tools.knowledge import KnowledgeBase

    KnowledgeBase(empty).ingest([{"doc_id": "x:1", "title": "Nothing", "text": "Unrelated text."}],
                                progress=False)
    code, _, err = cli("eval", str(tasks), "--kb", str(empty), "--mode", "retrieval",
                       "--out", str(tmp_path / "retrieval.json"))
    assert code == 0, err
    result = json.loads((tmp_path / "retrieval.json").read_text())
    assert all(r["answer"] == "Nothing" for r in result["runs"]["retrieval-title"]["per_task"])
