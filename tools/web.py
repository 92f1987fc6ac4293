"""The web as a tool: search backends and page fetching over httpx.

`SearchBackend` is the protocol every search engine implements (`search`, `asearch`);
`SearxngSearch`, `BraveSearch` and `TavilySearch` are its httpx implementations (the local
corpus server speaks SearXNG's JSON, so it is searched through `SearxngSearch`).

`fetch_page(url)` downloads a page behind an SSRF guard (http/https only; hosts that
resolve to private, loopback, link-local, multicast or reserved addresses are refused on
every redirect hop unless allow-listed), caps the bytes read, retries 5xx and timeouts with
backoff, and extracts the main text with trafilatura. Every failure is a `ToolError`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from tools.errors import ToolError, URLRefused
from tools.extract import extract_html
from tools.types import Page, SearchHit

USER_AGENT = "sleuth/0.1 (research agent; +https://github.com/sleuth-ai/sleuth)"
DEFAULT_MAX_BYTES = 2_000_000
HTML_TYPES = {"text/html", "application/xhtml+xml"}
ALLOW_HOSTS_ENV = "SLEUTH_ALLOW_HOSTS"


# --------------------------------------------------------------------------- search backends


def _check_query(query: str, k: int) -> str:
    if not isinstance(query, str) or not query.strip():
        raise ToolError("empty search query", kind="bad_query", target=repr(query))
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return query.strip()[:1000]


def _json_or_error(resp: httpx.Response, name: str) -> Any:
    if resp.status_code >= 400:
        hint = ""
        if name.startswith("searxng") and resp.status_code == 403:
            hint = " (enable the json format: search.formats in SearXNG's settings.yml)"
        raise ToolError(f"{name} returned HTTP {resp.status_code}{hint}", kind="http_status",
                        target=str(resp.url))
    try:
        return resp.json()
    except ValueError:
        raise ToolError(f"{name} returned a body that is not JSON", kind="bad_response",
                        target=str(resp.url)) from None


class _HttpSearch:
    """Shared sync/async plumbing: subclasses build the request and parse the JSON."""

    name = "http"
    timeout = httpx.Timeout(10.0, connect=5.0)

    def _request(self, query: str, k: int) -> dict[str, Any]:
        raise NotImplementedError

    def _parse(self, data: Any, k: int) -> list[SearchHit]:
        raise NotImplementedError

    def search(self, query: str, k: int = 5) -> list[SearchHit]:
        """Return at most k hits for the query, best first."""
        req = self._request(_check_query(query, k), k)
        try:
            with httpx.Client(timeout=self.timeout, headers={"User-Agent": USER_AGENT}) as c:
                resp = c.request(**req)
        except httpx.HTTPError as e:
            raise ToolError(f"{self.name} unreachable: {e}", kind="network",
                            target=req["url"]) from None
        return self._parse(_json_or_error(resp, self.name), k)

    async def asearch(self, query: str, k: int = 5) -> list[SearchHit]:
        """Async `search`."""
        req = self._request(_check_query(query, k), k)
        try:
            async with httpx.AsyncClient(timeout=self.timeout,
                                         headers={"User-Agent": USER_AGENT}) as c:
                resp = await c.request(**req)
        except httpx.HTTPError as e:
            raise ToolError(f"{self.name} unreachable: {e}", kind="network",
                            target=req["url"]) from None
        return self._parse(_json_or_error(resp, self.name), k)


def _hits(rows: Iterable[dict[str, Any]], k: int, source: str, snippet_key: str) -> list[SearchHit]:
    hits: list[SearchHit] = []
    for row in rows:
        if not isinstance(row, dict) or not row.get("url"):
            continue
        score = row.get("score")
        hits.append(SearchHit(title=str(row.get("title") or ""), url=str(row["url"]),
                              snippet=str(row.get(snippet_key) or ""),
                              score=float(score) if isinstance(score, int | float) else None,
                              rank=len(hits) + 1, source=source, doc_id=row.get("doc_id")))
        if len(hits) == k:
            break
    return hits


class SearxngSearch(_HttpSearch):
    """A SearXNG instance's JSON API (`/search?q=...&format=json`), or the local corpus server."""

    def __init__(self, base_url: str, *, timeout: float = 10.0, extra_params: dict | None = None):
        self.base_url = base_url.rstrip("/")
        self.name = f"searxng:{self.base_url}"
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0))
        self.extra_params = dict(extra_params or {})

    def _request(self, query: str, k: int) -> dict[str, Any]:
        params = {"q": query, "format": "json", **self.extra_params}
        return {"method": "GET", "url": f"{self.base_url}/search", "params": params}

    def _parse(self, data: Any, k: int) -> list[SearchHit]:
        rows = data.get("results", []) if isinstance(data, dict) else []
        return _hits(rows, k, "searxng", "content")


