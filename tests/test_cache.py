"""Record/replay cache over real HTTP: a replayed run needs no network and sees the same web."""

from __future__ import annotations

import asyncio

import pytest

from tools.cache import CachedFetch, CachedSearch, ToolCache
from tools.corpus_server import CorpusServer, Fault
from tools.errors import ReplayMiss, ToolError
from tools.web import SearxngSearch


def test_record_then_replay_without_server(small_world, tmp_path):
    path = tmp_path / "tools.sqlite"
    title = small_world.docs[5]["title"]
    with CorpusServer(small_world.docs, faults=[Fault(r"^/gone", status=404)]) as s:
        cache = ToolCache(path, mode="record")
        search = CachedSearch(SearxngSearch(s.url), cache, namespace="corpus")
        fetch = CachedFetch(cache)
        hits = search.search(title, k=3)
        page = fetch(hits[0].url, allow_hosts=[s.origin])
        with pytest.raises(ToolError):
            fetch(s.url + "/gone", allow_hosts=[s.origin], retries=0)
        n_requests = len(s.requests)
        assert search.search(title, k=3) == hits  # a second identical call is not re-sent
        assert len(s.requests) == n_requests
        cache.close()
    # the server is gone: replay answers everything it recorded, errors included
    replay = ToolCache(path, mode="replay")
    search = CachedSearch(SearxngSearch("http://127.0.0.1:9"), replay, namespace="corpus")
    assert search.search(title, k=3) == hits
    assert asyncio.run(search.asearch(title, k=3)) == hits
    assert CachedFetch(replay)(hits[0].url) == page
    with pytest.raises(ToolError) as e:
        CachedFetch(replay)(f"{hits[0].url.rsplit('/doc/', 1)[0]}/gone")
    assert e.value.kind == "http_status"
    with pytest.raises(ReplayMiss, match="record it first"):
        search.search("a query never recorded", k=3)
    with pytest.raises(ReplayMiss):
        search.search(title, k=4)  # k is part of the key


def test_off_mode_passes_through_and_stores_nothing(corpus_server, tmp_path):
    cache = ToolCache(tmp_path / "c.sqlite", mode="off")
    hits = CachedSearch(SearxngSearch(corpus_server.url), cache).search("founded", k=2)
    assert hits and len(cache) == 0


def test_async_record(corpus_server, tmp_path):
    cache = ToolCache(tmp_path / "c.sqlite", mode="record")
    search = CachedSearch(SearxngSearch(corpus_server.url), cache)
    hits = asyncio.run(search.asearch("born", k=2))
    assert len(cache) == 1 and search.search("born", k=2) == hits


def test_bad_modes_and_missing_replay_file(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        ToolCache(tmp_path / "c.sqlite", mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="record it first"):
        ToolCache(tmp_path / "missing.sqlite", mode="replay")
