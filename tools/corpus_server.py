"""The offline web: a corpus served as HTML pages plus a SearXNG-compatible search endpoint.

`CorpusServer(corpus)` serves each document at `/doc/<id>` as an encyclopedia-style HTML
page (with navigation and footer boilerplate, as real pages have) and answers
`GET /search?q=...&format=json[&pageno=N]` in SearXNG's JSON shape, ranked by BM25
(rank-bm25) or by a `KnowledgeBase`. Agents reach it through the same code path as the
real web: `SearxngSearch(server.url)` and `fetch_page(..., allow_hosts=[server.origin])`.

Faults can be injected per request path for tests: status codes (optionally only the first
N times), delays, huge or non-HTML bodies, bodies trickled a byte at a time, extra headers
(e.g. `Content-Encoding`), redirects (loops included).
"""

from __future__ import annotations

import html
import json
import re
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from rank_bm25 import BM25Okapi

from tools.documents import Document, as_documents, load_documents
from tools.text import tokenize

PAGE_SIZE = 10
@dataclass
class Fault:
    """An injected failure for requests whose path (with query) matches `pattern` (a regex)."""

    pattern: str
    status: int | None = None
    delay: float = 0.0
    body: bytes | None = None
    content_type: str | None = None
    huge_bytes: int | None = None
    redirect_to: str | None = None
    times: int | None = None
    trickle: float = 0.0  # seconds between the body's bytes (0: sent at once)
    headers: dict[str, str] = field(default_factory=dict)
    hits: int = field(default=0, init=False)

    def matches(self, path: str) -> bool:
        """Whether this fault applies to a request path now (counting down `times`)."""
        if not re.search(self.pattern, path):
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True


def render_page(doc: Document) -> str:
    """An encyclopedia-style HTML page for one document."""
    title = html.escape(doc.title or doc.doc_id)
    paras = "\n".join(f"<p>{html.escape(p.strip())}</p>"
                      for p in re.split(r"\n\s*\n|\n", doc.text) if p.strip())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} - Sleuthpedia</title>