class BraveSearch(_HttpSearch):
    """Brave Search API; the key comes from the argument or `BRAVE_API_KEY`."""

    name = "brave"

    def __init__(self, api_key: str | None = None, *,
                 base_url: str = "https://api.search.brave.com", timeout: float = 10.0):
        self.api_key = api_key or os.environ.get("BRAVE_API_KEY")
        if not self.api_key:
            raise ValueError("BraveSearch needs an API key: pass api_key= or set BRAVE_API_KEY")
        self.base_url = base_url.rstrip("/")
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0))

    def _request(self, query: str, k: int) -> dict[str, Any]:
        return {"method": "GET", "url": f"{self.base_url}/res/v1/web/search",
                "params": {"q": query, "count": min(k, 20)},
                "headers": {"Accept": "application/json", "X-Subscription-Token": self.api_key}}

    def _parse(self, data: Any, k: int) -> list[SearchHit]:
        rows = (data.get("web") or {}).get("results", []) if isinstance(data, dict) else []
        return _hits(rows, k, "brave", "description")


class TavilySearch(_HttpSearch):
    """Tavily search API; the key comes from the argument or `TAVILY_API_KEY`."""

    name = "tavily"

    def __init__(self, api_key: str | None = None, *, base_url: str = "https://api.tavily.com",
                 timeout: float = 20.0, search_depth: str = "basic"):
        self.api_key = api_key or os.environ.get("TAVILY_API_KEY")
        if not self.api_key:
            raise ValueError("TavilySearch needs an API key: pass api_key= or set TAVILY_API_KEY")
        self.base_url = base_url.rstrip("/")
        self.timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0))
        self.search_depth = search_depth

    def _request(self, query: str, k: int) -> dict[str, Any]:
        return {"method": "POST", "url": f"{self.base_url}/search",
                "json": {"query": query, "max_results": min(k, 20),
                         "search_depth": self.search_depth},
                "headers": {"Authorization": f"Bearer {self.api_key}"}}

    def _parse(self, data: Any, k: int) -> list[SearchHit]:
        rows = data.get("results", []) if isinstance(data, dict) else []
        return _hits(rows, k, "tavily", "content")


# --------------------------------------------------------------------------- SSRF guard


def allowed_hosts(extra: Iterable[str] | None = None) -> frozenset[str]:
    """The SSRF allow-list: the given hosts plus those in `SLEUTH_ALLOW_HOSTS` (comma-separated)."""
    env = os.environ.get(ALLOW_HOSTS_ENV, "")
    hosts = {h.strip().lower() for h in env.split(",") if h.strip()}
    hosts |= {h.strip().lower() for h in (extra or ()) if h.strip()}
    return frozenset(hosts)


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified)


