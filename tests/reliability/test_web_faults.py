"""A faulty web on loopback: every fetch, search and research run ends within its deadline.

One `CorpusServer` serves the faults (5xx, a hang, a trickled body, a huge body, a gzip bomb,
a PDF, binary, a redirect loop, redirects to private addresses and to another loopback port)
and a SearXNG-shaped `/search` whose answers link to them; a second server on another port
plays the internal admin page that nothing may reach. Deadlines are small (1 s) so the whole
module stays fast; the chat model is scripted.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from scripted import ScriptedChatModel

from graph import ResearchConfig, research
from tools.corpus_server import CorpusServer, Fault
from tools.errors import ToolError
from tools.extract import extract_html
from tools.retrievers import WebRetriever
from tools.web import SearxngSearch, fetch_page

TOTAL = 1.0  # the overall deadline of every fetch and search here
READ = 0.5  # the per-read timeout
# a fetch or search may end one clipped read timeout past its deadline; the rest is slack for
# a loaded two-core machine
BOUND = TOTAL + READ + 2.0
SEARCH_BYTES = 100_000
FETCH = {"timeout": READ, "total_timeout": TOTAL, "retries": 1, "backoff": 0.05,
         "max_bytes": 300_000}
PAGE = ("<html><head><title>{t}</title></head><body><article><p>{t} was founded in 1901 by "
        "the explorer Ada Quill, who was born in Northport and later moved to Southport.</p>"
        "</article></body></html>")

# path -> (fault, the ToolError kind a fetch ends with, or None for a page)
PAGE_FAULTS = {
    "/doc/e500": (dict(status=500), "http_status"),
    "/doc/hang": (dict(delay=30.0), "timeout"),
    "/doc/trickle": (dict(body=PAGE.format(t="Trickle").encode(), trickle=0.2), "timeout"),
    "/doc/huge": (dict(huge_bytes=20_000_000_000), None),
    "/doc/bomb": (dict(body=gzip.compress(b"<p>x</p>" * 2_000_000),
                       headers={"Content-Encoding": "gzip"}), None),
    "/doc/pdf": (dict(body=b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", content_type="application/pdf"),
                 "corrupt"),  # PDFs are read (tools/extract.py); this one is a header only
    "/doc/bin": (dict(body=b"\x00\xff\xfe\x00" * 64, content_type=""), "content_type"),
    "/doc/loop-a": (dict(redirect_to="/doc/loop-b"), "redirects"),
    "/doc/loop-b": (dict(redirect_to="/doc/loop-a"), "redirects"),
    "/doc/to-private": (dict(redirect_to="http://10.0.0.1/admin"), "refused"),
    "/doc/to-metadata": (dict(redirect_to="http://169.254.169.254/latest/meta-data/"), "refused"),
    "/doc/to-admin": (dict(redirect_to="{admin}/internal-admin"), "refused"),
    "/doc/good": (dict(body=PAGE.format(t="Good Page").encode()), None),
}
# query word -> the search endpoint's fault and the ToolError kind a search ends with
SEARCH_FAULTS = {
    "trickled": (dict(trickle=0.2), "timeout"),
    "hanging": (dict(delay=30.0), "timeout"),
    "failing": (dict(status=503), "http_status"),
    "oversized": (dict(pad=400_000), "too_large"),
}
# query word -> the pages the search answers with (three are fetched per search)
RESULT_SETS = {
    "alpha": ["/doc/e500", "/doc/hang", "/doc/good"],
    "bravo": ["/doc/trickle", "/doc/pdf", "/doc/good"],
    "charlie": ["/doc/huge", "/doc/bomb", "/doc/bin"],
    "delta": ["/doc/loop-a", "/doc/to-private", "/doc/to-admin"],
    "echo": ["{admin}/internal-admin", "/doc/to-metadata", "/doc/good"],
}


def _results(base: str, admin: str, paths: list[str], pad: int = 0) -> bytes:
    rows = [{"url": (p.format(admin=admin) if p.startswith("{") else base + p),
             "title": f"Result {i}", "content": f"Snippet {i}: founded in 1901 by Ada Quill.",
             "doc_id": f"r{i}"} for i, p in enumerate(paths)]
    return json.dumps({"query": "q", "results": rows, "padding": "x" * pad}).encode()


@pytest.fixture(scope="module")
def web():
    """(faulty server, admin server): the faulty web and the internal page behind it."""
    with CorpusServer([]) as admin, CorpusServer([]) as s:
        faults = []
        for path, (kw, _) in PAGE_FAULTS.items():
            kw = dict(kw)
            if "redirect_to" in kw:
                kw["redirect_to"] = kw["redirect_to"].format(admin=admin.url)
            faults.append(Fault(rf"^{path}$", **kw))
        for word, (kw, _) in SEARCH_FAULTS.items():
            kw = dict(kw)
            body = _results(s.url, admin.url, ["/doc/good"], pad=kw.pop("pad", 0))
            if "status" not in kw:
                kw.update(body=body, content_type="application/json")
            faults.append(Fault(rf"^/search\?q=[^&]*\b{word}\b", **kw))
        for word, paths in RESULT_SETS.items():
            faults.append(Fault(rf"^/search\?q=[^&]*\b{word}\b", body=_results(s.url, admin.url, paths),
                                content_type="application/json"))
        s.faults.extend(faults)
        yield s, admin
        assert admin.requests == []  # nothing ever reached the internal page


def _ends_in_time(call):
    t0 = time.perf_counter()
    try:
        out = call()
    except ToolError as e:
        out = e
    elapsed = time.perf_counter() - t0
    assert elapsed < BOUND, f"took {elapsed:.1f} s"
    return out


def _run_all(calls: dict, waiting: set) -> dict:
    """Run the calls, each bounded on its own: those that only wait on a slow server in
    background threads, the rest one after another meanwhile. (CPU-bound ones run alone: the
    server shares this process's GIL, and its answers must not miss the 0.5 s read timeout.)"""
    with ThreadPoolExecutor(max(1, len(waiting))) as pool:
        futures = {key: pool.submit(_ends_in_time, calls[key]) for key in calls if key in waiting}
        outs = {key: _ends_in_time(call) for key, call in calls.items() if key not in waiting}
        return outs | {key: f.result() for key, f in futures.items()}


@pytest.mark.timeout(60)
def test_every_page_fault_ends_in_a_page_or_a_clear_error(web):
    s, admin = web
    outs = _run_all({path: lambda path=path: fetch_page(s.url + path, allow_hosts=[s.origin],
                                                        **FETCH)
                     for path in PAGE_FAULTS}, waiting={"/doc/hang", "/doc/trickle"})
    for path, (_, kind) in PAGE_FAULTS.items():
        out = outs[path]
        if kind is None:
            assert not isinstance(out, ToolError), (path, out)
            assert out.text.strip()
        else:
            assert isinstance(out, ToolError) and out.kind == kind, (path, out)
            assert out.message
    huge, bomb = outs["/doc/huge"], outs["/doc/bomb"]
    assert huge.truncated and huge.n_bytes == FETCH["max_bytes"]
    assert bomb.truncated and bomb.metadata.get("extractor") == "fallback"  # 37k elements


@pytest.mark.timeout(60)
def test_every_search_fault_ends_in_a_clear_error_sync_and_async(web):
    s, _ = web
    backend = SearxngSearch(s.url, timeout=READ, total_timeout=TOTAL, max_bytes=SEARCH_BYTES)
    calls = {}
    for word in SEARCH_FAULTS:
        calls[word, "sync"] = lambda word=word: backend.search(f"{word} query")
        calls[word, "async"] = lambda word=word: asyncio.run(backend.asearch(f"{word} query"))
    outs = _run_all(calls, waiting={k for k in calls if k[0] in ("trickled", "hanging")})
    for (word, mode), out in outs.items():
        kind = SEARCH_FAULTS[word][1]
        assert isinstance(out, ToolError) and out.kind == kind, (word, mode, out)
    assert [h.title for h in backend.search("alpha query")] == ["Result 0", "Result 1", "Result 2"]


def test_search_trickle_is_bounded_by_the_deadline_not_the_read_timeout(web):
    # the case: a byte every 0.2 s never trips a 10 s read timeout; the deadline ends it
    s, _ = web
    t0 = time.perf_counter()
    with pytest.raises(ToolError) as e:
        SearxngSearch(s.url, timeout=10.0, total_timeout=TOTAL).search("trickled query")
    assert e.value.kind == "timeout" and time.perf_counter() - t0 < TOTAL + 2.0


def test_dense_page_extraction_is_bounded():
    # 2 MB of 57k tiny paragraphs: trafilatura alone takes 5-25 s here
    raw = (b"<html><head><title>Dense</title></head><body>"
           + b"".join(b"<p>w%d x</p>" % i for i in range(57_000)) * 3 + b"</body></html>")
    assert len(raw) > 2_000_000
    t0 = time.perf_counter()
    out = extract_html(raw)
    assert time.perf_counter() - t0 < 5.0
    assert out.title == "Dense" and "w56999 x" in out.text
    assert out.metadata["extractor"] == "fallback" and "elements" in out.metadata["fallback_reason"]


def _question(i: int) -> str:
    words = list(SEARCH_FAULTS) + list(RESULT_SETS)
    return f"Who founded the {words[i % len(words)]} society in run {i}?"


@pytest.mark.timeout(120)
def test_twenty_research_runs_over_the_faulty_web_end_in_time(web):
    s, admin = web
    retriever = WebRetriever(SearxngSearch(s.url, timeout=READ, total_timeout=TOTAL,
                                           max_bytes=SEARCH_BYTES), fetch_options=FETCH)
    config = ResearchConfig(max_rounds=1, max_attempts=1, web_pages=3)

    def run(i: int):
        t0 = time.perf_counter()
        result = research(_question(i), model=ScriptedChatModel(), web=retriever, config=config)
        return result, time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(10) as pool:
        runs = list(pool.map(run, range(20)))
    wall = time.perf_counter() - t0
    # each run searches once and fetches at most three pages: 4 deadlines, plus the model
    per_run_bound = 4 * BOUND + 5.0
    assert all(elapsed < per_run_bound for _, elapsed in runs), [round(e, 1) for _, e in runs]
    for i, (r, _) in enumerate(runs):
        word = _question(i).split()[3]
        assert r.answer, (i, r)
        steps = r.trajectory.tool_steps
        if word in SEARCH_FAULTS:  # the failed search is an observation and a failed tool call
            assert any(s.tool == "web_search" and s.error for s in steps), i
            assert any(o.startswith("searcher: web_search: ") for o in r.observations), i
        elif word != "charlie":  # pages that could not be fetched: failed fetch_page calls
            failed = [s for s in steps if s.tool == "fetch_page"]
            assert failed and all(s.error for s in failed), (i, steps)
            assert any("fetch_page" in o for o in r.observations), (i, r.observations)
            assert any(q.error and "fetch_page" in q.error for q in r.queries), i
    print(f"20/20 research runs ended; slowest {max(e for _, e in runs):.1f} s, "
          f"all in {wall:.1f} s")