<meta name="description" content="{title}"></head>
<body><nav><a href="/">Main page</a> | <a href="/random">Random article</a> | About</nav>
<main><article><h1>{title}</h1>
{paras}
</article></main>
<footer><p>Text is available under a free licence. Sleuthpedia, the offline encyclopedia.</p>
</footer></body></html>"""


class _Ranker:
    def __init__(self, docs: list[Document], knowledge: Any = None):
        self.docs = docs
        self.by_id = {d.doc_id: i for i, d in enumerate(docs)}
        self.knowledge = knowledge
        self.bm25 = None if knowledge is not None or not docs else BM25Okapi(
            [tokenize(f"{d.title} {d.title} {d.text}") for d in docs])

    def rank(self, query: str, n: int) -> list[tuple[Document, float]]:
        if self.knowledge is not None:
            out, seen = [], set()
            for p in self.knowledge.search(query, k=max(n * 3, 10)):
                if p.doc_id in self.by_id and p.doc_id not in seen:
                    seen.add(p.doc_id)
                    out.append((self.docs[self.by_id[p.doc_id]], p.score))
            return out[:n]
        tokens = tokenize(query)
        if self.bm25 is None or not tokens:
            return []
        scores = self.bm25.get_scores(tokens)
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:n]
        return [(self.docs[i], float(scores[i])) for i in order if scores[i] > 0]


def _snippet(text: str, n: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n].rsplit(" ", 1)[0] + " ..."


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], corpus: CorpusServer):
        super().__init__(address, _Handler)
        self.corpus = corpus

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that hung up (timeout, byte cap) is normal here; anything else is reported
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


_HTML = "text/html; charset=utf-8"


class _Handler(BaseHTTPRequestHandler):
    """One connection to a `CorpusServer`: faults first, then routing by path."""

    protocol_version = "HTTP/1.1"
    server: _QuietServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._route("")

    def do_GET(self) -> None:
        self._route("")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._route(self.rfile.read(length).decode("utf-8", "replace") if length else "")

    def _route(self, form: str) -> None:
        corpus = self.server.corpus
        fault = corpus._fault(self.path)
        if fault is not None and self._apply(fault):
            return
        parts = urlsplit(self.path)
        if parts.path == "/search":
            self._search(parse_qs(parts.query) | parse_qs(form))
        elif parts.path.startswith("/doc/"):
            self._doc(unquote(parts.path[len("/doc/"):]))
        elif parts.path == "/":
            links = "".join(f'<li><a href="/doc/{quote(d.doc_id, safe="")}">'
                            f"{html.escape(d.title)}</a></li>" for d in corpus.docs[:1000])
            self._send(200, f"<html><body><h1>Corpus</h1><ul>{links}</ul></body></html>".encode(),
                       _HTML)
        else:
            self._send(404, b"not found", "text/plain")

    def _search(self, params: dict[str, list[str]]) -> None:
        if (params.get("format") or ["html"])[0] != "json":
            self._send(403, b"only format=json is served", "text/plain")
            return
        try:
            pageno = max(1, int((params.get("pageno") or ["1"])[0]))
        except ValueError:
            pageno = 1
        query = (params.get("q") or [""])[0]
        body = json.dumps(self.server.corpus.search_json(query, pageno)).encode()
        self._send(200, body, "application/json")

    def _doc(self, doc_id: str) -> None:
        corpus = self.server.corpus
        i = corpus.ranker.by_id.get(doc_id)
        if i is None:
            self._send(404, b"<html><body>Not found</body></html>", _HTML)
        else:
            self._send(200, render_page(corpus.docs[i]).encode(), _HTML)

    def _send(self, status: int, body: bytes, ctype: str,
              headers: dict[str, str] | None = None, trickle: float = 0.0) -> None:
        self.send_response(status)
        if ctype:  # "" sends no Content-Type at all
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        if not trickle:
            self.wfile.write(body)
            return
        try:
            for i in range(len(body)):
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                time.sleep(trickle)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def _apply(self, fault: Fault) -> bool:
        """Serve an injected fault; False for a pure delay (then serve normally)."""
        if fault.delay:
            time.sleep(fault.delay)
        if fault.redirect_to is not None:
            self._send(fault.status or 302, b"", "text/plain", {"Location": fault.redirect_to})
            return True
        if fault.huge_bytes is not None:
            self._send_huge(fault.huge_bytes)
            return True
        if fault.body is not None or fault.status is not None:
            ctype = fault.content_type
            self._send(fault.status or 200, fault.body or b"", _HTML if ctype is None else ctype,
                       fault.headers, trickle=fault.trickle)
            return True
        return False

    def _send_huge(self, n: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", _HTML)
        self.send_header("Content-Length", str(n))
        self.end_headers()
        filler = b"<p>" + b"lorem ipsum dolor sit amet " * 200 + b"</p>\n"
        head = b"<html><head><title>Huge</title></head><body><article>"
        sent = 0
        try:
            for piece in (head,) + (filler,) * (n // len(filler) + 1):
                piece = piece[: n - sent]
                if not piece:
                    break
                self.wfile.write(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading at its cap, as it should


class CorpusServer:
    """Serve documents on 127.0.0.1; use as a context manager (port 0 picks a free port)."""

    def __init__(self, corpus: str | Path | Iterable[Document | dict[str, Any]], *,
                 host: str = "127.0.0.1", port: int = 0, knowledge: Any = None,
                 faults: Iterable[Fault] = ()):
        if isinstance(corpus, str | Path):
            docs = list(load_documents([corpus]))
        else:
            docs = list({d.doc_id: d for d in as_documents(corpus)}.values())
        self.docs = docs
        self.ranker = _Ranker(docs, knowledge)
        self.faults = list(faults)
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._httpd = _QuietServer((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:41234."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def origin(self) -> str:
        """`host:port`, the entry that allow-lists this server (and only it) for `fetch_page`."""
        host, port = self._httpd.server_address[:2]
        return f"{host}:{port}"

    def doc_url(self, doc_id: str) -> str:
        """URL of a document's page."""
        return f"{self.url}/doc/{quote(doc_id, safe='')}"

    def start(self) -> CorpusServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="corpus-server")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        try:
            self._httpd.serve_forever()
        finally:
            self._httpd.server_close()

    def __enter__(self) -> CorpusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ responses

    def _fault(self, path: str) -> Fault | None:
        with self._lock:
            self.requests.append(path)
            return next((f for f in self.faults if f.matches(path)), None)

    def search_json(self, query: str, pageno: int = 1) -> dict[str, Any]:
        """The SearXNG-shaped JSON answer for a query."""
        ranked = self.ranker.rank(query, PAGE_SIZE * pageno)[PAGE_SIZE * (pageno - 1):]
        results = [{"url": self.doc_url(d.doc_id), "title": d.title, "content": _snippet(d.text),
                    "engine": "sleuth-corpus", "engines": ["sleuth-corpus"], "score": score,
                    "category": "general", "doc_id": d.doc_id} for d, score in ranked]
        return {"query": query, "number_of_results": len(results), "results": results,
                "answers": [], "corrections": [], "infoboxes": [], "suggestions": [],
                "unresponsive_engines": []}