def check_url(url: str, allow: frozenset[str] = frozenset()) -> None:
    """Raise `URLRefused` unless the URL is http(s) and its host is public or allow-listed.

    The host is resolved here and every address it resolves to must be public. (A DNS answer
    that changes between this check and the connection is not caught; use an egress proxy
    where that matters.)
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise URLRefused(f"refused {url!r}: only http and https URLs are fetched", target=url)
    host = (parts.hostname or "").lower()
    if not host:
        raise URLRefused(f"refused {url!r}: no host", target=url)
    if host in allow:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise URLRefused(f"refused {url!r}: invalid port", target=url) from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ToolError(f"cannot resolve host {host!r}: {e}", kind="dns", target=url) from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if not _is_public(ip):
            raise URLRefused(f"refused {url!r}: host {host} resolves to non-public address {ip} "
                             f"(allow it with --allow-host {host} or {ALLOW_HOSTS_ENV})",
                             target=url)


# --------------------------------------------------------------------------- fetching


def _content_type(headers: httpx.Headers, body: bytes) -> str:
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype:
        return ctype
    head = body[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<body" in head:
        return "text/html"
    try:
        body[:4096].decode("utf-8")
        return "text/plain"
    except UnicodeDecodeError:
        return "application/octet-stream"


def _charset(headers: httpx.Headers) -> str:
    for part in headers.get("content-type", "").split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return "utf-8"


def _read_capped(resp: httpx.Response, max_bytes: int, deadline: float, url: str) -> tuple[bytes, bool]:
    buf = bytearray()
    for chunk in resp.iter_bytes():
        buf += chunk
        if len(buf) > max_bytes:
            return bytes(buf[:max_bytes]), True
        if time.monotonic() > deadline:
            raise ToolError(f"fetching {url} took longer than the total timeout", kind="timeout",
                            target=url)
    return bytes(buf), False


def _to_page(url: str, requested: str, resp: httpx.Response, body: bytes, truncated: bool) -> Page:
    ctype = _content_type(resp.headers, body)
    common = {"url": url, "requested_url": requested, "status": resp.status_code,
              "content_type": ctype, "truncated": truncated, "n_bytes": len(body)}
    if ctype in HTML_TYPES:
        extracted = extract_html(body, url=url)
        if extracted is None:
            raise ToolError(f"no readable text in {url}", kind="empty", target=url)
        return Page(title=extracted.title, text=extracted.text, metadata=extracted.metadata,
                    **common)
    if ctype.startswith("text/"):
        text = body.decode(_charset(resp.headers), errors="replace")
        if not text.strip():
            raise ToolError(f"{url} is empty", kind="empty", target=url)
        return Page(title="", text=text.strip(), **common)
    raise ToolError(f"{url} is {ctype}, not a web page (only HTML and plain text are read)",
                    kind="content_type", target=url)


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def fetch_page(url: str, *, allow_hosts: Iterable[str] | None = None,
               max_bytes: int = DEFAULT_MAX_BYTES, timeout: float = 10.0,
               total_timeout: float = 30.0, max_redirects: int = 5, retries: int = 2,
               backoff: float = 0.5, client: httpx.Client | None = None) -> Page:
    """Fetch a URL and return its main text as a `Page`; any failure is a `ToolError`.

    Redirects are followed by hand (at most `max_redirects`) so the SSRF guard sees every hop.
    Bodies beyond `max_bytes` are cut (`Page.truncated`). 5xx, 429 and timeouts are retried
    `retries` times with exponential backoff. The retry loop is ours because httpx only
    retries connection failures.
    """
    if not isinstance(url, str) or not url.strip():
        raise ToolError("empty URL", kind="bad_url", target=repr(url))
    allow = allowed_hosts(allow_hosts)
    own = client is None
    client = client or httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
                                    headers={"User-Agent": USER_AGENT}, follow_redirects=False)
    deadline = time.monotonic() + total_timeout
    try:
        for attempt in range(retries + 1):
            try:
                return _fetch_once(client, url.strip(), allow, max_bytes, max_redirects, deadline)
            except _Retry as r:
                if attempt == retries or time.monotonic() + backoff * 2**attempt > deadline:
                    raise r.error from None
                time.sleep(backoff * 2**attempt)
        raise AssertionError("unreachable")
    finally:
        if own:
            client.close()


class _Retry(Exception):
    def __init__(self, error: ToolError):
        self.error = error


def _fetch_once(client: httpx.Client, url: str, allow: frozenset[str], max_bytes: int,
                max_redirects: int, deadline: float) -> Page:
    current = url
    for _ in range(max_redirects + 1):
        check_url(current, allow)
        try:
            with client.stream("GET", current) as resp:
                if resp.is_redirect:
                    location = resp.headers.get("location", "")
                    if not location:
                        raise ToolError(f"redirect without Location from {current}",
                                        kind="http_status", target=current)
                    current = urljoin(current, location)
                    continue
                if resp.status_code >= 400:
                    err = ToolError(f"HTTP {resp.status_code} from {current}", kind="http_status",
                                    target=current)
                    raise _Retry(err) if _retryable(resp.status_code) else err
                body, truncated = _read_capped(resp, max_bytes, deadline, current)
                return _to_page(current, url, resp, body, truncated)
        except httpx.TimeoutException:
            raise _Retry(ToolError(f"timed out fetching {current}", kind="timeout",
                                   target=current)) from None
        except httpx.HTTPError as e:
            raise _Retry(ToolError(f"network error fetching {current}: {e}", kind="network",
                                   target=current)) from None
    raise ToolError(f"more than {max_redirects} redirects from {url}", kind="redirects", target=url)


async def afetch_page(url: str, **kwargs: Any) -> Page:
    """Async `fetch_page`: the same fetch in a worker thread (page reads are few and short)."""
    return await asyncio.to_thread(fetch_page, url, **kwargs)
