"""The web as a tool: search backends and page fetching over httpx.

`SearchBackend` is the protocol every search engine implements (`search`, `asearch`);
`SearxngSearch`, `BraveSearch` and `TavilySearch` are its httpx implementations (the local
corpus server speaks SearXNG's JSON, so it is searched through `SearxngSearch`).

`fetch_page(url)` downloads a page behind an SSRF guard (http/https only; hosts that
resolve to anything but globally routable addresses are refused on every redirect hop
unless allow-listed as `host:port`), caps the bytes read, retries 5xx and timeouts with
backoff, and extracts the main text with trafilatura. Every failure is a `ToolError`.

Search requests and page fetches share one set of limits (`_Limits`): a per-read timeout, an
overall deadline and a byte cap, enforced while the body streams in, so a server that
trickles or never stops sending ends in a `ToolError` instead of a hang.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urljoin

import httpx

from tools.errors import ToolError, URLRefused
from tools.extract import extract_html, extract_pdf, is_pdf
from tools.types import Page, SearchHit

USER_AGENT = "sleuth/0.1 (research agent; +https://github.com/sleuth-ai/sleuth)"
DEFAULT_MAX_BYTES = 2_000_000
DEFAULT_TOTAL_TIMEOUT = 30.0
HTML_TYPES = {"text/html", "application/xhtml+xml"}
PDF_TYPES = {"application/pdf", "application/x-pdf"}
# servers that do not know a file's type send these; a PDF among them is read as one
UNTYPED = {"application/octet-stream", "binary/octet-stream", "application/download"}
ALLOW_HOSTS_ENV = "SLEUTH_ALLOW_HOSTS"
DEFAULT_PORTS = {"http": 80, "https": 443}

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


# --------------------------------------------------------------------------- limits


class _Limits:
    """One request's limits: per-read timeout, overall deadline and byte cap. Search and fetch
    both read bodies through `_read_capped`/`_aread_capped`, so this is the one place that
    decides when a response is too slow or too big.

    httpx has no overall deadline (its timeouts are per operation, so a server sending a byte
    every few seconds never trips them): each request's timeouts are clipped to the time left
    and the deadline is checked after every chunk. A sync read therefore ends at most one
    (clipped) read timeout past the deadline; the async path adds a hard `asyncio.timeout`.
    """

    def __init__(self, timeout: float, total_timeout: float, max_bytes: int):
        if timeout <= 0 or total_timeout <= 0 or max_bytes < 1:
            raise ValueError("timeout, total_timeout and max_bytes must be positive")
        self.timeout = timeout
        self.total_timeout = total_timeout
        self.max_bytes = max_bytes
        self.deadline = time.monotonic() + total_timeout

    def left(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())

    def expired(self, url: str) -> ToolError:
        """The error for a request that ran past the deadline."""
        return ToolError(f"{url} took longer than the total timeout ({self.total_timeout:g} s)",
                         kind="timeout", target=url)

    def httpx_timeout(self, url: str) -> httpx.Timeout:
        """The per-operation timeouts for the next request, clipped to the time left."""
        left = self.left()
        if left <= 0:
            raise self.expired(url)
        read = min(self.timeout, left)
        return httpx.Timeout(read, connect=min(read, 5.0))

    def take(self, buf: bytearray, chunk: bytes, url: str) -> bool:
        """Append a chunk (cut at the cap); True once the cap is reached. Raises past the
        deadline."""
        buf += chunk[: self.max_bytes + 1 - len(buf)]
        if len(buf) > self.max_bytes:
            del buf[self.max_bytes:]
            return True
        if time.monotonic() > self.deadline:
            raise self.expired(url)
        return False


def _read_capped(resp: httpx.Response, limits: _Limits, url: str) -> tuple[bytes, bool]:
    """Read a streamed body within the limits: (body, truncated)."""
    buf = bytearray()
    # iter_bytes decodes gzip/deflate/br: the cap counts decoded bytes, so a compression bomb
    # is cut after at most one network read's worth of expansion (64 KiB in, ~66 MB out)
    for chunk in resp.iter_bytes():
        if limits.take(buf, chunk, url):
            return bytes(buf), True
    return bytes(buf), False


async def _aread_capped(resp: httpx.Response, limits: _Limits, url: str) -> tuple[bytes, bool]:
    """Async `_read_capped`."""
    buf = bytearray()
    async for chunk in resp.aiter_bytes():
        if limits.take(buf, chunk, url):
            return bytes(buf), True
    return bytes(buf), False


# --------------------------------------------------------------------------- search backends


def _check_query(query: str, k: int) -> str:
    if not isinstance(query, str) or not query.strip():
        raise ToolError("empty search query", kind="bad_query", target=repr(query))
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return query.strip()[:1000]


def _json_or_error(status: int, body: bytes, truncated: bool, name: str, url: str,
                   max_bytes: int) -> Any:
    if status >= 400:
        hint = ""
        if name.startswith("searxng") and status == 403:
            hint = " (enable the json format: search.formats in SearXNG's settings.yml)"
        raise ToolError(f"{name} returned HTTP {status}{hint}", kind="http_status", target=url)
    if truncated:
        raise ToolError(f"{name} answered more than {max_bytes} bytes", kind="too_large",
                        target=url)
    try:
        return json.loads(body)
    except ValueError:
        raise ToolError(f"{name} returned a body that is not JSON", kind="bad_response",
                        target=url) from None


class _HttpSearch:
    """Shared sync/async plumbing: subclasses build the request and parse the JSON.

    `timeout` is per read, `total_timeout` bounds the whole request (body included) and
    `max_bytes` the answer's size; beyond either the search is a `ToolError`.
    """

    name = "http"
    timeout: float = 10.0
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT
    max_bytes: int = DEFAULT_MAX_BYTES
    base_url: str = ""

    def _set_limits(self, timeout: float, total_timeout: float | None, max_bytes: int) -> None:
        self.timeout = timeout
        self.total_timeout = total_timeout if total_timeout is not None else max(
            timeout, DEFAULT_TOTAL_TIMEOUT)
        self.max_bytes = max_bytes
        _Limits(self.timeout, self.total_timeout, self.max_bytes)  # validate now, not per call

    def _request(self, query: str, k: int) -> dict[str, Any]:
        raise NotImplementedError

    def _parse(self, data: Any, k: int) -> list[SearchHit]:
        raise NotImplementedError

    def _limits(self) -> _Limits:
        return _Limits(self.timeout, self.total_timeout, self.max_bytes)

    def _failed(self, e: Exception, url: str) -> ToolError:
        if isinstance(e, ToolError):
            return e
        if isinstance(e, httpx.TimeoutException):
            return ToolError(f"{self.name} timed out", kind="timeout", target=url)
        return ToolError(f"{self.name} unreachable: {e}", kind="network", target=url)

    def search(self, query: str, k: int = 5) -> list[SearchHit]:
        """Return at most k hits for the query, best first."""
        req = self._request(_check_query(query, k), k)
        limits, url = self._limits(), req["url"]
        try:
            with httpx.Client(headers={"User-Agent": USER_AGENT}) as c:
                with c.stream(**req, timeout=limits.httpx_timeout(url)) as resp:
                    status = resp.status_code
                    body, cut = _read_capped(resp, limits, url) if status < 400 else (b"", False)
        except (httpx.HTTPError, ToolError) as e:
            raise self._failed(e, url) from None
        return self._parse(_json_or_error(status, body, cut, self.name, url, self.max_bytes), k)

    async def asearch(self, query: str, k: int = 5) -> list[SearchHit]:
        """Async `search`; the deadline is a hard one here."""
        req = self._request(_check_query(query, k), k)
        limits, url = self._limits(), req["url"]
        try:
            async with asyncio.timeout(limits.left()):
                async with httpx.AsyncClient(headers={"User-Agent": USER_AGENT}) as c:
                    async with c.stream(**req, timeout=limits.httpx_timeout(url)) as resp:
                        status = resp.status_code
                        body, cut = (await _aread_capped(resp, limits, url) if status < 400
                                     else (b"", False))
        except TimeoutError:
            raise limits.expired(url) from None
        except (httpx.HTTPError, ToolError) as e:
            raise self._failed(e, url) from None
        return self._parse(_json_or_error(status, body, cut, self.name, url, self.max_bytes), k)


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

    def __init__(self, base_url: str, *, timeout: float = 10.0, extra_params: dict | None = None,
                 total_timeout: float | None = None, max_bytes: int = DEFAULT_MAX_BYTES):
        self.base_url = base_url.rstrip("/")
        self.name = f"searxng:{self.base_url}"
        self._set_limits(timeout, total_timeout, max_bytes)
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
                 base_url: str = "https://api.search.brave.com", timeout: float = 10.0,
                 total_timeout: float | None = None, max_bytes: int = DEFAULT_MAX_BYTES):
        self.api_key = api_key or os.environ.get("BRAVE_API_KEY")
        if not self.api_key:
            raise ValueError("BraveSearch needs an API key: pass api_key= or set BRAVE_API_KEY")
        self.base_url = base_url.rstrip("/")
        self._set_limits(timeout, total_timeout, max_bytes)

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
                 timeout: float = 20.0, search_depth: str = "basic",
                 total_timeout: float | None = None, max_bytes: int = DEFAULT_MAX_BYTES):
        self.api_key = api_key or os.environ.get("TAVILY_API_KEY")
        if not self.api_key:
            raise ValueError("TavilySearch needs an API key: pass api_key= or set TAVILY_API_KEY")
        self.base_url = base_url.rstrip("/")
        self._set_limits(timeout, total_timeout, max_bytes)
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


def _netloc(host: str, port: int | None = None) -> str:
    host = host.lower().strip("[]")
    if ":" in host:
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def allow_entry(entry: str) -> str:
    """One allow-list entry as `host:port` or a bare `host`; a URL gives its own `host:port`.

    A bare host allows its scheme's default port only (80 for http, 443 for https).
    """
    entry = entry.strip()
    if "://" in entry:
        url = httpx.URL(entry)
        return _netloc(url.host, url.port or DEFAULT_PORTS.get(url.scheme))
    if entry.count(":") > 1 and not entry.startswith("["):  # a bare IPv6 address
        return _netloc(entry)
    host, sep, port = entry.rpartition(":") if not entry.endswith("]") else ("", "", "")
    if sep and port.isdigit():
        return _netloc(host, int(port))
    if sep:
        raise ValueError(f"allow-list entry {entry!r} is not host, host:port or a URL")
    return _netloc(entry)


def allowed_hosts(extra: Iterable[str] | None = None) -> frozenset[str]:
    """The SSRF allow-list: the given entries plus `SLEUTH_ALLOW_HOSTS`'s, each via `allow_entry`."""
    env = os.environ.get(ALLOW_HOSTS_ENV, "")
    entries = [e for e in env.split(",") if e.strip()] + [e for e in (extra or ()) if e.strip()]
    return frozenset(allow_entry(e) for e in entries)


