"""The reporter: `write_report` and `sleuth ask --report` on a real research run (a scripted
model, a real LanceDB knowledge base)."""

from __future__ import annotations

import re

import pytest

from agents.reporter import SUMMARY, Reporter
from graph import TrajectoryStore, research, write_report
from tests.scripted import ScriptedChatModel, default_reply
from tools.embeddings import HashEmbedder
from tools.knowledge import KnowledgeBase

REPORTER_SYSTEM = "You write report sections"
CITED = "Fact one [1]. Fact two [2], and an unsupported claim [9]."


def script(role: str, messages) -> str:
    """The default research replies; the reporter cites two shown passages and one that is not."""
    if str(messages[0].content).startswith(REPORTER_SYSTEM):
        return CITED
    return default_reply(role, messages)


@pytest.fixture
def run(small_world, tmp_path):
    """A finished research run over a real knowledge base of the small world."""
    kb = KnowledgeBase(tmp_path / "kb", embedder=HashEmbedder())
    kb.ingest(small_world.docs, progress=False)
    model = ScriptedChatModel(script=script)
    task = small_world.tasks[0]
    return research(task["question"], model=model, knowledge=kb, task_id=task["id"]), model


def test_report_sections_citations_and_sources(run):
    result, model = run
    report = write_report(result, model)
    md = report.markdown
    sub_questions = list(dict.fromkeys(q.sub_question for q in result.queries))
    assert sub_questions and [s.heading for s in report.sections] == [
        SUMMARY, *(f"{i}. {q}" for i, q in enumerate(sub_questions, 1))]
    assert md.startswith(f"# {result.question}\n") and f"**Answer:** {result.answer}" in md
    for s in report.sections:
        assert f"## {s.heading}\n" in md and s.text in md
    # every section had evidence: [1] and [2] kept, [9] dropped and counted once per section
    assert report.dropped_citations == len(report.sections) == report.counters.dropped_citations
    assert "[9]" not in md and "unsupported claim." in md
    body, sources = md.split("## Sources\n")
    numbers = {int(n) for n in re.findall(r"\[(\d+)\]", body)}
    assert numbers == set(range(1, len(report.sources) + 1)) and len(report.sources) >= 2
    retrieved = {p.chunk_id: p for p in result.passages}
    for c in report.sources:  # each source is a passage of this run, listed with title and id
        assert c.chunk_id in retrieved and retrieved[c.chunk_id].title == c.title
        assert f"{c.n}. {c.title} — " in sources and c.doc_id in sources
    assert f"_{report.dropped_citations} citation(s)" in md
    # the reporter's calls are recorded in a copy of the run's trajectory, one per section
    steps = [s for s in report.trajectory.model_steps if s.role == "reporter"]
    assert len(steps) == len(report.sections) and steps[0].text == CITED
    assert steps[0].parse_ok and steps[0].parsed["cited"] == [1, 2, 9]
    assert report.trajectory.id == result.trajectory.id
    assert len(result.trajectory.model_steps) + len(steps) == len(report.trajectory.model_steps)
    assert report.trajectory.metrics["report_dropped_citations"] == report.dropped_citations


def test_report_from_a_graph_state_and_a_section_without_evidence(run):
    """A research graph's output mapping works too; a sub-question that retrieved nothing gets
    a section without a model call."""
    result, model = run
    state = {"question": result.question, "answer": result.answer, "evidence": result.evidence,
             "retrieved": result.passages,
             "queries_made": [*result.queries,
                              {"sub_question": "Nothing found here?", "query": "x"}]}
    before = model.calls.get("other", 0)
    report = write_report(state, model)
    assert report.sections[-1].heading.endswith("Nothing found here?")
    assert report.sections[-1].text.startswith("No passage was retrieved")
    assert model.calls["other"] - before == len(report.sections) - 1
    assert report.trajectory is None


def test_reporter_reply_without_citations_or_text(small_world):
    """An empty reply is a format failure, not a crash; a reply cut by the token budget ends at
    its last whole sentence; a failed call is a note."""
    from agents.schemas import ReporterInput
    from tools.types import Passage

    p = Passage(chunk_id="c1", doc_id="d1", title="T", text="Some text.")
    inp = ReporterInput(question="q?", topic="q?", evidence=[p])
    upd = Reporter(ScriptedChatModel(script=lambda r, m: "<answer></answer>\n## "))(inp)
    assert upd.text == "" and upd.counters.format_failures == 1 and upd.notes

    cut = Reporter(ScriptedChatModel(script=lambda r, m: "Lenn directed it [1]. She was born in 19"),
                   max_new_tokens=9)(inp)  # the reply used the whole token budget
    assert cut.text == "Lenn directed it [1]." and [c.chunk_id for c in cut.citations] == ["c1"]
    whole = Reporter(ScriptedChatModel(script=lambda r, m: "Lenn directed it [1]. Then 1961"))(inp)
    assert whole.text == "Lenn directed it [1]. Then 1961"  # ended by the model: kept whole

    def broken(role, messages):
        raise RuntimeError("server down")
    upd = Reporter(ScriptedChatModel(script=broken))(inp)
    assert upd.counters.model_errors == 1 and "server down" in upd.notes[0]


def test_ask_report_writes_the_markdown_file(sleuth_in_process, world_kb, small_world, tmp_path,
                                             monkeypatch):
    """`sleuth ask --report --out FILE.md` with a model spec resolved to the scripted model;
    with --record the stored trajectory holds the reporter's calls."""
    import agents.models

    # the loaded-model cache answers the spec: research and the reporter both resolve it there
    monkeypatch.setitem(agents.models._LOADED, "hf:scripted-reporter:[]",
                        ScriptedChatModel(script=script))
    out = tmp_path / "report.md"
    proc = sleuth_in_process("ask", small_world.tasks[1]["question"], "--kb", str(world_kb.path),
                             "--model", "hf:scripted-reporter", "--max-rounds", "1",
                             "--record", str(tmp_path / "runs"), "--report", "--out", str(out))
    md = out.read_text()
    assert "## Summary" in md and "## 1. " in md and "## Sources\n\n1. " in md and "[9]" not in md
    assert f"wrote the report to {out}" in proc.stderr and "dropped" in proc.stderr
    assert "Answer:" in proc.stdout
    (traj,) = list(TrajectoryStore(tmp_path / "runs"))
    assert traj.id in proc.stdout and any(s.role == "reporter" for s in traj.model_steps)
    proc = sleuth_in_process("ask", "q?", "--kb", str(world_kb.path), "--report", check=False)
    assert proc.returncode == 1 and "--out" in proc.stderr