# Python's `is_global` tables lagged IANA's special-purpose registries until 3.11.10/3.12.4
# (CVE-2024-4032; e.g. 3.11.7 calls 192.0.0.192 and 224.0.0.1 global), so these blocks are
# refused whatever the interpreter's tables say.
_NOT_GLOBAL = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3",
    "::/96", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries: mapped, 6to4, Teredo client, NAT64, compatible."""
    out = [a for a in (ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None)
           if a is not None]
    if ip in _NAT64 or int(ip) >> 32 == 0:  # 64:ff9b::a.b.c.d and ::a.b.c.d carry it last
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return out


def is_global(ip: IP) -> bool:
    """Whether an address (and any IPv4 address embedded in it) is globally routable."""
    addrs: list[IP] = [ip, *(_embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else ())]
    return all(a.is_global and not (a.is_multicast or a.is_reserved or a.is_unspecified)
               and not any(a.version == n.version and a in n for n in _NOT_GLOBAL)
               for a in addrs)


def check_url(url: str, allow: Iterable[str] = frozenset()) -> None:
    """Raise `URLRefused` unless the URL is http(s) and its host is global or allow-listed.

    `allow` holds `host:port` entries (a bare host: its scheme's default port only). The URL
    is parsed by httpx, the client that will connect, so both read the same host. The host
    is resolved here and every address it resolves to must be global, IPv4 addresses inside
    IPv6 ones included. (A DNS answer that changes between this check and the connection is
    not caught; use an egress proxy where that matters.)
    """
    try:
        parts = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as e:
        raise URLRefused(f"refused {url!r}: not a valid URL ({e})", target=url) from None
    if parts.scheme not in DEFAULT_PORTS:
        raise URLRefused(f"refused {url!r}: only http and https URLs are fetched", target=url)
    if parts.userinfo:
        raise URLRefused(f"refused {url!r}: URLs with credentials are not fetched", target=url)
    host = parts.host.lower()
    if not host:
        raise URLRefused(f"refused {url!r}: no host", target=url)
    default = DEFAULT_PORTS[parts.scheme]
    port = parts.port or default
    entries = {allow_entry(a) for a in allow}
    if _netloc(host, port) in entries or (port == default and _netloc(host) in entries):
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ToolError(f"cannot resolve host {host!r}: {e}", kind="dns", target=url) from None
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not is_global(ip):
            inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else []
            carried = f" (carrying {', '.join(map(str, inner))})" if inner else ""
            raise URLRefused(f"refused {url!r}: host {host} resolves to non-global address {ip}"
                             f"{carried} "
                             f"(allow it with --allow-host {_netloc(host, port)} or "
                             f"{ALLOW_HOSTS_ENV})", target=url)


# --------------------------------------------------------------------------- fetching


def _content_type(headers: httpx.Headers, body: bytes) -> str:
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if (not ctype or ctype in UNTYPED) and is_pdf(body):
        return "application/pdf"
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
    if ctype in PDF_TYPES:
        return _pdf_page(url, body, truncated, common)
    if ctype.startswith("text/"):
        try:
            text = body.decode(_charset(resp.headers), errors="replace")
        except LookupError:  # an unknown charset name
            text = body.decode("utf-8", errors="replace")
        if not text.strip() or "\x00" in text[:4096]:
            raise ToolError(f"{url} has no readable text", kind="empty", target=url)
        return Page(title="", text=text.strip(), **common)
    raise ToolError(f"{url} is {ctype}, not a web page (only HTML, PDF and plain text are read)",
                    kind="content_type", target=url)


def _pdf_page(url: str, body: bytes, truncated: bool, common: dict[str, Any]) -> Page:
    """A PDF's text (its first `tools.extract.MAX_PDF_PAGES` pages); a PDF cut at the byte
    cap cannot be parsed (its index is at the end), so that is a `too_large` ToolError."""
    if truncated:
        raise ToolError(f"{url} is a PDF larger than the {len(body):,}-byte cap: raise max_bytes "
                        "(sleuth fetch --max-bytes)", kind="too_large", target=url)
    extracted = extract_pdf(body, name=url, max_bytes=len(body))  # the fetch's cap applied
    if extracted is None:
        raise ToolError(f"{url} is a PDF without a text layer (a scan?)", kind="empty", target=url)
    return Page(title=extracted.title, text=extracted.text, metadata=extracted.metadata,
                **{**common, "content_type": "application/pdf",
                   "truncated": bool(extracted.metadata.get("pages_truncated"))})


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def fetch_page(url: str, *, allow_hosts: Iterable[str] | None = None,
               max_bytes: int = DEFAULT_MAX_BYTES, timeout: float = 10.0,
               total_timeout: float = DEFAULT_TOTAL_TIMEOUT, max_redirects: int = 5,
               retries: int = 2, backoff: float = 0.5, client: httpx.Client | None = None) -> Page:
    """Fetch a URL and return its main text as a `Page`; any failure is a `ToolError`.

    Redirects are followed by hand (at most `max_redirects`) so the SSRF guard sees every hop.
    Bodies beyond `max_bytes` are cut (`Page.truncated`); `timeout` is per read and
    `total_timeout` bounds the whole fetch, retries included. 5xx, 429 and timeouts are
    retried `retries` times with exponential backoff. The retry loop is ours because httpx
    only retries connection failures.
    """
    if not isinstance(url, str) or not url.strip():
        raise ToolError("empty URL", kind="bad_url", target=repr(url))
    allow = allowed_hosts(allow_hosts)
    limits = _Limits(timeout, total_timeout, max_bytes)
    own = client is None
    client = client or httpx.Client(headers={"User-Agent": USER_AGENT}, follow_redirects=False)
    try:
        for attempt in range(retries + 1):
            try:
                return _fetch_once(client, url.strip(), allow, limits, max_redirects)
            except _Retry as r:
                if attempt == retries or backoff * 2**attempt >= limits.left():
                    raise r.error from None
                time.sleep(backoff * 2**attempt)
        raise AssertionError("unreachable")
    finally:
        if own:
            client.close()


class _Retry(Exception):
    def __init__(self, error: ToolError):
        self.error = error


def _fetch_once(client: httpx.Client, url: str, allow: frozenset[str], limits: _Limits,
                max_redirects: int) -> Page:
    current = url
    for _ in range(max_redirects + 1):
        check_url(current, allow)
        try:
            with client.stream("GET", current, timeout=limits.httpx_timeout(current)) as resp:
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
                body, truncated = _read_capped(resp, limits, current)
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
